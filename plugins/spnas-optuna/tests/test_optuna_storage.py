"""Stored studies (``--storage``): a study refused when it belongs to another search, one study
shared by two runs through one SQLite file, and resuming a run whose study is stored.

Every test uses the ``fast_sqlite`` fixture (no fsync; see conftest.py) and reads the stored study
back through a handle of its own, as another process would.
"""

from __future__ import annotations

import pytest

optuna = pytest.importorskip("optuna", reason="spnas-optuna needs optuna (pip install 'optuna>=4,<5')")

from optuna_helpers import NSGA2_STUDY, TPE_STUDY, cifar, drive, make, sqlite_url, stored_trials  # noqa: E402

from spnas.core.errors import SpnasError  # noqa: E402
from spnas.core.runs import RunDir, load_checkpoint  # noqa: E402
from spnas.searching.sampling import EVALUATED  # noqa: E402
from spnas.testing import InterruptingRun  # noqa: E402
from spnas_optuna.study import REUSED, param_name  # noqa: E402

pytestmark = pytest.mark.usefixtures("fast_sqlite")


def test_a_stored_study_of_another_strategy_is_refused(tmp_path):
    url = sqlite_url(tmp_path / "study.db")
    drive(make("optuna-tpe", evaluations=2, storage=url, study_name="s"))
    with pytest.raises(SpnasError, match="is a optuna-tpe search of space spnas-cifar.*give another --study-name"):
        drive(make("optuna-nsga2", evaluations=2, storage=url, study_name="s"))


# --- (d) one study, two runs ----------------------------------------------------------------
def test_two_runs_share_one_stored_study(tmp_path):
    """The second run joins the first one's study: its sampler sees the first run's trials, and an
    architecture the first run evaluated is told its stored accuracy instead of going to the
    driver again. (To make that certain, another handle on the study enqueues the first run's best
    architecture, which Optuna hands to the next ask, as a sampler proposing it again would.)"""
    url, name = sqlite_url(tmp_path / "study.db"), "shared"
    first = make("optuna-tpe", evaluations=12, startup_trials=5, storage=url, study_name=name)
    _, trials1, calls1 = drive(first)
    assert len(stored_trials(url, name)) == len(trials1)

    best1 = max((t for t in trials1 if t.status == EVALUATED), key=lambda t: t.accuracy)
    optuna.load_study(study_name=name, storage=url).enqueue_trial(
        {param_name(i): str(op) for i, op in enumerate(best1.arch.ops)})

    second = make("optuna-tpe", evaluations=12, startup_trials=5, storage=url, study_name=name)
    _, trials2, calls2 = drive(second)
    assert second.joined == len(trials1) + 1  # the first run's trials and the enqueued one
    assert len(calls2) == 12 and not set(calls2) & set(calls1), "the second run evaluated an architecture again"
    assert second.reused >= 1
    stored = stored_trials(url, name)
    assert len(stored) == len(trials1) + len(trials2) + second.reused
    reused = [t for t in stored if t.user_attrs["status"] == REUSED]
    assert len(reused) == second.reused and reused[0].user_attrs["arch"] == best1.key
    assert reused[0].values[0] == best1.accuracy
    assert {t.key for t in trials1} | {t.key for t in trials2} == {t.user_attrs["arch"] for t in stored}
    # the joining run does not repeat the first run's random start-up
    assert trials2[0].key != trials1[0].key


def test_same_seed_in_memory_gives_the_same_asks_and_a_stored_study_continues(tmp_path):
    _, a, _ = drive(make("optuna-tpe", evaluations=8))
    _, b, _ = drive(make("optuna-tpe", evaluations=8))
    assert [t.key for t in a] == [t.key for t in b]
    url = sqlite_url(tmp_path / "study.db")
    _, c, _ = drive(make("optuna-tpe", evaluations=8, storage=url))  # fresh stored study: the same asks
    assert [t.key for t in c] == [t.key for t in a]
    again = make("optuna-tpe", evaluations=8, storage=url)  # same default study name: joins it
    _, d, _ = drive(again)
    assert again.study_name == TPE_STUDY and again.joined == len(c)
    assert [t.key for t in d] != [t.key for t in a]
    # its sampler seed is not the search seed: the random start-up does not propose the first run's
    # candidates again (they would be told their stored accuracy, "reused", instead of evaluated)
    assert again.reused == 0


# --- (e) resume with a stored study -------------------------------------------------------------
def test_resume_continues_the_stored_study(tmp_path):
    url, path = sqlite_url(tmp_path / "study.db"), tmp_path / "run"
    _, trials1, calls1 = drive(make("optuna-tpe", evaluations=6, startup_trials=4, storage=url),
                               run=RunDir(path))
    assert len(stored_trials(url, TPE_STUDY)) == len(trials1)

    resumed = make("optuna-tpe", evaluations=14, startup_trials=4, storage=url)
    _, trials2, calls2 = drive(resumed, run=RunDir(path, resume=True), resume=True)
    assert [t.to_record() for t in trials2[:len(trials1)]] == [t.to_record() for t in trials1]
    assert len(calls2) == 8 and not set(calls2) & set(calls1)
    assert resumed.joined == len(trials1)  # the replay asked nothing: the study was reloaded
    stored = stored_trials(url, TPE_STUDY)
    assert len(stored) == len(trials2) + resumed.reused
    assert [t.user_attrs["arch"] for t in stored[:len(trials1)]] == [t.key for t in trials1]


def test_resume_after_ctrl_c_with_a_stored_study(tmp_path):
    """Ctrl-C after the study was told a trial but before the checkpoint: the study holds one trial
    more than the checkpoint; it is not evaluated again after the resume."""
    url, path = sqlite_url(tmp_path / "study.db"), tmp_path / "run"
    calls1: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        drive(make("optuna-nsga2", evaluations=10, population=4, storage=url), run=InterruptingRun(path, 5),
              calls=calls1)
    told = len(stored_trials(url, NSGA2_STUDY))
    restored = len(load_checkpoint(path / "checkpoint.pt")["trials"])
    assert told > restored  # the trial whose log line was cut off is in the study, not in the checkpoint
    resumed = make("optuna-nsga2", evaluations=10, population=4, storage=url)
    _, trials2, calls2 = drive(resumed, run=RunDir(path, resume=True), resume=True)
    assert len([t for t in trials2 if t.status == EVALUATED]) == 10
    assert not set(calls1) & set(calls2), "an architecture evaluated before the Ctrl-C was evaluated again"
    assert len(stored_trials(url, NSGA2_STUDY)) == told + len(trials2) - restored + resumed.reused


def test_resume_refuses_a_study_without_the_recorded_trials(tmp_path):
    path, other = tmp_path / "run", sqlite_url(tmp_path / "b.db")
    drive(make("optuna-tpe", evaluations=4, storage=sqlite_url(tmp_path / "a.db"), study_name="s"), run=RunDir(path))
    drive(make("optuna-tpe", evaluations=3, storage=other, study_name="s"), seed=1)  # same name, other trials
    with pytest.raises(SpnasError, match=r"cannot resume: trial 1 of this run .* is missing from study 's'"):
        drive(make("optuna-tpe", evaluations=6, storage=other, study_name="s"), run=RunDir(path, resume=True),
              resume=True)


def test_resume_into_an_empty_storage_replays_the_run(tmp_path):
    """A run with its study in memory, resumed with a new storage: the recorded trials are asked and
    told again into it (same seed, same asks), then the search goes on."""
    path, url = tmp_path / "run", sqlite_url(tmp_path / "study.db")
    _, trials1, _ = drive(make("optuna-tpe", evaluations=5), run=RunDir(path))
    _, trials2, calls2 = drive(make("optuna-tpe", evaluations=8, storage=url), run=RunDir(path, resume=True),
                               resume=True)
    assert [t.key for t in trials2[:len(trials1)]] == [t.key for t in trials1] and len(calls2) == 3
    assert len(stored_trials(url, TPE_STUDY)) == len(trials2)


@pytest.mark.parametrize("stored", [False, True])
def test_resume_of_a_batched_run(tmp_path, stored):
    """Under torchrun the driver asks a batch of candidates before telling them; resuming such a
    run passes the recorded order of asks and tells to replay (in memory: an exact replay; with a
    storage: the study is reloaded), and the search goes on without evaluating anything twice."""
    from spnas.searching.sampling import Constraint, Driver

    space, runtime, objective = cifar()
    options = {"evaluations": 12, "startup_trials": 3}
    if stored:
        options.update(storage=sqlite_url(tmp_path / "study.db"), study_name="batched")
    calls: list[str] = []

    def many(archs):
        calls.extend(str(a) for a in archs)
        return [objective(a) for a in archs]

    def run(evaluations, resume):
        strategy = make("optuna-tpe", **{**options, "evaluations": evaluations})
        run_dir = RunDir(tmp_path / "run", resume=resume)
        driver = Driver(strategy, space, runtime, objective, Constraint(), run=run_dir, resume=resume, batch=3,
                        evaluate_many=many)
        try:
            return driver.run()
        finally:
            run_dir.close()

    first = run(6, resume=False)
    assert len(calls) == 6
    second = run(12, resume=True)
    assert [t.key for t in second[:len(first)]] == [t.key for t in first]
    evaluated = [t.key for t in second if t.status == "evaluated"]
    assert len(evaluated) == 12 == len(set(evaluated)) and calls == evaluated
