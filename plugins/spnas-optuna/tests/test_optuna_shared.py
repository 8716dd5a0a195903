"""Processes sharing one stored study at the same time (issue 7): the claim protocol of
``OptunaStrategy.ask`` (see :mod:`spnas_optuna.study`) keeps them from evaluating one architecture twice.

The protocol is driven step by step in one process, with two strategies on one SQLite file and a
space of one architecture, so that every ask proposes the same candidate; then two ``spnas
search`` processes run at the same time on one new study (which also exercises opening a new
SQLite file from two processes at once, tried again on a database error).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess

import pytest
import yaml

optuna = pytest.importorskip("optuna", reason="spnas-optuna needs optuna (pip install 'optuna>=4,<5')")

from optuna.trial import TrialState  # noqa: E402
from optuna_helpers import make, spnas_command, sqlite_url  # noqa: E402

from spnas.cli.main import main  # noqa: E402
from spnas.latency.device import resolve_table  # noqa: E402
from spnas.core.errors import SpnasError  # noqa: E402
from spnas.space.graph import SpaceGraph  # noqa: E402
from spnas.latency.runtime import RuntimeModel  # noqa: E402
from spnas.searching.sampling import EVALUATED, Constraint, Trial  # noqa: E402
from spnas_optuna.study import CLAIMED, OPEN_TRIES, REUSED, YIELDED, OptunaStrategy  # noqa: E402

SPACE = """\
name: {name}
description: {description}
input: {{resolution: 16, channels: 3}}
num_classes: 10
dropout: 0.0
stem: {{out_chs: 8, kernel: 3, stride: 1}}
blocks:
  - search: {{out_chs: 16, layers: 2, stride: 2, kernel: {kernel}, expansion: {expansion}, skip: {skip}}}
head: {{out_chs: 16}}
"""
ONE_ARCH = SPACE.format(name="one-arch", description="one architecture (k3e3 k3e3)", kernel=[3], expansion=[3],
                        skip="false")
#: 2 x 2 ops in the first layer, 5 in the second (with skip): 20 architectures
SMALL = SPACE.format(name="small", description="20 architectures", kernel=[3, 5], expansion=[3, 6], skip="true")


@pytest.fixture
def one_arch(tmp_path):
    path = tmp_path / "one.yaml"
    path.write_text(ONE_ARCH)
    space = SpaceGraph.load(path)
    assert space.size == 1
    return space, RuntimeModel(space, resolve_table("flops", space))


def worker(one_arch, url: str, name: str = "optuna-tpe", max_stall: int = 3, **options) -> OptunaStrategy:
    """A strategy set up on the shared study ``shared`` of ``url``, as one process of a search."""
    space, runtime = one_arch
    strategy = make(name, storage=url, study_name="shared", max_stall=max_stall, **options)
    strategy.setup(space, runtime, Constraint(), seed=0)
    return strategy


def evaluated(strategy: OptunaStrategy, arch, accuracy: float = 0.5) -> None:
    """The driver's tell after evaluating ``arch``."""
    strategy.tell(Trial(1, arch, strategy.runtime.predict(arch), accuracy, EVALUATED))


def trials_of(url: str) -> list[tuple[TrialState, str | None]]:
    """(state, status) of every trial of the shared study, read through a handle of its own."""
    study = optuna.load_study(study_name="shared", storage=url)
    return [(t.state, t.user_attrs.get("status")) for t in study.get_trials(deepcopy=False)]


# --- the protocol, step by step in one process -------------------------------------------------
@pytest.mark.parametrize("name, options", [("optuna-tpe", {}), ("optuna-nsga2", {"population": 2})])
def test_a_claimed_architecture_is_not_evaluated_by_another_process(one_arch, tmp_path, fast_sqlite, name, options):
    url = sqlite_url(tmp_path / "study.db")
    a, b = worker(one_arch, url, name, **options), worker(one_arch, url, name, **options)
    x = a.ask()
    assert x is not None and trials_of(url) == [(TrialState.RUNNING, CLAIMED)]
    # B is proposed X too (the only architecture): A's claim is live, so B yields, max_stall times
    assert b.ask() is None
    assert (b.yielded, b.reused, b.pending) == (3, 0, {})
    assert trials_of(url)[1:] == [(TrialState.FAIL, YIELDED)] * 3
    evaluated(a, x, 0.5)
    # once A told X, B takes the stored accuracy instead of evaluating X
    assert b.ask() is None
    assert (b.yielded, b.reused) == (3, 3)
    study = optuna.load_study(study_name="shared", storage=url)
    reused = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))[1:]
    assert [(t.user_attrs["status"], t.user_attrs["arch"], t.values[0]) for t in reused] == [(REUSED, str(x), 0.5)] * 3
    assert (b.summary()["study_yielded"], b.summary()["study_reused"], a.summary()["study_yielded"]) == (3, 3, 0)
    # A's own architecture goes back to A's driver (which calls it a duplicate), without a claim
    assert a.ask() == x and not a.yielded


def test_a_process_does_not_yield_to_its_own_pending_asks(one_arch, tmp_path, fast_sqlite):
    """A driver may ask several candidates before it tells them; an architecture asked twice is the
    driver's to deduplicate, and each ask is told on its own Optuna trial."""
    url = sqlite_url(tmp_path / "study.db")
    a = worker(one_arch, url)
    x = a.ask()
    assert a.ask() == x and len(a.pending[str(x)]) == 2 and a.yielded == 0
    evaluated(a, x)
    evaluated(a, x)
    assert a.pending == {} and trials_of(url) == [(TrialState.COMPLETE, EVALUATED)] * 2


def test_the_study_in_memory_carries_no_claims(one_arch):
    space, runtime = one_arch
    strategy = make("optuna-tpe", max_stall=3)
    strategy.setup(space, runtime, Constraint(), seed=0)
    x = strategy.ask()
    assert strategy.ask() == x  # nothing to yield to
    assert [t.user_attrs for t in strategy.study.get_trials(deepcopy=False)] == [{}, {}]


def test_a_claim_written_after_the_other_process_read_makes_it_yield(one_arch, tmp_path, fast_sqlite):
    """A claims X; B claims X and reads (A's claim is there: B yields); then A reads (B has yielded:
    A goes on)."""
    url = sqlite_url(tmp_path / "study.db")
    a, b = worker(one_arch, url, max_stall=1), worker(one_arch, url, max_stall=1)
    asks = {}

    def a_reads_late(key, number):
        asks["b"] = b.ask()
        return OptunaStrategy._look_up(a, key, number)

    a._look_up = a_reads_late
    x = a.ask()
    assert x is not None and asks["b"] is None
    assert (a.yielded, b.yielded) == (0, 1)
    assert trials_of(url) == [(TrialState.RUNNING, CLAIMED), (TrialState.FAIL, YIELDED)]


def test_when_both_claim_before_either_reads_neither_evaluates(one_arch, tmp_path, fast_sqlite):
    """A claims X, B claims X, A reads, B reads: each sees the other's claim and both yield (the
    protocol never lets both go on; it may let neither). X is free to be asked again after."""
    url = sqlite_url(tmp_path / "study.db")
    a, b = worker(one_arch, url, max_stall=1), worker(one_arch, url, max_stall=1)
    asks, reads = {}, {}

    def a_reads_late(key, number):
        def a_reads_then_b(key_b, number_b):  # both claims are written now
            reads["a"] = OptunaStrategy._look_up(a, key, number)
            reads["b"] = OptunaStrategy._look_up(b, key_b, number_b)
            return reads["b"]

        b._look_up = a_reads_then_b
        asks["b"] = b.ask()
        return reads["a"]

    a._look_up = a_reads_late
    assert a.ask() is None and asks["b"] is None
    assert reads == {"a": (None, True), "b": (None, True)}
    assert (a.yielded, b.yielded) == (1, 1)
    assert trials_of(url) == [(TrialState.FAIL, YIELDED)] * 2
    del a._look_up
    x = a.ask()  # no live claim left: X can be asked again
    assert x is not None and b.ask() is None and b.yielded == 2


def test_opening_a_storage_is_tried_again_after_a_database_error(monkeypatch):
    """Processes that open one new SQLite file at the same moment race to create its tables (with
    Optuna 4.9: "table studies already exists", or a UNIQUE constraint on alembic_version); the
    loser tries again, and then finds them. Other errors are reported at once."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    monkeypatch.setattr("spnas_optuna.study.time.sleep", lambda seconds: None)
    strategy = make("optuna-tpe", storage="sqlite:///study.db")
    raised = [OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists")),
              IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed"))]

    def racing():
        if raised:
            raise raised.pop(0)
        return "storage"

    assert strategy._open(racing, "s") == "storage" and not raised
    tries = []

    def broken(error):
        tries.append(error)
        raise error

    with pytest.raises(SpnasError, match="cannot open study 's' in storage sqlite:///study.db: OperationalError"):
        strategy._open(lambda: broken(OperationalError("connect", {}, Exception("unable to open database"))), "s")
    assert len(tries) == OPEN_TRIES
    with pytest.raises(SpnasError, match="ValueError: bad URL"):
        strategy._open(lambda: broken(ValueError("bad URL")), "s")
    assert len(tries) == OPEN_TRIES + 1


# --- two processes at the same time --------------------------------------------------------------
EVALUATIONS = 9  # per process: 18 of the 20 architectures


@pytest.mark.slow
def test_two_processes_at_the_same_time_never_evaluate_an_architecture_twice(tmp_path):
    """Two ``spnas search --strategy optuna-tpe`` processes started together on one new SQLite study.

    Without the claims (``_look_up`` made to report no claim, stored accuracies still reused) this
    test failed in 11 of 12 runs on 2 cores, with one to three architectures evaluated by both
    processes (with 8 evaluations per process: 7 of 12). With the claims it passed 8 of 8 runs."""
    space = tmp_path / "small.yaml"
    space.write_text(SMALL)
    base = ["--space", str(space), "--device", "flops", "--quiet"]
    assert main(["search", "--strategy", "random", *base, "--epochs", "1", "--evaluations", "1",
                 "--out", str(tmp_path / "first")]) == 0
    url = sqlite_url(tmp_path / "study.db")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SPNAS_DISABLE_PLUGIN_AUTOLOAD": "1",
           "SPNAS_TENSORBOARD": "0"}
    procs = [subprocess.Popen(spnas_command(
        "search", "--strategy", "optuna-tpe", *base, "--storage", url, "--study-name", "shared",
        "--supernet", str(tmp_path / "first" / "supernet.pt"), "--evaluations", str(EVALUATIONS),
        "--bn-batches", "4", "--seed", str(i), "--out", str(tmp_path / f"w{i}")),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
        errors = [p.communicate(timeout=300)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0], errors

    runs = []
    for i in range(2):
        log = [json.loads(line) for line in (tmp_path / f"w{i}" / "log.jsonl").read_text().splitlines()]
        runs.append([r["arch"] for r in log if r["status"] == EVALUATED])
    assert all(runs), f"a process evaluated nothing: {runs}"
    twice = [arch for arch, n in collections.Counter(runs[0] + runs[1]).items() if n > 1]
    assert not twice, f"evaluated by both processes: {twice}"

    trials = optuna.load_study(study_name="shared", storage=url).get_trials(deepcopy=False)
    told = [t.user_attrs["arch"] for t in trials if t.user_attrs.get("status") == EVALUATED]
    assert sorted(told) == sorted(runs[0] + runs[1])
    assert all(t.state == TrialState.COMPLETE for t in trials if t.user_attrs.get("status") != YIELDED)
    yielded = [t for t in trials if t.user_attrs.get("status") == YIELDED]
    assert all(t.state == TrialState.FAIL for t in yielded)
    results = [yaml.safe_load((tmp_path / f"w{i}" / "result.yaml").read_text()) for i in range(2)]
    assert sum(r["study_yielded"] for r in results) == len(yielded)
