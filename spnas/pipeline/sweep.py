"""A latency-accuracy front from one search: a shared warm-up, then one runtime phase per target.

``spnas search --targets 30%,50%,70%`` (:func:`run_sweep`; ``spnas.search(targets=[...])``). A
strategy whose first epochs do not depend on the latency target (single-path's warm-up: indicator
dropout, no runtime term; :meth:`~spnas.searching.strategy.DifferentiableStrategy.fork_epoch`)
trains them once. Each target's search then continues from the checkpoint the warm-up left, by the
same exact resume that continues an interrupted search: so each point of the front is, bit for
bit, the search that ``--target`` alone would have run with the same seed and options
(``tests/test_sweep.py``), at the cost of one warm-up instead of one per target.

The output directory holds:

* ``warmup/``: the warm-up's run (its ``checkpoint.pt`` is the fork point, ``fork.yaml`` marks it done);
* ``target-<spec>/``: one complete search run per target (config, log, result, report, supernet.pt),
  its log starting with the warm-up's records;
* ``sweep.yaml``: the front (target, architecture, predicted latency, accuracy, run directory per
  point), the wall times; ``report.md`` and ``plots/front.png`` (accuracy against predicted latency,
  with each target and its window).

``--resume`` continues a sweep killed in any phase: a finished warm-up or target is kept, an
unfinished one resumes from its checkpoint, a target not started forks from the warm-up.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn

from spnas.core.errors import SpnasError
from spnas.core.runs import RunDir, atomic_write_text, dump_yaml, read_yaml
from spnas.data.split import DataSplit
from spnas.latency.table import LatencyTable
from spnas.pipeline.search import (accelerator_name, child_of_run, load_space, prepare_data, resolve_runtime,
                                   run_search, strategy_options)
from spnas.space.graph import SpaceGraph

WARMUP_DIR = "warmup"
FORK_MARKER = "fork.yaml"
SWEEP_FILE = "sweep.yaml"
CONFIG_FILE = "sweep-config.yaml"


def parse_targets(targets: str | Sequence[Any]) -> list[str]:
    """``"30%,50%,70%"`` or a list (``["30%", 0.6]``) as the targets' texts, each checked as a
    ``--target`` (a cost > 0, or ``P%`` with 0 < P <= 100), at least one, none twice."""
    from spnas.searching.target import parse_target

    items = [t.strip() for t in targets.split(",")] if isinstance(targets, str) else [str(t).strip() for t in targets]
    if not items or any(not t for t in items):
        raise SpnasError(f"--targets {targets!r}: give targets separated by commas, e.g. 30%,50%,70% or 0.6,0.8")
    for text in items:
        parse_target(text, "--targets")
    if len(set(items)) != len(items):
        twice = next(t for t in items if items.count(t) > 1)
        raise SpnasError(f"--targets {','.join(items)}: target {twice} is named twice")
    return items


def target_dir(spec: str) -> str:
    """The sub-run of a target: ``target-30pct`` for 30%, ``target-0.6`` for 0.6."""
    return "target-" + spec.replace("%", "pct")


@dataclass
class SweepOutcome:
    """A front: ``points`` are the targets' ``result.yaml`` contents (in the targets' order),
    ``record`` is ``sweep.yaml``, ``run_dir`` the sweep's directory (temporary with ``out=None``,
    kept as long as this object). :meth:`child` hands out a point's network."""

    record: dict[str, Any]
    points: list[dict[str, Any]]
    space: SpaceGraph
    data: DataSplit
    seed: int
    run_dir: Path
    report: Path | None = None
    _tmp: Any = field(default=None, repr=False)

    @property
    def archs(self) -> list[str]:
        return [p["arch"] for p in self.points]

    def child(self, i: int, *, recalibrate: bool = True) -> nn.Module:
        """The network of point ``i`` with its inherited weights (as :meth:`SearchOutcome.child`)."""
        point = self.points[i]
        return child_of_run(self.space, self.space.parse(point["arch"]), point, self.run_dir / point["run"],
                            self.data, self.seed, recalibrate)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.record)

    def __repr__(self) -> str:
        pts = ", ".join(f"{p['target_spec']}: {p['predicted_latency']:.4g} {p['units']} {p['supernet_val_accuracy']:.3f}"
                        for p in self.points)
        return f"SweepOutcome({pts}; run_dir='{self.run_dir}')"


def run_sweep(space: SpaceGraph | str | Path, targets: str | Sequence[Any], strategy: str = "single-path", *,
              device: str = "tflite", data: DataSplit | str = "digits", out: str | Path | None = None,
              options: Mapping[str, Any] | None = None, seed: int = 0, val_fraction: float = 0.2,
              table: LatencyTable | str | Path | None = None, device_options: Mapping[str, Any] | None = None,
              accelerator: str | None = None, resume: bool = False, progress: bool = False, report: bool = True,
              default_out: str | None = None) -> SweepOutcome:
    """Search once per target with one shared warm-up (see the module docstring)."""
    from spnas.core.distributed import launched
    from spnas.core.registry import get_registry
    from spnas.searching.strategy import DifferentiableStrategy
    from spnas.searching.target import range_position, resolve_target

    if launched():
        raise SpnasError("--targets runs in one process; run it without torchrun (each target's search is short "
                         "after the shared warm-up), or launch one --target per job")
    specs = parse_targets(targets)
    cls = get_registry().get("strategy", strategy)
    opts = strategy_options(cls, options or {})
    if opts.get("target") is not None:
        raise SpnasError("--target and --targets: give one (--targets runs one search per target)")
    probe = cls.from_options(opts)
    fork = probe.fork_epoch() if isinstance(probe, DifferentiableStrategy) else None
    if fork is None:
        raise SpnasError(f"strategy {strategy}: --targets needs a strategy whose first epochs do not depend on "
                         f"the target (single-path with a warm-up: --warmup-epochs >= 1); sampling strategies "
                         f"share a supernet across targets with --supernet PATH instead")
    graph, data = prepare_data(load_space(space), data, val_fraction)
    runtime = resolve_runtime(graph, device, table, device_options)
    absolute = [resolve_target(spec, runtime, "--targets") for spec in specs]
    strategies = [cls.from_options({**opts, "target": t}) for t in absolute]
    for s in strategies:  # every target reachable before anything is trained
        s.check(graph, runtime)
    accel = accelerator_name(accelerator)
    tmp = None
    if out is None and default_out is not None:
        out = default_out.format(strategy=strategy, space=graph.name, time=time.strftime("%Y%m%d-%H%M%S"))
    elif out is None:
        tmp = tempfile.TemporaryDirectory(prefix=f"spnas-sweep-{strategy}-")
        out = tmp.name
    out = Path(out)
    marker = out / CONFIG_FILE
    config = {"command": "search", "strategy": strategy, "space": str(space) if isinstance(space, (str, Path))
              else graph.name, "space_name": graph.name, "device": device, "data": data.name, "seed": seed,
              "val_fraction": val_fraction, "targets": specs, "options": dict(opts),
              "table_header": runtime.table.header}
    if marker.exists() and not resume:
        raise SpnasError(f"{out}: already holds a sweep; pass --resume to continue it, or choose another --out")
    if resume and not marker.exists():
        raise SpnasError(f"{out}: nothing to resume (no {CONFIG_FILE})")
    if resume:
        before = read_yaml(marker)
        if isinstance(before, dict) and before.get("targets") != specs:
            raise SpnasError(f"{out}: a sweep over --targets {','.join(map(str, before.get('targets') or []))}; "
                             f"resume it with the same targets, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, dump_yaml(config))
    try:
        start = time.perf_counter()
        warm_seconds = _warm_up(strategies[0], graph, data, runtime, out / WARMUP_DIR, seed, accel, resume, progress,
                                config)
        points = []
        for spec, t, s in zip(specs, absolute, strategies):
            points.append(_target(s, spec, t, graph, data, runtime, out, seed, accel, resume, progress, report))
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    record = {"kind": "sweep", "strategy": strategy, "space": graph.name, "device": device,
              "units": runtime.units, "seed": seed, "targets": specs, "warmup_epochs": fork,
              "epochs": getattr(strategies[0].options, "epochs", None),
              "latency_range": range_position(0.0, runtime)["latency_range"],
              "warmup_seconds": round(warm_seconds, 3), "seconds": round(time.perf_counter() - start, 3),
              "points": [{k: p.get(k) for k in ("target_spec", "target", "arch", "predicted_latency", "units",
                                                "supernet_val_accuracy", "range_fraction", "search_seconds", "run",
                                                "readout_latency", "params", "macs")} for p in points]}
    atomic_write_text(out / SWEEP_FILE, dump_yaml(record))
    outcome = SweepOutcome(record, points, graph, data, seed, out, _tmp=tmp)
    if report:
        from spnas.report.sweep import write_sweep_report

        try:
            outcome.report = write_sweep_report(out, record)
        except Exception as exc:  # noqa: BLE001 - a plot must never cost the finished searches
            import sys

            print(f"spnas: warning: report not written ({type(exc).__name__}: {exc}); retry with 'spnas report {out}'",
                  file=sys.stderr)
    return outcome


def fork(warmup: Path, path: Path) -> None:
    """Start the run ``path`` where the warm-up run ``warmup`` stopped: its checkpoint, log and
    TensorBoard scalars (a resume of ``path`` then continues it exactly)."""
    path.mkdir(parents=True, exist_ok=True)
    if (warmup / "tb").is_dir():  # the resume purges the steps after the checkpoint
        shutil.copytree(warmup / "tb", path / "tb", dirs_exist_ok=True)
    for file in ("log.jsonl", "checkpoint.pt"):  # the checkpoint last: it is what makes the fork count
        src = warmup / file
        if src.is_file():
            tmp = path / f".{file}.tmp"
            shutil.copyfile(src, tmp)
            tmp.replace(path / file)


def _warm_up(strategy, space, data, runtime, path: Path, seed: int, accel: str, resume: bool, progress: bool,
             config: Mapping[str, Any]) -> float:
    """The shared warm-up in ``path`` unless it is done; returns the seconds it took (recorded)."""
    import torch

    from spnas.searching.strategy import SearchContext

    done = path / FORK_MARKER
    if done.is_file():
        return float(read_yaml(done).get("seconds", 0.0))
    start = time.perf_counter()
    run = RunDir(path, resume=resume and (path / "checkpoint.pt").exists())
    run.write_config({**config, "command": "search/warmup", "fork_epoch": strategy.fork_epoch()})
    ctx = SearchContext(space, data, runtime, run, seed=seed, accelerator=torch.device(accel),
                        resume=resume and (path / "checkpoint.pt").exists(), progress=progress)
    try:
        strategy.warm_up(ctx)
    finally:
        run.close()
    seconds = time.perf_counter() - start
    state = run.load_checkpoint()
    atomic_write_text(done, dump_yaml({"epoch": state["epoch"], "step": state["step"], "seconds": round(seconds, 3)}))
    return seconds


def _target(strategy, spec: str, target: float, space, data, runtime, out: Path, seed: int, accel: str,
            resume: bool, progress: bool, report: bool) -> dict[str, Any]:
    """One target's search: finished (kept), unfinished (resumed), or forked from the warm-up."""
    name = target_dir(spec)
    path = out / name
    if (path / "result.yaml").is_file():
        return read_yaml(path / "result.yaml")
    if not (path / "checkpoint.pt").is_file():
        fork(out / WARMUP_DIR, path)
    outcome = run_search(space, strategy, data=data, runtime=runtime, out=path, seed=seed, accelerator=accel,
                         resume=True, progress=progress, report=report,
                         config={"sweep": str(out), "target_spec": spec, "forked_from": f"../{WARMUP_DIR}"},
                         extra={"target_spec": spec, "target": target, "run": name})
    return outcome.record


FRONT_FILE = "front.yaml"


@dataclass
class FrontTrainOutcome:
    """Every point of a front trained from scratch with one recipe: ``points`` are the trainings'
    ``result.yaml`` contents with the point's target and predicted latency; ``record`` is
    ``front.yaml``; ``run_dir`` holds one training run per target."""

    record: dict[str, Any]
    points: list[dict[str, Any]]
    run_dir: Path
    report: Path | None = None
    _tmp: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.record)

    def __repr__(self) -> str:
        pts = ", ".join(f"{p['target_spec']}: {p['predicted_latency']:.4g} {p['top1']:.3f}" for p in self.points)
        return f"FrontTrainOutcome({pts}; run_dir='{self.run_dir}')"


def read_sweep(sweep: Any) -> tuple[Path, dict[str, Any]]:
    """The directory and ``sweep.yaml`` of a sweep (a :class:`SweepOutcome` or its directory)."""
    path = sweep.run_dir if isinstance(sweep, SweepOutcome) else Path(sweep)
    file = path / SWEEP_FILE
    if not file.is_file():
        raise SpnasError(f"{path}: not a sweep (no {SWEEP_FILE}); give the --out of 'spnas search --targets'")
    record = read_yaml(file)
    if not isinstance(record, dict) or not isinstance(record.get("points"), list) or not record["points"]:
        raise SpnasError(f"{file}: points: missing or empty; expected the sweep.yaml of 'spnas search --targets'")
    return path, record


def is_sweep(value: Any) -> bool:
    return isinstance(value, SweepOutcome) or (isinstance(value, (str, Path)) and (Path(value) / SWEEP_FILE).is_file())


def run_train_front(sweep: Any, *, data: DataSplit | str = "digits", out: str | Path | None = None,
                    recipe: Any = None, seed: int = 0, val_fraction: float = 0.2, accelerator: str | None = None,
                    resume: bool = False, progress: bool = False, report: bool = True,
                    **recipe_options: Any) -> FrontTrainOutcome:
    """Train every point of a sweep from scratch with one recipe (``spnas train SWEEP_DIR``), one
    training run per target in ``out``, and report the front of the trained networks."""
    from spnas.pipeline.train import make_recipe, run_train

    path, record = read_sweep(sweep)
    recipe_obj = make_recipe(recipe, **recipe_options)  # a bad recipe fails before anything trains
    config = read_yaml(path / CONFIG_FILE) if (path / CONFIG_FILE).is_file() else {}
    space = load_space(config.get("space") or record["space"]) if isinstance(config, dict) else load_space(record["space"])
    tmp = tempfile.TemporaryDirectory(prefix="spnas-train-front-") if out is None else None
    out = Path(tmp.name if tmp else out)
    if (out / FRONT_FILE).is_file() and not resume:
        raise SpnasError(f"{out}: already holds a trained front; pass --resume, or choose another --out")
    points = []
    try:
        for point in record["points"]:
            sub = out / target_dir(str(point["target_spec"]))
            if (sub / "result.yaml").is_file():
                trained = read_yaml(sub / "result.yaml")
                if trained.get("arch") != point["arch"]:
                    raise SpnasError(f"{sub}: trained {trained.get('arch')!r}, not the front's {point['arch']!r}; "
                                     f"choose another --out")
            else:
                trained = run_train(point["arch"], space, data=data, out=sub, recipe=recipe_obj, seed=seed,
                                    val_fraction=val_fraction, accelerator=accelerator,
                                    resume=resume and (sub / "checkpoint.pt").is_file(), progress=progress,
                                    report=report, config={"command": "train", "front": str(path)}).record
            points.append({**trained, "target_spec": point["target_spec"], "target": point.get("target"),
                           "predicted_latency": point["predicted_latency"], "units": point.get("units"),
                           "supernet_val_accuracy": point.get("supernet_val_accuracy"),
                           "run": sub.name})
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise
    front = {"kind": "trained front", "sweep": str(path), "space": space.name, "device": record.get("device"),
             "units": record.get("units"), "seed": seed, "epochs": recipe_obj.epochs,
             "latency_range": record.get("latency_range"),
             "points": [{k: p.get(k) for k in ("target_spec", "target", "arch", "predicted_latency", "units",
                                               "supernet_val_accuracy", "top1", "top5", "test_top1", "train_seconds",
                                               "run")} for p in points]}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / FRONT_FILE, dump_yaml(front))
    outcome = FrontTrainOutcome(front, points, out, _tmp=tmp)
    if report:
        from spnas.report.sweep import write_front_report

        outcome.report = write_front_report(out, front)
    return outcome
