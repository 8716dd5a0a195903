"""Shared by the test modules: the sampling driver on spnas's synthetic objective, and stored studies.

The driver runs on the ``spnas-cifar`` space with the ``flops`` device and the synthetic objective
of :func:`spnas.testing.synthetic_objective` (a secret architecture scores 1.0; the accuracy falls
with the per-layer distance to it): no supernet, so a run takes a fraction of a second.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import optuna

from spnas.space.graph import SpaceGraph
from spnas.core.registry import get_registry
from spnas.core.runs import RunDir
from spnas.latency.runtime import RuntimeModel
from spnas.searching.sampling import EVALUATED, Constraint, Driver
from spnas.testing import synthetic_objective

TPE_STUDY = "spnas-optuna-tpe-spnas-cifar-seed0"  # the default study names at seed 0
NSGA2_STUDY = "spnas-optuna-nsga2-spnas-cifar-seed0"


@functools.lru_cache(maxsize=None)
def cifar():
    """(space, runtime model, synthetic objective) of ``spnas-cifar`` on the ``flops`` device."""
    from spnas.latency.device import resolve_table

    space = SpaceGraph.load("spnas-cifar")
    _, objective = synthetic_objective(space)
    return space, RuntimeModel(space, resolve_table("flops", space)), objective


def make(name: str, **options):
    """A registered strategy built from options, as the CLI builds it."""
    return get_registry().get("strategy", name).from_options(options)


def drive(strategy, seed: int = 0, run: RunDir | None = None, resume: bool = False,
          calls: list[str] | None = None):
    """Run ``strategy`` on the synthetic objective: (driver, trials, architectures evaluated).

    ``calls``, when given, receives the evaluated architectures even if the run raises."""
    space, runtime, objective = cifar()
    calls = [] if calls is None else calls

    def evaluate(arch):
        calls.append(str(arch))
        return objective(arch)

    driver = Driver(strategy, space, runtime, evaluate, Constraint.from_options(strategy.options, runtime),
                    seed=seed, run=run, resume=resume)
    try:
        trials = driver.run()
    finally:
        if run is not None:
            run.close()
    return driver, trials, calls


def best_accuracy(trials) -> float:
    return max(t.accuracy for t in trials if t.status == EVALUATED)


def spnas_command(*args: str) -> list[str]:
    """``python -c ...`` running ``spnas *args`` in a new process with this plugin registered by hand, as
    conftest.py registers it (the plugin need not be installed, and entry-point autoloading is off)."""
    import spnas_optuna

    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import spnas_optuna, spnas_optuna.plugin; "
            "from spnas.core.registry import register_plugin; from spnas.cli.main import main; "
            "register_plugin(spnas_optuna.plugin, name='optuna', distribution='spnas-optuna', "
            "version=spnas_optuna.__version__); sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", code, str(Path(spnas_optuna.__file__).resolve().parents[1]), *args]


def sqlite_url(path) -> str:
    return f"sqlite:///{path}"


def stored_trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    """The complete trials of a stored study, read through a handle of its own (as another process would)."""
    study = optuna.load_study(study_name=name, storage=url)
    return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
