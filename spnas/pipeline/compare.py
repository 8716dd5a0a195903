"""The strategy bake-off: several strategies, one supernet, one latency table, equal budgets.

The paper compares Single-Path NAS with random search on its own supernet (Sec. 4). ``spnas
compare`` does it for any set of registered strategies, on equal terms:

1. one latency table (the device's, or ``--device-table``), so every strategy optimises the same
   runtime model;
2. one shared supernet, trained once with uniform single-path sampling for ``supernet_epochs``
   epochs (``supernet/supernet.pt``); every sampling strategy evaluates ``evaluations`` candidates
   on it under the same latency constraint. The differentiable single-path strategy trains its
   own supernet (that is the method) for the same number of epochs, with the same ``--target``;
3. every found architecture is trained from scratch with the same recipe and epochs
   (:mod:`spnas.training.train`), and its whole network is measured when the device can measure;
4. ``report.md``, ``compare.yaml`` and ``plots/compare.png`` in the output directory.

The pseudo-strategy ``random-arch`` is the paper's baseline and the yardstick: ``random_archs``
architectures drawn uniformly at random from the space inside the same latency window, each trained
from scratch with the same recipe, no supernet.

Everything runs once per seed of ``seeds`` (one shared supernet per seed, each strategy's search,
the trainings, the random-arch draws): with one seed in the output directory itself, with several
in ``seed-<seed>/``. ``compare.yaml`` keeps every seed's rows and adds, per strategy, the mean,
the sample standard deviation and every value of top-1 over seeds (:func:`aggregate`).

Search cost is reported in wall time and in epochs: the supernet epochs (for sampling strategies,
the shared supernet's, paid once for all of them) plus, for sampling strategies, the candidates
evaluated. Every stage lives in its own run directory; a rerun with ``--resume`` skips finished
stages and resumes the unfinished one.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from spnas.space.arch import Architecture
from spnas.data.split import DataSplit
from spnas.core.errors import SpnasError
from spnas.space.graph import SpaceGraph
from spnas.core.runs import RunDir, atomic_write_text, dump_yaml, read_yaml
from spnas.report.compare import RANDOM_ARCH, write_compare_report  # noqa: F401 (compare's API)
from spnas.report.stats import aggregate
from spnas.latency.runtime import RuntimeModel
from spnas.searching.target import RangeFraction, parse_target, range_position, resolve_target
from spnas.training.train import TrainRecipe


@dataclass(frozen=True)
class CompareOptions:
    """What ``spnas compare`` runs; refuses a bad value with a one-line error naming its flag."""

    strategies: tuple[str, ...] = ("single-path", "random", "evolution", "rl", "random-arch")
    target: float | str | None = None
    #: the target as given (recorded); ``target`` may be 'P%' of the space's range on the device
    #: (``lo + P/100 (hi - lo)``), which :class:`Comparison` resolves to device units
    target_spec: str | None = None
    supernet_epochs: int = 8
    evaluations: int = 100
    recipe: TrainRecipe = field(default_factory=TrainRecipe)
    #: every stage runs once per seed (shared supernet, searches, trainings; the random-arch draws)
    seeds: tuple[int, ...] = (0,)
    #: architectures the random-arch arm draws and trains per seed
    random_archs: int = 3
    measure: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(self.seeds))  # a list from YAML or Python reads the same
        shown = ",".join(map(str, self.seeds))
        if not self.seeds:
            raise SpnasError("--seeds: empty; give a count N >= 1 (seeds 0..N-1) or distinct seeds such as 0,3,7")
        for s in self.seeds:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                raise SpnasError(f"--seeds {shown}: {s!r} is not allowed; seeds are integers >= 0")
        if len(set(self.seeds)) != len(self.seeds):
            twice = next(s for s in self.seeds if self.seeds.count(s) > 1)
            raise SpnasError(f"--seeds {shown}: seed {twice} is named twice; give distinct seeds")
        if isinstance(self.random_archs, bool) or not isinstance(self.random_archs, int) or self.random_archs < 1:
            raise SpnasError(f"--random-archs {self.random_archs!r} is not allowed; use an integer >= 1")
        if not self.strategies:
            raise SpnasError("--strategies: empty; name at least one strategy (see 'spnas plugins')")
        if len(set(self.strategies)) != len(self.strategies):
            raise SpnasError(f"--strategies {','.join(self.strategies)}: a strategy is named twice")
        if self.supernet_epochs < 1:
            raise SpnasError(f"--supernet-epochs {self.supernet_epochs} is not allowed; use >= 1")
        if self.evaluations < 1:
            raise SpnasError(f"--evaluations {self.evaluations} is not allowed; use >= 1")
        if self.target is not None:  # a cost, or 'P%' kept as text until Comparison has the latency table
            parsed = parse_target(self.target, "--target")
            object.__setattr__(self, "target", str(parsed) if isinstance(parsed, RangeFraction) else parsed)
            if self.target_spec is None:
                object.__setattr__(self, "target_spec", str(self.target))


def _strategy(name: str, opts: CompareOptions, supernet: Path | None):
    """The registered strategy ``name`` with the comparison's budget and constraint."""
    from spnas.core.registry import get_registry
    from spnas.searching.sampling import SamplingStrategy
    from spnas.searching.strategy import DifferentiableStrategy

    cls = get_registry().get("strategy", name)
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    values: dict[str, Any] = {"target": opts.target}
    if issubclass(cls, SamplingStrategy):
        values.update(cls.budget_options(opts.evaluations))  # e.g. evolution: >= 3 generations
        values.update(evaluations=opts.evaluations, supernet=str(supernet) if supernet else None)
        kind = "sampling"
    elif issubclass(cls, DifferentiableStrategy) or "epochs" in fields:
        values.update(epochs=opts.supernet_epochs)
        kind = "differentiable"
    else:
        kind = "other"
    values = {k: v for k, v in values.items() if k in fields and v is not None}
    return cls.from_options(values), kind


#: the pseudo-strategy of ``--strategies``: architectures drawn uniformly at random from the space
#: (inside the same latency window) and trained from scratch, no supernet: the paper's baseline



#: uniform draws allowed per wanted architecture before random-arch gives up on a nearly empty
#: window (the same cap as SamplingStrategy.sample_feasible)
RANDOM_ARCH_TRIES = 10_000


def draw_random_archs(space: SpaceGraph, runtime: RuntimeModel, target: float | None, n: int,
                      seed: int) -> list[tuple[Architecture, float]]:
    """``n`` distinct architectures drawn uniformly at random from ``space``, with their predicted latency.

    With a ``target`` T only those with predicted latency in [0.95 T, T] (the window every strategy
    gets) are kept: rejection sampling, at most ``n * RANDOM_ARCH_TRIES`` draws; without one, the whole
    space. The draws depend only on ``seed``, the space and the latency table.

    Raises:
        SpnasError: no architecture can meet the window, or it holds too few to find ``n`` in the draws.

    Example:
        >>> draws = draw_random_archs(space, runtime, 0.8, 3, seed=0)  # doctest: +SKIP
    """
    from spnas.searching.sampling import Constraint
    from spnas.searching.target import WINDOW, check_target

    constraint = Constraint()
    if target is not None:
        check_target(runtime, target)
        constraint = Constraint((1 - WINDOW) * target, target)
    # a stream of its own: random search seeded alike draws from random.Random(seed) the same way,
    # and the baseline's architectures must not be the first candidates random search evaluates
    rng = random.Random(f"{RANDOM_ARCH}:{seed}")
    found: dict[str, tuple[Architecture, float]] = {}
    for _ in range(n * RANDOM_ARCH_TRIES):
        arch = space.random(rng)
        latency = runtime.predict(arch)
        if constraint.ok(latency) and str(arch) not in found:
            found[str(arch)] = (arch, latency)
            if len(found) == n:
                return list(found.values())
    lo, hi = runtime.bounds()
    raise SpnasError(
        f"{RANDOM_ARCH}: {len(found)} of --random-archs {n} distinct architectures with predicted latency "
        f"{constraint.describe(runtime.units)} in {n * RANDOM_ARCH_TRIES} uniform draws (seed {seed}); architectures "
        f"of {space.name} cost {lo:.4g} to {hi:.4g} {runtime.units}: move --target to where more of them lie, or "
        f"ask for fewer --random-archs")


def _seeds_flag(seeds: tuple[int, ...]) -> str:
    return f"--seed {seeds[0]}" if len(seeds) == 1 else f"--seeds {','.join(map(str, seeds))}"


def _recorded_seeds(marker: Path) -> tuple[int, ...] | None:
    """The seeds of the comparison recorded in ``compare-config.yaml`` (``seed`` before ``--seeds``)."""
    try:
        options = read_yaml(marker)["options"]
        return tuple(int(s) for s in options.get("seeds", [options.get("seed", 0)]))
    except (SpnasError, KeyError, TypeError, ValueError, AttributeError):
        return None  # unreadable: the stages themselves still check what they resume


class Comparison:
    """One bake-off in ``out`` (see the module docstring), once per seed of ``opts.seeds``.

    With one seed the stages lie in ``out`` itself (``supernet/``, ``search-random/``,
    ``train-random/``, ``train-random-arch-1/``, ...); with several, each seed's lie in
    ``out/seed-<seed>/``. :meth:`run` returns the content of ``compare.yaml``: one row per seed and
    strategy (per drawn architecture for random-arch) and the :func:`aggregate` over seeds.

    Example:
        >>> opts = CompareOptions(strategies=("random", "random-arch"), target=0.8, seeds=(0, 1))
        >>> result = Comparison(space, data, runtime, None, Path("runs/cmp"), opts).run()  # doctest: +SKIP
        >>> [(a["strategy"], a["n"]) for a in result["aggregate"]]  # doctest: +SKIP
        [('random', 2), ('random-arch', 6)]
    """

    def __init__(self, space: SpaceGraph, data: DataSplit, runtime: RuntimeModel, device: Any, out: Path,
                 opts: CompareOptions, *, accelerator: str = "cpu", resume: bool = False, progress: bool = True,
                 supernets_from: "Comparison | None" = None, warmups: Path | None = None):
        """``supernets_from``: another comparison (of another target) whose per-seed uniform supernets
        this one reuses (they do not depend on the target). ``warmups``: a directory for one
        warm-up per seed that a strategy with a target-independent warm-up (single-path) trains
        once and every target's search forks from (see :mod:`spnas.pipeline.sweep`)."""
        self.supernets_from, self.warmups = supernets_from, warmups
        if isinstance(opts.target, str):  # '40%' of the space's range, in device units now that the table is known
            opts = dataclasses.replace(opts, target=resolve_target(opts.target, runtime))
        self.space, self.data, self.runtime, self.device = space, data, runtime, device
        self.out, self.opts, self.accelerator = Path(out), opts, torch.device(accelerator)
        self.resume, self.progress = resume, progress
        marker = self.out / "compare-config.yaml"
        if marker.exists() and not resume:
            raise SpnasError(f"{self.out}: already holds a comparison; pass --resume to continue it, or choose "
                             f"another --out")
        if resume and not marker.exists():
            raise SpnasError(f"{self.out}: nothing to resume (no compare-config.yaml)")
        before = _recorded_seeds(marker) if resume else None
        if before is not None and before != opts.seeds and 1 in (len(before), len(opts.seeds)):
            # one seed's stages lie in out itself, several seeds' in seed-<seed>/: neither reads the other's
            raise SpnasError(f"{self.out}: holds a comparison run with {_seeds_flag(before)}; resume it with the "
                             f"same seeds, or run {_seeds_flag(opts.seeds)} with another --out")
        # every strategy exists and accepts the constraint before anything is trained (the shared
        # supernets do not exist yet: each seed's is given to the strategies when they search)
        self.strategies = {n: _strategy(n, opts, None) for n in opts.strategies if n != RANDOM_ARCH}
        for strategy, _ in self.strategies.values():
            strategy.check(space, runtime)
        self.kinds = {n: kind for n, (_, kind) in self.strategies.items()}
        # random-arch draws now, so that a window too narrow for it is refused before any training
        self.draws = ({s: draw_random_archs(space, runtime, opts.target, opts.random_archs, s) for s in opts.seeds}
                      if RANDOM_ARCH in opts.strategies else {})
        self.notes = budget_notes(self.strategies, opts)

    def seed_dir(self, seed: int) -> Path:
        """Where the stages of ``seed`` lie: ``out`` itself with one seed, else ``out/seed-<seed>``."""
        return self.out if len(self.opts.seeds) == 1 else self.out / f"seed-{seed}"

    def supernet_path(self, seed: int) -> Path:
        if self.supernets_from is not None:
            return self.supernets_from.supernet_path(seed)
        return self.seed_dir(seed) / "supernet" / "supernet.pt"

    def _stage(self, path: Path) -> tuple[RunDir, bool]:
        """The run directory of a stage, and whether it resumes."""
        resume = self.resume and (path / "checkpoint.pt").exists()
        return RunDir(path, resume=resume), resume

    def _shared_supernet(self, seed: int) -> float:
        """Train the seed's shared supernet unless it exists; returns the seconds it took (recorded)."""
        from spnas.training.oneshot import UniformTraining, train_uniform

        path = self.supernet_path(seed).parent
        info = path / "seconds.yaml"
        if self.supernet_path(seed).is_file() and info.is_file():
            return float(read_yaml(info)["seconds"])
        run, resume = self._stage(path)
        start = time.perf_counter()
        try:
            train_uniform(self.space, self.data, UniformTraining(epochs=self.opts.supernet_epochs), run,
                          seed=seed, device=self.accelerator, resume=resume, progress=self.progress)
        finally:
            run.close()
        seconds = time.perf_counter() - start
        atomic_write_text(info, dump_yaml({"seconds": round(seconds, 3)}))
        return seconds

    def _search(self, seed: int, name: str) -> dict[str, Any]:
        from spnas.pipeline.search import run_search
        from spnas.searching.strategy import DifferentiableStrategy

        path = self.seed_dir(seed) / f"search-{name}"
        if (path / "result.yaml").is_file():
            return read_yaml(path / "result.yaml")
        strategy, _ = _strategy(name, self.opts, self.supernet_path(seed))
        resume = self.resume and (path / "checkpoint.pt").exists()
        if (self.warmups is not None and isinstance(strategy, DifferentiableStrategy)
                and strategy.fork_epoch() is not None and not (path / "checkpoint.pt").exists()):
            from spnas.pipeline.sweep import _warm_up, fork

            warm = self.warmups / f"{name}-seed-{seed}"
            _warm_up(strategy, self.space, self.data, self.runtime, warm, seed, self.accelerator.type, self.resume,
                     self.progress, {"command": "compare/warmup", "strategy": name})
            fork(warm, path)  # this target's search continues the shared warm-up
            resume = True
        outcome = run_search(self.space, strategy, data=self.data, runtime=self.runtime, out=path, seed=seed,
                             accelerator=self.accelerator.type, resume=resume, progress=self.progress,
                             config={"command": "compare/search"}, seconds_from_start=True)
        return outcome.record

    def _train(self, seed: int, name: str, arch: str) -> dict[str, Any]:
        """Train ``arch`` from scratch in the stage ``train-<name>`` of ``seed`` unless it is done."""
        from spnas.pipeline.train import run_train

        path = self.seed_dir(seed) / f"train-{name}"
        if (path / "result.yaml").is_file():
            done = read_yaml(path / "result.yaml")
            if done.get("arch") != arch:
                raise SpnasError(f"{path}: trained {done.get('arch')!r}, not {arch!r} (were the latency table, "
                                 f"--target or the seed changed?); remove that directory or choose another --out")
            return done
        resume = self.resume and (path / "checkpoint.pt").exists()
        return run_train(arch, self.space, data=self.data, out=path, recipe=self.opts.recipe, seed=seed,
                         accelerator=self.accelerator.type, resume=resume, progress=self.progress,
                         config={"command": "compare/train"}).record

    def run(self) -> dict[str, Any]:
        """Every stage of every seed, then ``compare.yaml``, ``report.md`` and the plot; returns
        compare.yaml's content."""
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "compare-config.yaml", dump_yaml({
            "space": self.space.name, "data": self.data.name, "options": self.opts,
            "table_header": self.runtime.table.header}))
        rows = [row for seed in self.opts.seeds for row in self._run_seed(seed)]
        measured = self._measure([r["arch"] for r in rows])
        for row, m in zip(rows, measured):
            row["measured_latency"] = m
            row["range_fraction"] = range_position(row["predicted_latency"], self.runtime)["range_fraction"]
        result = {"space": self.space.name, "data": self.data.name, "device": self.runtime.table.header.device,
                  "units": self.runtime.units, "target": self.opts.target, "supernet_epochs": self.opts.supernet_epochs,
                  "target_spec": self.opts.target_spec,  # as given: a cost, or P% of latency_range
                  "latency_range": range_position(0.0, self.runtime)["latency_range"],
                  "evaluations": self.opts.evaluations, "train_epochs": self.opts.recipe.epochs,
                  "seeds": list(self.opts.seeds),
                  "random_archs": self.opts.random_archs if RANDOM_ARCH in self.opts.strategies else None,
                  "results": rows, "aggregate": aggregate(rows), "notes": self.notes}
        atomic_write_text(self.out / "compare.yaml", dump_yaml(result))
        write_compare_report(self.out, result)
        return result

    def _run_seed(self, seed: int) -> list[dict[str, Any]]:
        """The rows of one seed: its shared supernet, each strategy's search and training, the random-arch draws."""
        shared = self._shared_supernet(seed) if "sampling" in self.kinds.values() else None
        rows = []
        for name in self.opts.strategies:
            if name == RANDOM_ARCH:
                rows += self._random_archs(seed)
                continue
            found = self._search(seed, name)
            trained = self._train(seed, name, found["arch"])
            sampling = self.kinds[name] == "sampling"
            rows.append(_row(
                seed, name, found["arch"], found["predicted_latency"], trained, units=found["units"],
                supernet_val_accuracy=found["supernet_val_accuracy"],
                search_seconds=round(found["search_seconds"] + ((shared or 0.0) if sampling else 0.0), 3),
                search_epochs=self.opts.supernet_epochs, evaluations=found.get("evaluations") if sampling else None,
                shared_supernet_seconds=round(shared, 3) if sampling and shared is not None else None,
                params=found["params"], macs=found["macs"]))
        return rows

    def _random_archs(self, seed: int) -> list[dict[str, Any]]:
        """random-arch for one seed: each drawn architecture trained from scratch in its own stage."""
        draws = self.draws[seed]
        path = self.seed_dir(seed) / f"{RANDOM_ARCH}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, dump_yaml({"seed": seed, "target": self.opts.target, "archs": [
            {"arch": str(a), "predicted_latency": round(lat, 6)} for a, lat in draws]}))
        rows = []
        for i, (arch, latency) in enumerate(draws, 1):
            trained = self._train(seed, f"{RANDOM_ARCH}-{i}", str(arch))
            params, macs = self.space.cost(arch)
            rows.append(_row(seed, RANDOM_ARCH, str(arch), round(latency, 6), trained, draw=i,
                             units=self.runtime.units, supernet_val_accuracy=None, search_seconds=0.0,
                             search_epochs=0, evaluations=None, shared_supernet_seconds=None, params=params,
                             macs=macs))
        return rows

    def _measure(self, archs: list[str]) -> list[float | None]:
        from spnas.latency.profiling import MeasuredDevice

        if not self.opts.measure or not isinstance(self.device, MeasuredDevice):
            return [None] * len(archs)
        cache = self.out / "measured.yaml"
        known = read_yaml(cache) if cache.is_file() else {}
        todo = sorted({a for a in archs if a not in known})
        if todo:
            timings = self.device.measure_networks(self.space, [self.space.parse(a) for a in todo],
                                                   progress=self.progress)
            known.update({a: round(t.median, 6) for a, t in zip(todo, timings)})
            atomic_write_text(cache, dump_yaml(known))
        return [known[a] for a in archs]


def _row(seed: int, strategy: str, arch: str, predicted: float, trained: Mapping[str, Any], *, units: str,
         supernet_val_accuracy: float | None, search_seconds: float, search_epochs: int, evaluations: int | None,
         shared_supernet_seconds: float | None, params: int, macs: int, draw: int | None = None) -> dict[str, Any]:
    """One row of compare.yaml: a found (or drawn) architecture and its training from scratch."""
    return {
        "seed": seed, "strategy": strategy, **({"draw": draw} if draw is not None else {}),
        "arch": arch, "predicted_latency": predicted, "units": units, "supernet_val_accuracy": supernet_val_accuracy,
        "top1": trained["top1"], "top5": trained["top5"],
        **({"test_top1": trained["test_top1"]} if "test_top1" in trained else {}),
        "search_seconds": search_seconds, "search_epochs": search_epochs, "evaluations": evaluations,
        "shared_supernet_seconds": shared_supernet_seconds, "train_seconds": trained["train_seconds"],
        "params": params, "macs": macs,
    }


def budget_notes(strategies: dict[str, tuple[Any, str]], opts: CompareOptions) -> list[str]:
    """Where the budget leaves a strategy unable to act as itself (e.g. evolution that never gets
    past its random first generation)."""
    notes = []
    for name, (strategy, kind) in strategies.items():
        population = getattr(strategy.options, "population", None)
        if kind != "sampling" or not isinstance(population, int):
            continue
        if population >= opts.evaluations:
            notes.append(f"{name}: its population ({population}) is not smaller than --evaluations "
                         f"({opts.evaluations}), so it evaluated only its random first generation: "
                         f"it searched as random search does")
        elif -(-opts.evaluations // population) < 3:
            notes.append(f"{name}: --evaluations {opts.evaluations} leaves {-(-opts.evaluations // population)} "
                         f"generations of {population}, the random first one included; give at least "
                         f"{3 * population} for 3")
    return notes




@dataclass
class CompareOutcome:
    """A finished comparison: ``record`` is compare.yaml (``results``: one row per seed and strategy,
    ``aggregate``: mean, std and every value over seeds), ``run_dir`` its directory (a temporary one
    with ``out=None``, kept as long as this object)."""

    record: dict[str, Any]
    run_dir: Path
    _tmp: Any = field(default=None, repr=False)

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.record["results"]

    @property
    def aggregate(self) -> list[dict[str, Any]]:
        return self.record["aggregate"]

    @property
    def report(self) -> Path:
        return self.run_dir / "report.md"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.record)

    def __repr__(self) -> str:
        means = ", ".join(f"{a['strategy']}={a['top1_mean']:.4f}" for a in self.aggregate)
        return f"CompareOutcome({means}, run_dir='{self.run_dir}')"


def run_compare(strategies: Sequence[str] | str = CompareOptions.strategies, space: SpaceGraph | str | Path = "spnas-cifar",
                *, device: str = "tflite", data: DataSplit | str = "digits", target: float | str | None = None,
                out: str | Path | None = None, seeds: Sequence[int] | int = (0,), supernet_epochs: int = 8,
                evaluations: int = 100, random_archs: int = 3, measure: bool = True,
                recipe: TrainRecipe | str | None = None, table: Any = None,
                device_options: Mapping[str, Any] | None = None, val_fraction: float = 0.2,
                accelerator: str | None = None, resume: bool = False, progress: bool = False,
                targets: Sequence[Any] | str | None = None, **recipe_options: Any) -> CompareOutcome:
    """Run a comparison; see :func:`spnas.compare`."""
    import tempfile

    from spnas.latency.device import make_device
    from spnas.pipeline.search import accelerator_name, load_space, prepare_data, resolve_runtime
    from spnas.pipeline.train import make_recipe

    if isinstance(strategies, str):
        strategies = tuple(n.strip() for n in strategies.split(",") if n.strip())
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        if seeds < 1:
            raise SpnasError(f"--seeds {seeds}: a count must be >= 1")
        seeds = tuple(range(seeds))
    specs = None
    if targets is not None:
        from spnas.pipeline.sweep import parse_targets

        if target is not None:
            raise SpnasError("--target and --targets: give one (--targets compares at each target)")
        specs = parse_targets(targets)
        target = specs[0]
    opts = CompareOptions(strategies=tuple(strategies), target=target, supernet_epochs=supernet_epochs,
                          evaluations=evaluations, recipe=make_recipe(recipe, **recipe_options), seeds=tuple(seeds),
                          random_archs=random_archs, measure=measure)
    graph, data = prepare_data(load_space(space), data, val_fraction)
    runtime = resolve_runtime(graph, device, table, device_options)
    dev = make_device(device, **dict(device_options or {})) if measure else None
    accel = accelerator_name(accelerator)
    tmp = tempfile.TemporaryDirectory(prefix="spnas-compare-") if out is None else None
    out = Path(tmp.name if tmp else out)
    try:
        if specs is None:
            record = Comparison(graph, data, runtime, dev, out, opts, accelerator=accel, resume=resume,
                                progress=progress).run()
        else:
            record = _compare_targets(graph, data, runtime, dev, out, opts, specs, accel, resume, progress)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    return CompareOutcome(record, out, _tmp=tmp)


def _compare_targets(space, data, runtime, device, out: Path, opts: CompareOptions, specs: list[str], accel: str,
                     resume: bool, progress: bool) -> dict[str, Any]:
    """``spnas compare --targets``: one comparison per target in ``out/target-<spec>/``, sharing
    what does not depend on the target: each seed's uniform supernet (trained with the first
    target's comparison, reused by the others) and single-path's warm-up (trained once per seed in
    ``out/warmup/``, forked into every target's search). ``compare-front.yaml``, ``report.md`` and
    ``plots/front.png`` show each strategy's front of networks trained from scratch."""
    from spnas.pipeline.sweep import target_dir
    from spnas.report.compare import write_compare_front_report

    out.mkdir(parents=True, exist_ok=True)
    comparisons: list[Comparison] = []
    for spec in specs:  # every target checked (reachable, random-arch's window) before anything trains
        comparisons.append(Comparison(space, data, runtime, device, out / target_dir(spec),
                                      dataclasses.replace(opts, target=spec, target_spec=spec), accelerator=accel,
                                      resume=resume and (out / target_dir(spec) / "compare-config.yaml").exists(),
                                      progress=progress, supernets_from=comparisons[0] if comparisons else None,
                                      warmups=out / "warmup"))
    records = [c.run() for c in comparisons]
    rows = [{**r, "target_spec": spec} for spec, record in zip(specs, records) for r in record["results"]]
    agg = [{**a, "target_spec": spec, "target": record["target"]} for spec, record in zip(specs, records)
           for a in record["aggregate"]]
    front = {"kind": "compare front", "space": space.name, "data": data.name, "device": runtime.table.header.device,
             "units": runtime.units, "targets": specs, "seeds": list(opts.seeds),
             "strategies": list(opts.strategies), "supernet_epochs": opts.supernet_epochs,
             "evaluations": opts.evaluations, "train_epochs": opts.recipe.epochs,
             "latency_range": records[0].get("latency_range"), "runs": [target_dir(s) for s in specs],
             "results": rows, "aggregate": agg}
    atomic_write_text(out / "compare-front.yaml", dump_yaml(front))
    write_compare_front_report(out, front)
    return front
