"""Sampling strategies: a small ask/tell class, and the driver that owns everything else.

A sampling strategy (random, evolution, rl, or a plugin's) proposes candidates with ``ask()`` and
learns from ``tell(trial)``. The driver (:class:`Driver`) owns the rest, the same way for all of
them, so that they are compared on equal terms: the shared supernet and its evaluator, the
budget (evaluations and/or wall time), the hard latency constraint, deduplication, the JSONL
history, checkpoints and ``--resume``, and the progress bar.

Resuming replays the recorded trials through ``ask``/``tell`` (without evaluating anything),
which restores any strategy's state exactly, provided it is deterministic under its seed; the
driver checks that every replayed ask matches the record.

Example (a strategy in full)::

    class RandomSearch(SamplingStrategy):
        name = "random"
        def ask(self):
            return self.sample_feasible()
        def tell(self, trial):
            pass
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterable, Sequence

from spnas.space.arch import Architecture
from spnas.core.errors import SpnasError
from spnas.searching.evaluator import Evaluate
from spnas.space.graph import SpaceGraph
from spnas.core.runs import RunDir
from spnas.latency.runtime import RuntimeModel
from spnas.searching.strategy import SearchContext, SearchResult, Strategy, check_options, option
from spnas.searching.target import WINDOW

CHECKPOINT_FORMAT = "spnas-sampling-v1"
EVALUATED, DUPLICATE, INFEASIBLE = "evaluated", "duplicate", "infeasible"


@dataclass(frozen=True)
class Trial:
    """One ask of a sampling search, keyed by the architecture string.

    ``status`` is ``evaluated`` (a new candidate, evaluated on the supernet), ``duplicate`` (asked
    before: ``accuracy`` is the cached value, no evaluation spent) or ``infeasible`` (outside the
    latency constraint: not evaluated, ``accuracy`` is None).
    """

    number: int
    arch: Architecture
    latency: float
    accuracy: float | None
    status: str

    @property
    def key(self) -> str:
        return str(self.arch)

    @property
    def feasible(self) -> bool:
        return self.status != INFEASIBLE

    def to_record(self) -> dict[str, Any]:
        return {"trial": self.number, "arch": str(self.arch), "latency": self.latency,
                "accuracy": self.accuracy, "status": self.status}


@dataclass(frozen=True)
class Constraint:
    """The hard latency constraint: ``lo <= latency <= hi`` (in the device's units)."""

    lo: float = 0.0
    hi: float = math.inf

    def ok(self, latency: float) -> bool:
        eps = 1e-9 * max(1.0, abs(latency))
        return self.lo - eps <= latency <= self.hi + eps

    def describe(self, units: str = "") -> str:
        u = f" {units}" if units else ""
        if math.isinf(self.hi) and self.lo <= 0:
            return "none"
        if self.lo <= 0:
            return f"<= {self.hi:g}{u}"
        return f"[{self.lo:g}, {self.hi:g}]{u}"

    @classmethod
    def from_options(cls, opts: "SamplingOptions", runtime: RuntimeModel) -> "Constraint":
        """``--target T`` (the window [0.95 T, T], as single-path), ``--max-latency T`` or
        ``--latency-window LO HI``; refuses a constraint the space cannot meet."""
        given = [n for n in ("target", "max_latency", "latency_window") if getattr(opts, n) is not None]
        if len(given) > 1:
            raise SpnasError(f"give one latency constraint, not {' and '.join('--' + g.replace('_', '-') for g in given)}")
        if opts.target is not None:
            c = cls(opts.target * (1 - WINDOW), opts.target)
        elif opts.max_latency is not None:
            c = cls(0.0, opts.max_latency)
        elif opts.latency_window is not None:
            c = cls(*map(float, opts.latency_window))
        else:
            return cls()
        if not (c.hi > 0 and c.lo <= c.hi):
            raise SpnasError(f"latency constraint {c.describe()} is empty; give 0 <= LO <= HI")
        lo, hi = runtime.bounds()
        if c.hi < lo or c.lo > hi:
            raise SpnasError(f"latency constraint {c.describe(runtime.units)} cannot be met: architectures of "
                             f"{runtime.space.name} reach {lo:.4f} to {hi:.4f} {runtime.units}")
        return c


@dataclass
class SamplingOptions:
    """Options every sampling strategy shares (the driver's and the shared supernet's)."""

    evaluations: int | None = option(None, "candidates to evaluate (default: the strategy's)")
    time_limit: float | None = option(None, "stop the search after this many seconds (supernet training "
                                            "not counted)", metavar="SECONDS")
    target: float | None = option(None, "latency window [0.95 T, T], as single-path's --target", metavar="T",
                                  range_fraction=True)
    max_latency: float | None = option(None, "hard constraint: latency <= T", metavar="T", range_fraction=True)
    latency_window: tuple[float, float] | None = option(None, "hard constraint: LO <= latency <= HI",
                                                        metavar=("LO", "HI"))
    supernet: str | None = option(None, "reuse this trained supernet (the supernet.pt of any run) instead of "
                                        "training one", metavar="PATH")
    epochs: int = option(8, "epochs of uniform single-path supernet training")
    batch_size: int = option(64, "batch size of supernet training and BN recalibration")
    lr: float = option(0.1, "learning rate of supernet training (SGD, Nesterov momentum 0.9, as SPOS)")
    weight_decay: float = option(4e-5, "weight decay of supernet training (SPOS: 4e-5)")
    bn_batches: int = option(20, "training batches to recompute each candidate's BatchNorm statistics")
    max_stall: int = option(1000, "stop after this many asks in a row give no new feasible candidate")

    def __post_init__(self) -> None:
        check_options("sampling", [
            ("evaluations", self.evaluations is None or self.evaluations >= 1, ">= 1"),
            ("time_limit", self.time_limit is None or self.time_limit > 0, "> 0"),
            ("epochs", self.epochs >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"), ("bn_batches", self.bn_batches >= 1, ">= 1"),
            ("max_stall", self.max_stall >= 1, ">= 1"),
            ("target", self.target is None or self.target > 0, "> 0"),
            ("max_latency", self.max_latency is None or self.max_latency > 0, "> 0"),
        ], self)


class SamplingStrategy(Strategy):
    """Base class of ask/tell strategies. Subclasses implement :meth:`ask` and :meth:`tell`.

    After :meth:`setup`, ``self.space``, ``self.runtime``, ``self.constraint`` and ``self.rng`` (a
    ``random.Random`` seeded by the search's seed) are available. ``ask`` may return None when
    the strategy has nothing more to propose (the search then stops).
    """

    Options = SamplingOptions
    #: evaluations when ``--evaluations`` is not given
    default_evaluations: ClassVar[int] = 100

    @property
    def evaluations(self) -> int:
        return self.options.evaluations or self.default_evaluations

    @classmethod
    def budget_options(cls, evaluations: int) -> dict[str, Any]:
        """Options that let this strategy act as itself within ``evaluations`` candidates, for a
        caller that fixes the budget (``spnas compare``). None by default; evolution shrinks its population so that it gets at least 3 generations."""
        return {}

    def setup(self, space: SpaceGraph, runtime: RuntimeModel, constraint: Constraint, seed: int) -> None:
        """Called once before the first ask. Override to build state; call ``super().setup``."""
        self.space, self.runtime, self.constraint = space, runtime, constraint
        self.rng = random.Random(seed)
        self.seed = seed

    def ask(self) -> Architecture | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def tell(self, trial: Trial) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def ask_ahead(self) -> bool:
        """Whether :meth:`ask` may propose another candidate while earlier ones wait for their
        accuracy (the driver evaluates a batch of candidates at once under torchrun). Yes by
        default; a strategy whose next proposal should see every result so far says no (evolution,
        at the end of a generation), and the batch is evaluated as it is."""
        return True

    def replay(self, trials: Sequence[Trial], order: Sequence[int] | None = None) -> None:
        """Restore the state after ``trials`` (on ``--resume``): by default, ask and tell them again,
        in the recorded ``order`` (+n: trial n was asked, -n: told; default: ask, tell, ask, ...)."""
        by_number = {t.number: t for t in trials}
        for event in order if order is not None else _interleaved(trials):
            t = by_number[abs(event)]
            if event < 0:
                self.tell(t)
                continue
            arch = self.ask()
            if arch is None or str(arch) != t.key:
                raise SpnasError(
                    f"cannot resume: at trial {t.number} strategy {self.name} now asks {str(arch)!r} but the run "
                    f"recorded {t.key!r} (were the options, the seed or the spnas version changed?)")

    def feasible(self, arch: Architecture) -> bool:
        return self.constraint.ok(self.runtime.predict(arch))

    def sample_feasible(self, tries: int = 10_000) -> Architecture:
        """A uniformly random architecture inside the constraint (rejection sampling, ``tries`` draws)."""
        for _ in range(tries):
            arch = self.space.random(self.rng)
            if self.feasible(arch):
                return arch
        lo, hi = self.runtime.bounds()
        raise SpnasError(
            f"no architecture with latency {self.constraint.describe(self.runtime.units)} in {tries} random draws; "
            f"architectures of {self.space.name} reach {lo:.4f} to {hi:.4f} {self.runtime.units}; widen the window")

    def check(self, space: SpaceGraph, runtime: RuntimeModel) -> None:
        """Refuse an impossible constraint or a missing supernet before a run directory is written."""
        Constraint.from_options(self.options, runtime)
        if self.options.supernet and not Path(self.options.supernet).is_file():
            raise SpnasError(f"--supernet {self.options.supernet}: no such file (use the supernet.pt of a finished run)")

    def search(self, ctx: SearchContext) -> SearchResult:
        """Train (or load) the shared supernet, then drive ask/tell until the budget is spent."""
        from spnas.searching.evaluator import SupernetEvaluator
        from spnas.training.oneshot import UniformTraining, load_supernet, train_uniform

        from spnas.supernet.builder import Supernet
        from spnas.core.distributed import ShardedEvaluation, run_on_main

        opts: SamplingOptions = self.options
        d = ctx.dist
        constraint = Constraint.from_options(opts, ctx.runtime)
        if opts.supernet and not d.enabled:
            net = load_supernet(opts.supernet, ctx.space, ctx.accelerator)
        elif opts.supernet:  # read by rank 0 and sent to the others (their machines need no copy)
            net = Supernet(ctx.space)
            net.load_state_dict(d.from_main(lambda: load_supernet(opts.supernet, ctx.space).state_dict()))
            net = net.to(ctx.accelerator)
        else:  # under torchrun: every rank trains it (DDP)
            training = UniformTraining(opts.epochs, opts.batch_size, opts.lr, opts.weight_decay)
            net = train_uniform(ctx.space, ctx.data, training, ctx.run, seed=ctx.seed, device=ctx.accelerator,
                                resume=ctx.resume, progress=ctx.progress, dist=d, loader_workers=ctx.loader_workers)
        evaluate = SupernetEvaluator(net, ctx.data, bn_batches=opts.bn_batches, batch_size=opts.batch_size,
                                     seed=ctx.seed, device=ctx.accelerator)
        pool = ShardedEvaluation(evaluate, ctx.space, d)

        def drive() -> SearchResult:  # the strategy runs once, on rank 0; every rank evaluates candidates
            driver = Driver(self, ctx.space, ctx.runtime, evaluate, constraint, seed=ctx.seed, run=ctx.run,
                            resume=ctx.resume, progress=ctx.progress, batch=d.world_size,
                            evaluate_many=pool.evaluate_many if d.enabled else None)
            trials = driver.run()
            details = {"supernet": str(opts.supernet or ctx.run.path / "supernet.pt"), "seed": ctx.seed,
                       **({"processes": d.world_size} if d.enabled else {}), **self.result_details()}
            return driver.result(trials, details)

        return run_on_main(d, drive, pool)

    def result_details(self) -> dict[str, Any]:
        """Strategy-specific facts for ``result.yaml`` (e.g. the size of an Optuna study); none by default."""
        return {}


class Driver:
    """Runs one sampling strategy: budget, constraint, deduplication, history, checkpoints, resume."""

    def __init__(self, strategy: SamplingStrategy, space: SpaceGraph, runtime: RuntimeModel, evaluate: Evaluate,
                 constraint: Constraint = Constraint(), *, seed: int = 0, run: RunDir | None = None,
                 resume: bool = False, progress: bool = False, batch: int = 1,
                 evaluate_many: Callable[[list[Architecture]], Sequence[float]] | None = None):
        """``batch`` candidates are asked before they are evaluated together by ``evaluate_many`` (one
        per rank under torchrun: :class:`spnas.core.distributed.ShardedEvaluation`); by default one at a time."""
        if batch < 1:
            raise SpnasError(f"driver batch {batch} is not allowed; use >= 1")
        self.strategy, self.space, self.runtime, self.evaluate = strategy, space, runtime, evaluate
        self.constraint, self.seed, self.run_dir, self.resume, self.progress = constraint, seed, run, resume, progress
        self.batch, self.evaluate_many = batch, evaluate_many
        self.stop_reason = ""
        self.elapsed = 0.0
        #: the order of asks (+n) and tells (-n) of trial n, kept in the checkpoint for an exact replay
        self.events: list[int] = []

    def run(self) -> list[Trial]:
        s = self.strategy
        s.setup(self.space, self.runtime, self.constraint, self.seed)
        trials = self._restore() if self.resume else []
        seen = {t.key: t for t in trials if t.status == EVALUATED}
        n_eval, stall = len(seen), 0
        budget, limit = s.evaluations, s.options.time_limit
        from tqdm.auto import tqdm

        bar = tqdm(total=budget, initial=n_eval, desc=s.name, unit="cand", disable=not self.progress,
                   dynamic_ncols=True, leave=False)
        start = time.perf_counter() - self.elapsed

        def told(trial: Trial) -> None:  # tell the strategy, record, and keep the events in order
            s.tell(trial)
            self.events.append(-trial.number)
            trials.append(trial)
            if self.run_dir is not None:
                self.run_dir.log({**trial.to_record(), "elapsed": round(time.perf_counter() - start, 3)})

        try:
            while True:
                self.elapsed = time.perf_counter() - start
                if n_eval >= budget:
                    self.stop_reason = "evaluation budget spent"
                elif limit is not None and self.elapsed >= limit:
                    self.stop_reason = "time limit reached"
                elif stall >= s.options.max_stall:
                    self.stop_reason = f"{stall} asks in a row gave no new feasible candidate"
                if self.stop_reason:
                    break
                # ask up to `batch` new candidates (one per rank under torchrun; one for one process),
                # telling infeasible and duplicate asks at once, then evaluate the batch together
                want = min(self.batch, budget - n_eval)
                batch: list[Trial] = []  # new feasible candidates, accuracy pending
                repeats: list[Trial] = []  # asked again within the batch: told after it
                number = len(trials) + 1
                while len(batch) < want and (not batch or s.ask_ahead()):
                    arch = s.ask()
                    if arch is None:
                        self.stop_reason = "the strategy has nothing more to ask"
                        break
                    arch = self.space.validate(arch)
                    self.events.append(number)
                    trial = Trial(number, arch, self.runtime.predict(arch), None, EVALUATED)
                    number += 1
                    if not self.constraint.ok(trial.latency):
                        told(dataclasses.replace(trial, status=INFEASIBLE))
                        stall += 1
                    elif trial.key in seen:
                        told(dataclasses.replace(trial, accuracy=seen[trial.key].accuracy, status=DUPLICATE))
                        stall += 1
                    elif any(t.key == trial.key for t in batch):
                        repeats.append(trial)
                        stall += 1
                    else:
                        batch.append(trial)
                        stall = 0
                    if stall >= s.options.max_stall or (limit is not None and time.perf_counter() - start >= limit):
                        break
                if not batch:
                    continue
                for trial, accuracy in zip(batch, self._evaluate([t.arch for t in batch])):
                    trial = dataclasses.replace(trial, accuracy=float(accuracy))
                    told(trial)
                    seen[trial.key] = trial
                    n_eval += 1
                    bar.update(1)
                for trial in repeats:
                    told(dataclasses.replace(trial, accuracy=seen[trial.key].accuracy, status=DUPLICATE))
                trials.sort(key=lambda t: t.number)
                best = max(seen.values(), key=_rank)
                bar.set_postfix(best=f"{best.accuracy:.4f}", lat=f"{best.latency:.4g}", refresh=False)
                self._checkpoint(trials, time.perf_counter() - start)
        finally:
            bar.close()
        trials.sort(key=lambda t: t.number)
        self._checkpoint(trials, self.elapsed)
        return trials

    def _evaluate(self, archs: list[Architecture]) -> list[float]:
        if self.evaluate_many is not None:
            return list(self.evaluate_many(archs))
        return [float(self.evaluate(a)) for a in archs]

    def _checkpoint(self, trials: list[Trial], elapsed: float) -> None:
        if self.run_dir is None:
            return
        self.run_dir.save_checkpoint({
            "format": CHECKPOINT_FORMAT, "strategy": self.strategy.name, "space": self.space.name,
            "seed": self.seed, "elapsed": elapsed, "trials": [t.to_record() for t in trials],
            "events": list(self.events),
        })

    def _restore(self) -> list[Trial]:
        run = self.run_dir
        if run is None or not run.checkpoint_path.is_file():
            return []
        ckpt = run.load_checkpoint()
        if ckpt.get("format") != CHECKPOINT_FORMAT:  # e.g. killed during supernet training: nothing asked yet
            run.truncate_log(0, key="trial")
            return []
        if ckpt.get("strategy") != self.strategy.name or ckpt.get("space") != self.space.name:
            raise SpnasError(f"{run.checkpoint_path}: a {ckpt.get('strategy')} search on {ckpt.get('space')!r}; "
                             f"this run is {self.strategy.name} on {self.space.name!r}")
        trials = [Trial(r["trial"], self.space.parse(r["arch"]), r["latency"], r["accuracy"], r["status"])
                  for r in ckpt["trials"]]
        events = [int(e) for e in ckpt.get("events") or _interleaved(trials)]
        if events == _interleaved(trials):  # one ask, one tell: the replay every strategy implements
            self.strategy.replay(trials)
        else:
            self.strategy.replay(trials, order=events)
        self.events = events
        self.elapsed = float(ckpt.get("elapsed", 0.0))
        run.truncate_log(len(trials), key="trial")
        return trials

    def result(self, trials: Sequence[Trial], details: dict | None = None) -> SearchResult:
        """The best evaluated candidate (highest accuracy, then lowest latency) and the Pareto front."""
        evaluated = [t for t in trials if t.status == EVALUATED]
        if not evaluated:
            raise SpnasError(f"{self.strategy.name}: no candidate was evaluated ({self.stop_reason or 'no budget'})")
        best = max(evaluated, key=_rank)
        params, macs = self.space.cost(best.arch)
        info = {"evaluations": len(evaluated), "asks": len(trials), "stop_reason": self.stop_reason,
                "constraint": self.constraint.describe(self.runtime.units), "search_seconds": round(self.elapsed, 3),
                **(details or {})}
        front = tuple({"arch": t.key, "accuracy": t.accuracy, "latency": round(t.latency, 6)}
                      for t in pareto_front(evaluated))
        return SearchResult(self.strategy.name, self.space.name, best.arch, best.latency, self.runtime.units,
                            float(best.accuracy), params, macs, self.run_dir.path if self.run_dir else None,
                            history=tuple(t.to_record() for t in trials), details=info, pareto_front=front)


def _interleaved(trials: Sequence[Trial]) -> list[int]:
    return [e for t in trials for e in (t.number, -t.number)]


def _rank(t: Trial) -> tuple:
    return (t.accuracy, -t.latency, -t.number)


def pareto_front(trials: Iterable[Trial]) -> list[Trial]:
    """Evaluated trials that no other beats on both accuracy (higher) and latency (lower), by latency."""
    front: list[Trial] = []
    for t in sorted(trials, key=lambda t: (t.latency, -t.accuracy, t.number)):
        if t.accuracy is not None and (not front or t.accuracy > front[-1].accuracy):
            front.append(t)
    return front


__all__ = ["Constraint", "Driver", "SamplingOptions", "SamplingStrategy", "Trial", "pareto_front",
           "EVALUATED", "DUPLICATE", "INFEASIBLE"]
