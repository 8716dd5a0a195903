"""One Optuna study behind spnas's ask/tell driver: the half that ``optuna-tpe`` and ``optuna-nsga2`` share.

:class:`OptunaStrategy` turns each :meth:`~OptunaStrategy.ask` into an Optuna trial (one
``suggest_categorical`` per searchable layer, over the layer's op strings, named ``layer_00``,
``layer_01``, ...) and each :meth:`~OptunaStrategy.tell` into ``study.tell``. The driver keeps
owning the budget, the latency constraint and deduplication; the study is told everything the
driver reports, so that the sampler learns from all of it:

* ``evaluated``: the supernet accuracy (and, for a multi-objective sampler, the latency);
* ``duplicate``: the accuracy of the earlier evaluation (no evaluation spent);
* ``infeasible`` (outside the latency constraint, not evaluated): accuracy 0.0 and a positive
  constraint violation, which the sampler's ``constraints_func`` reads, so that it learns where
  the feasible region lies.

Every Optuna trial carries the user attributes ``arch`` (the architecture string), ``latency``,
``violation`` (0 inside the constraint, else how far outside the latency window, in the
device's units) and ``status`` (the driver's, or ``reused``, below).

**Storage.** Without ``storage`` the study lives in memory: the sampler is seeded with the
search seed, so a seed gives the same asks, and ``--resume`` replays the recorded trials through
ask/tell (the base class's ``replay``), which rebuilds the study exactly. With ``storage`` (an
Optuna storage URL such as ``sqlite:///study.db``) the study is created, or joined, by name
(``study_name``; default ``spnas-<strategy>-<space>-seed<seed>``), so several processes, at
the same time or one after another, share one study:

* a study that already holds trials is continued, not restarted: the sampler's seed is derived
  from the search seed and the number of trials already there (a fresh study gets the search
  seed itself), so a joining or resumed process does not repeat the random start-up candidates
  of the first one;
* an architecture that the study evaluated already (in another process, or in an earlier run)
  is not handed to the driver, which would evaluate it again: the new Optuna trial is told the
  stored accuracy (``status`` ``reused``) and the sampler is asked again, at most ``max_stall``
  times in a row (then the search stops: nothing new to ask);
* an architecture that another process is evaluating right now is not handed to the driver
  either (the claim protocol, below);
* ``--resume`` does not ask again, since the study holds the recorded trials already: the
  overridden :meth:`~OptunaStrategy.replay` checks that the study holds every evaluated trial of
  the checkpoint, and the search goes on from the study as it stands. A resumed run thus
  continues the study; unlike with the study in memory, it does not repeat, candidate by
  candidate, what an uninterrupted run would have asked. (If the storage's study is empty, for
  example a new file, the recorded trials are replayed into it through ask/tell.)

**Claims.** Processes that share a study at the same time must not both evaluate an
architecture. With ``storage``, every feasible architecture that this run has neither told nor
has pending is claimed before the study is read: the new trial gets ``arch`` and ``status``
``claimed`` (:data:`CLAIMED`) at once; only then does the process read the study's trials. If a COMPLETE
trial holds the architecture, its accuracy is reused (above). Else, if another trial with the
architecture is still RUNNING and has not yielded, another process holds a claim on it: this
process yields (its trial gets ``status`` ``yielded``, :data:`YIELDED`, and is told FAIL, which
the samplers ignore) and the sampler is asked again (within the same ``max_stall`` bound).
Otherwise the architecture goes to the driver. Why two processes cannot both evaluate ``X``:
each writes its claim before it reads. Of the two claims one was written first; the other
process reads after its own, later write, so it sees the first claim (or, once that trial is
told, its result) and does not evaluate ``X``. Both can yield, when each reads after both
wrote; then neither evaluates ``X`` now, and either may be asked it again later. This needs one
storage that both processes see consistently (one SQLite file on a local disk, or one database
server). No claim is written for an architecture this run has told already or has pending (the
driver deduplicates within a run), so a process never yields to itself.

A trial whose evaluation was interrupted (Ctrl-C, a killed process) stays RUNNING in the storage;
Optuna's samplers ignore running trials (TPE with ``constant_liar`` counts them as bad ones), but
the trial keeps its claim: no process (the resumed run included) evaluates that architecture
until the trial is finished by hand, e.g. with
``optuna.load_study(study_name=..., storage=...).tell(NUMBER, state=TrialState.FAIL)``.
Optuna's heartbeat does not help here: with Optuna 4.9, ``RDBStorage(heartbeat_interval=...)``
records heartbeats only for trials run by ``Study.optimize``, and ``fail_stale_trials`` skips a
running trial that has none, as every trial asked through ``Study.ask`` is.
"""

from __future__ import annotations

import math
import re
import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from spnas.space.arch import Architecture
from spnas.core.errors import SpnasError
from spnas.searching.sampling import EVALUATED, INFEASIBLE, SamplingOptions, SamplingStrategy, Trial
from spnas.searching.strategy import check_options, option

#: ``status`` of an Optuna trial told the stored accuracy of an architecture the study evaluated before
REUSED = "reused"
#: ``status`` of a RUNNING trial whose architecture this process evaluates (the claim, written before reading)
CLAIMED = "claimed"
#: ``status`` of a trial given up because another process claimed its architecture (told FAIL)
YIELDED = "yielded"
ARCH, LATENCY, VIOLATION, STATUS = "arch", "latency", "violation", "status"
#: also on every told trial, for optuna-dashboard's tables and plots: the accuracy (also the first
#: objective), the latency's units, and the strategy that evaluated it
ACCURACY, UNITS, STRATEGY = "accuracy", "units", "strategy"
#: study user attributes that tie a stored study to one strategy and one space
STUDY_ATTRS = ("spnas_strategy", "spnas_space", "spnas_space_signature")
#: tries at opening a storage. Processes that open one new database at the same moment race to create its
#: tables: with Optuna 4.9 and SQLite one of three started together often fails ("table studies already
#: exists", or a UNIQUE constraint on alembic_version); a second try finds the tables made.
OPEN_TRIES = 5


def param_name(index: int) -> str:
    """The Optuna parameter of searchable layer ``index``: ``layer_00``, ``layer_01``, ..."""
    return f"layer_{index:02d}"


def constraint_violation(trial: FrozenTrial) -> list[float]:
    """The samplers' ``constraints_func``: the ``violation`` user attribute (<= 0 is feasible)."""
    return [float(trial.user_attrs.get(VIOLATION, 0.0))]


def quiet_optuna() -> None:
    """No INFO line per trial: Optuna's logging down to WARNING (left alone if set higher)."""
    if optuna.logging.get_verbosity() < optuna.logging.WARNING:
        optuna.logging.set_verbosity(optuna.logging.WARNING)


def describe_storage(url: str | None) -> str:
    """The storage URL for messages and result.yaml, with any password masked."""
    return "in memory" if url is None else re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


@dataclass
class OptunaOptions(SamplingOptions):
    """Options of every Optuna strategy (besides the sampling ones)."""

    storage: str | None = option(None, "Optuna storage URL, e.g. sqlite:///study.db: processes that give the same "
                                       "URL and study name share one study (default: in memory)", metavar="URL")
    study_name: str | None = option(None, "the study's name in the storage (default: "
                                          "spnas-<strategy>-<space>-seed<seed>)", metavar="NAME")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_options("optuna", [
            ("storage", self.storage is None or bool(self.storage.strip()), "a URL such as sqlite:///study.db"),
            ("study_name", self.study_name is None or bool(self.study_name.strip()), "a non-empty name"),
        ], self)


class OptunaStrategy(SamplingStrategy):
    """An ask/tell strategy backed by an Optuna study; subclasses choose the sampler and the objectives."""

    Options = OptunaOptions
    default_evaluations: ClassVar[int] = 100
    #: the study's directions, one per value of :meth:`objectives`
    directions: ClassVar[tuple[str, ...]] = ("maximize",)
    #: the objectives' names (the study's metric names, which optuna-dashboard shows)
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy",)

    def make_sampler(self, seed: int) -> optuna.samplers.BaseSampler:  # pragma: no cover - abstract
        """The sampler, seeded with ``seed``; give it ``constraints_func=constraint_violation``."""
        raise NotImplementedError

    def objectives(self, accuracy: float, latency: float) -> list[float]:
        """The values told to the study (default: the accuracy alone)."""
        return [accuracy]

    # --- the study -----------------------------------------------------------------------
    def check(self, space, runtime) -> None:
        """Before anything is trained: the storage opens, and a named stored study fits this search."""
        super().check(space, runtime)
        o: OptunaOptions = self.options
        if o.storage is None:
            return
        quiet_optuna()
        storage = self._open(lambda: optuna.storages.get_storage(o.storage), o.study_name or "(default name)")
        if o.study_name is not None:
            try:
                study_id = storage.get_study_id_from_name(o.study_name)
            except KeyError:  # not created yet
                return
            self._check_study(o.study_name, space, storage.get_study_user_attrs(study_id),
                              storage.get_study_directions(study_id))

    def setup(self, space, runtime, constraint, seed) -> None:
        super().setup(space, runtime, constraint, seed)
        quiet_optuna()
        o: OptunaOptions = self.options
        self.study_name = o.study_name or f"spnas-{self.name}-{space.name}-seed{seed}"
        self.choices = [[str(op) for op in layer.ops] for layer in space.searchable]
        #: asked architecture -> its Optuna trials not told yet, oldest first (a driver may ask one twice)
        self.pending: dict[str, list[optuna.trial.Trial]] = {}
        self.known: set[str] = set()  # architectures this run told (or replayed): the driver's business
        self.reused = 0  # asks told the accuracy the study holds
        self.yielded = 0  # asks given up to another process's claim
        self.study = self._open(lambda: optuna.create_study(
            storage=o.storage, study_name=self.study_name, directions=list(self.directions), load_if_exists=True,
            sampler=optuna.samplers.RandomSampler(seed=0)), self.study_name)  # the sampler is replaced below
        self._check_study(self.study_name, space, self.study.user_attrs, self.study.directions)
        for key, value in zip(STUDY_ATTRS, self._identity(space)):
            if key not in self.study.user_attrs:
                self.study.set_user_attr(key, value)
        if self.study.metric_names is None:  # objective names in the dashboard instead of "Objective 0"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self.study.set_metric_names(list(self.metric_names))
        #: trials the study held before this run (other processes, earlier runs)
        self.joined = len(self.study.get_trials(deepcopy=False))
        with warnings.catch_warnings():  # constraints_func and friends are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.sampler = self.make_sampler(self.sampler_seed(seed, self.joined))

    @staticmethod
    def sampler_seed(seed: int, existing: int) -> int:
        """The search seed for a fresh study; mixed with the number of trials when joining one."""
        if existing == 0:
            return seed % 2**32
        return int(np.random.SeedSequence([seed % 2**32, existing]).generate_state(1)[0])

    def _open(self, make, study_name: str):
        from sqlalchemy.exc import IntegrityError, OperationalError  # Optuna's RDB storage

        for attempt in range(1, OPEN_TRIES + 1):
            try:
                return make()
            except (IntegrityError, OperationalError) as exc:
                error = exc
                if attempt < OPEN_TRIES:  # another process may be creating the same new database: try again
                    time.sleep(0.1 * attempt)
                    continue
            except Exception as exc:  # a malformed URL, a missing database driver, an unreachable server
                error = exc
            raise SpnasError(f"{self.name}: cannot open study {study_name!r} in storage "
                             f"{describe_storage(self.options.storage)}: {type(error).__name__}: {error}") from error

    def _identity(self, space) -> tuple[str, str, str]:
        return self.name, space.name, space.signature()

    def _check_study(self, study_name: str, space, attrs: dict, directions) -> None:
        """Refuse a stored study of another strategy, space or direction (its parameters would clash)."""
        want = dict(zip(STUDY_ATTRS, self._identity(space)))
        have = [d.name.lower() for d in directions]
        if have != list(self.directions) or any(attrs.get(k, v) != v for k, v in want.items()):
            raise SpnasError(
                f"{self.name}: study {study_name!r} in {describe_storage(self.options.storage)} is a "
                f"{attrs.get('spnas_strategy', '?')} search of space {attrs.get('spnas_space', '?')} "
                f"({'/'.join(have)}); this search is {self.name} on {space.name}: give another --study-name")

    # --- ask / tell ----------------------------------------------------------------------
    def ask(self) -> Architecture | None:
        for _ in range(self.options.max_stall):
            ot = self.study.ask()
            arch = self.space.arch(ot.suggest_categorical(param_name(i), c) for i, c in enumerate(self.choices))
            key = str(arch)
            if self._shared(key, arch):
                ot.set_user_attr(ARCH, key)  # the claim, written before the study is read
                ot.set_user_attr(STATUS, CLAIMED)
                accuracy, claimed = self._look_up(key, ot.number)
                if accuracy is not None:
                    self._tell(ot, key, accuracy, self.runtime.predict(arch), REUSED)
                    self.reused += 1
                    continue
                if claimed:
                    ot.set_user_attr(STATUS, YIELDED)
                    self.study.tell(ot, state=TrialState.FAIL)
                    self.yielded += 1
                    continue
            self.pending.setdefault(key, []).append(ot)
            return arch
        return None

    def tell(self, trial: Trial) -> None:
        asked = self.pending.get(trial.key)
        if not asked:
            raise SpnasError(f"{self.name}: told {trial.key!r}, which was not asked (or was told already)")
        ot = asked.pop(0)
        if not asked:
            del self.pending[trial.key]
        accuracy = 0.0 if trial.status == INFEASIBLE or trial.accuracy is None else trial.accuracy
        self._tell(ot, trial.key, accuracy, trial.latency, trial.status)
        self.known.add(trial.key)

    def _tell(self, ot: optuna.trial.Trial, key: str, accuracy: float, latency: float, status: str) -> None:
        for name, value in ((ARCH, key), (LATENCY, latency), (VIOLATION, self.violation(latency, status)),
                            (STATUS, status), (ACCURACY, accuracy), (UNITS, self.runtime.units),
                            (STRATEGY, self.name)):
            ot.set_user_attr(name, value)
        self.study.tell(ot, self.objectives(accuracy, latency))

    def violation(self, latency: float, status: str) -> float:
        """0 for a candidate inside the constraint; else its distance to the window (> 0)."""
        if status != INFEASIBLE:
            return 0.0
        c = self.constraint
        return max(c.lo - latency, latency - c.hi, 1e-12)

    def _shared(self, key: str, arch: Architecture) -> bool:
        """Whether other processes may hold ``key``: a stored study, a feasible architecture that this
        run neither told (the driver knows it) nor has pending (the driver deduplicates its own asks)."""
        return (self.options.storage is not None and key not in self.known and key not in self.pending
                and self.feasible(arch))

    def _look_up(self, key: str, number: int) -> tuple[float | None, bool]:
        """One read of the study after trial ``number`` claimed ``key``: (the accuracy a COMPLETE trial
        holds for it, or None; whether another trial that has not yielded is still RUNNING with it).

        A running trial counts whatever its ``status``: it is ``claimed`` until the moment it is told,
        when the final status is written just before the values."""
        claimed = False
        for ft in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
            attrs = ft.user_attrs
            if attrs.get(ARCH) != key or ft.number == number:
                continue
            if ft.state == TrialState.COMPLETE:
                if attrs.get(STATUS, INFEASIBLE) != INFEASIBLE:
                    return float(ft.values[0]), False
            elif attrs.get(STATUS) != YIELDED:
                claimed = True
        return None, claimed

    def replay(self, trials: Sequence[Trial], order: Sequence[int] | None = None) -> None:
        """Restore the state after ``trials`` on ``--resume``.

        With the study in memory (or a stored study that is still empty) the recorded trials are
        asked and told again (the base class's replay; the driver's checks apply). A stored study
        that holds trials already is reloaded instead: every evaluated trial of the checkpoint
        must be in it (with the same accuracy), and the search continues from the study as it is.
        """
        if self.options.storage is None or self.joined == 0:
            super().replay(trials, order)
            return
        stored: dict[str, float] = {}
        for ft in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if ft.user_attrs.get(STATUS, INFEASIBLE) != INFEASIBLE:
                stored.setdefault(ft.user_attrs.get(ARCH), float(ft.values[0]))
        for t in trials:
            if t.status != EVALUATED:
                continue
            acc = stored.get(t.key)
            if acc is None or not math.isclose(acc, t.accuracy, rel_tol=1e-9, abs_tol=1e-12):
                found = "does not hold it" if acc is None else f"holds accuracy {acc!r}"
                raise SpnasError(
                    f"cannot resume: trial {t.number} of this run ({t.key!r}, accuracy {t.accuracy!r}) is missing from "
                    f"study {self.study_name!r} in {describe_storage(self.options.storage)}, which {found} "
                    f"(was --storage or --study-name changed?)")
        self.known.update(t.key for t in trials)

    # --- result --------------------------------------------------------------------------
    def result_details(self) -> dict[str, Any]:
        """The driver's result (best candidate, Pareto front) gets a summary of the study."""
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """What the study holds now (all processes that share it, when stored)."""
        best = self.study.best_trials
        return {
            "study_name": self.study_name,
            "storage": describe_storage(self.options.storage),
            "study_trials": len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
            "study_reused": self.reused,
            "study_yielded": self.yielded,
            "study_best_trials": len(best),
            "study_best_archs": len({t.user_attrs.get(ARCH) for t in best}),
        }


__all__ = ["CLAIMED", "OptunaOptions", "OptunaStrategy", "REUSED", "YIELDED", "constraint_violation",
           "describe_storage", "param_name", "quiet_optuna"]
