"""The contract every search strategy passes, built-in or plugin (like Optuna's ``optuna.testing``).

Subclass a contract in a test module, name the registered strategy and give options small enough
for a quick run; pytest then runs every check on it::

    from spnas.testing import SamplingStrategyContract

    class TestMyStrategy(SamplingStrategyContract):
        strategy = "my-strategy"
        options = {"population": 4}

Every run is on the ``tiny`` space, the ``flops`` device and a part of the embedded ``digits`` data
(its first 512 training and 128 validation images: :func:`contract_setup`), so the whole contract
takes seconds. :class:`StrategyContract` checks any strategy end to end through
:meth:`~spnas.searching.strategy.Strategy.search`: a valid architecture with consistent metrics, the
latency target (``target`` option: the result lies in [0.95 T, T]), determinism under a seed, and
an interrupted run that resumes to the same result as an uninterrupted one.
:class:`SamplingStrategyContract` adds ask/tell checks on the :class:`~spnas.searching.sampling.Driver` with
a synthetic objective: the evaluation budget, the hard constraint on every evaluated candidate,
no candidate evaluated twice, and seeds that matter.

pytest is imported by the checks that use it, not by this module, so ``import spnas.testing``
works in any environment (a plugin's own runner, a notebook).
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any, ClassVar


from spnas.space.arch import Architecture
from spnas.data.datasets import load_data
from spnas.data.split import DataSplit
from spnas.core.errors import SpnasError
from spnas.space.graph import SpaceGraph
from spnas.core.registry import get_registry
from spnas.core.runs import RunDir
from spnas.latency.runtime import RuntimeModel
from spnas.searching.strategy import SearchContext, SearchResult, Strategy

SPACE = "tiny"


@functools.lru_cache(maxsize=None)
def tiny_setup() -> tuple[SpaceGraph, RuntimeModel, DataSplit]:
    """The contract's space, runtime model (flops) and data (digits at 16x16)."""
    from spnas.latency.device import resolve_table

    space = SpaceGraph.load(SPACE)
    data = load_data("digits", space.spec.resolution, space.spec.in_chs, seed=0, val_fraction=0.2)
    return space, RuntimeModel(space, resolve_table("flops", space)), data


#: the contract's part of the digits data: what the checks compare does not depend on the amount
#: of data, and a third of it makes every run of the contract 2 to 3 times as quick
CONTRACT_TRAIN_IMAGES, CONTRACT_VAL_IMAGES = 512, 128


@functools.lru_cache(maxsize=None)
def contract_setup() -> tuple[SpaceGraph, RuntimeModel, DataSplit]:
    """:func:`tiny_setup` with the first :data:`CONTRACT_TRAIN_IMAGES` training and
    :data:`CONTRACT_VAL_IMAGES` validation images of its data: the contract's runs."""
    from dataclasses import replace

    from torch.utils.data import Subset

    space, runtime, data = tiny_setup()
    part = replace(data, train=Subset(data.train, range(CONTRACT_TRAIN_IMAGES)),
                   val=Subset(data.val, range(CONTRACT_VAL_IMAGES)))
    return space, runtime, part


def mid_target(runtime: RuntimeModel) -> float:
    """A target inside the space's latency range (40 % of the way up)."""
    lo, hi = runtime.bounds()
    return lo + 0.4 * (hi - lo)


class InterruptingRun(RunDir):
    """A run directory whose ``log`` raises KeyboardInterrupt at record ``after + 1`` (a Ctrl-C)."""

    def __init__(self, path: Path, after: int, resume: bool = False):
        super().__init__(path, resume=resume)
        self.after, self.records = after, 0

    def log(self, record: dict) -> None:
        if self.records >= self.after:
            raise KeyboardInterrupt
        self.records += 1
        super().log(record)


def synthetic_objective(space: SpaceGraph, seed: int = 123) -> tuple[Architecture, Any]:
    """A secret architecture and an accuracy that is 1 there and falls with the distance to it
    (per layer, the index distance between choices): a known optimum, no training noise."""
    secret = space.random(random.Random(seed))

    def accuracy(arch: Architecture) -> float:
        d = sum(abs(l.ops.index(a) - l.ops.index(b)) / (len(l.ops) - 1)
                for l, a, b in zip(space.searchable, arch.ops, secret.ops))
        return 1.0 - d / space.num_searchable

    return secret, accuracy


class StrategyContract:
    """End-to-end checks for any strategy (set :attr:`strategy` and small :attr:`options`)."""

    strategy: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    #: log records after which the resume check interrupts the first run
    interrupt_after: ClassVar[int] = 4

    def make(self, **extra: Any) -> Strategy:
        cls = get_registry().get("strategy", self.strategy)
        return cls.from_options({**self.options, **extra})

    def search(self, path: Path, seed: int = 0, run: RunDir | None = None, resume: bool = False,
               **extra: Any) -> SearchResult:
        space, runtime, data = contract_setup()
        run = run if run is not None else RunDir(path, resume=resume)
        ctx = SearchContext(space, data, runtime, run, seed=seed, resume=resume, progress=False)
        try:
            return self.make(**extra).search(ctx)
        finally:
            run.close()

    def test_registered_with_typed_options(self):
        import pytest

        cls = get_registry().get("strategy", self.strategy)
        assert issubclass(cls, Strategy) and cls.name == self.strategy
        cls.from_options(dict(self.options))
        with pytest.raises(SpnasError, match="unknown option"):
            cls.from_options({"no_such_option": 1})

    def test_returns_a_valid_architecture(self, tmp_path):
        import pytest

        space, runtime, _ = contract_setup()
        result = self.search(tmp_path / "run")
        assert space.validate(result.arch) == result.arch
        assert result.latency == pytest.approx(runtime.predict(result.arch))
        assert (result.params, result.macs) == space.cost(result.arch)
        assert 0.0 <= result.accuracy <= 1.0 and result.strategy == self.strategy

    def test_meets_the_latency_target(self, tmp_path):
        _, runtime, _ = contract_setup()
        target = mid_target(runtime)
        result = self.search(tmp_path / "run", target=target)
        assert 0.95 * target - 1e-9 <= result.latency <= target + 1e-9

    def test_deterministic_under_a_seed(self, tmp_path):
        a = self.search(tmp_path / "a", seed=3)
        b = self.search(tmp_path / "b", seed=3)
        assert (str(a.arch), a.accuracy, a.latency) == (str(b.arch), b.accuracy, b.latency)
        assert [dict(h) for h in a.history] == [dict(h) for h in b.history]

    def test_resumes_after_an_interruption(self, tmp_path):
        import pytest

        straight = self.search(tmp_path / "straight", seed=1)
        with pytest.raises(KeyboardInterrupt):
            self.search(tmp_path / "cut", seed=1, run=InterruptingRun(tmp_path / "cut", self.interrupt_after))
        assert (tmp_path / "cut" / "checkpoint.pt").is_file(), "an interrupted run left no checkpoint"
        resumed = self.search(tmp_path / "cut", seed=1, resume=True)
        assert (str(resumed.arch), resumed.accuracy) == (str(straight.arch), straight.accuracy)
        assert [dict(h) for h in resumed.history] == [dict(h) for h in straight.history]


class SamplingStrategyContract(StrategyContract):
    """:class:`StrategyContract` plus ask/tell checks on the driver, with a synthetic objective."""

    #: options of the end-to-end runs: one supernet epoch, a few candidates, cheap BN recalibration
    fast: ClassVar[dict[str, Any]] = {"epochs": 1, "evaluations": 6, "bn_batches": 2}

    def make(self, **extra: Any) -> Strategy:
        cls = get_registry().get("strategy", self.strategy)
        return cls.from_options({**self.fast, **self.options, **extra})

    def drive(self, seed: int = 0, evaluations: int = 30, **extra: Any):
        from spnas.searching.sampling import Constraint, Driver

        space = SpaceGraph.load("spnas-cifar")  # large enough that seeds and duplicates matter
        from spnas.latency.device import resolve_table

        runtime = RuntimeModel(space, resolve_table("flops", space))
        _, objective = synthetic_objective(space)
        calls: list[str] = []

        def evaluate(arch: Architecture) -> float:
            calls.append(str(arch))
            return objective(arch)

        strategy = self.make(evaluations=evaluations, **extra)
        driver = Driver(strategy, space, runtime, evaluate, Constraint.from_options(strategy.options, runtime),
                        seed=seed)
        trials = driver.run()
        return driver, trials, calls

    def test_spends_exactly_the_evaluation_budget(self):
        driver, trials, calls = self.drive(evaluations=12)
        evaluated = [t for t in trials if t.status == "evaluated"]
        assert len(calls) == len(evaluated) == 12, driver.stop_reason
        assert len(set(calls)) == len(calls), "a candidate was evaluated twice"

    def test_every_evaluated_candidate_meets_the_constraint(self):
        space = SpaceGraph.load("spnas-cifar")
        from spnas.latency.device import resolve_table

        runtime = RuntimeModel(space, resolve_table("flops", space))
        lo, hi = runtime.bounds()
        window = (lo + 0.3 * (hi - lo), lo + 0.5 * (hi - lo))
        driver, trials, calls = self.drive(evaluations=15, latency_window=window)
        assert len(calls) == 15
        for t in trials:
            inside = window[0] - 1e-9 <= runtime.predict(t.arch) <= window[1] + 1e-9
            assert inside == (t.status != "infeasible"), t
        result = driver.result(trials)
        assert window[0] - 1e-9 <= result.latency <= window[1] + 1e-9
        front = [p["latency"] for p in result.pareto_front]
        assert front == sorted(front)

    def test_seed_decides_the_candidates(self):
        _, _, a = self.drive(seed=0, evaluations=8)
        _, _, b = self.drive(seed=0, evaluations=8)
        _, _, c = self.drive(seed=1, evaluations=8)
        assert a == b and a != c


class DeviceContract:
    """Checks for a device plugin (set :attr:`device`, and :attr:`options` if it needs any):
    its table covers a space, every cost is finite and >= 0, the header names the device and its
    units, and two tables of the same space agree on which entries exist."""

    device: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}
    space: ClassVar[str] = SPACE

    def table(self):
        cls = get_registry().get("device", self.device)
        return cls(**self.options).latency_table(SpaceGraph.load(self.space))

    def test_table_covers_the_space_with_valid_costs(self):
        import math

        space = SpaceGraph.load(self.space)
        table = self.table()
        table.check_covers(space)
        runtime = RuntimeModel(space, table)
        lo, hi = runtime.bounds()
        assert 0 <= lo <= hi and math.isfinite(hi)
        for row in table.entries.values():
            assert all(math.isfinite(v) and v >= 0 for v in row.values())

    def test_header_names_the_device(self):
        cls = get_registry().get("device", self.device)
        header = self.table().header
        assert header.device == self.device and header.units == cls.units

    def test_tables_are_stable(self):
        a, b = self.table(), self.table()
        assert {k: sorted(v) for k, v in a.entries.items()} == {k: sorted(v) for k, v in b.entries.items()}
