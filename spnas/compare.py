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
   (:mod:`spnas.train`), and its whole network is measured when the device can measure;
4. ``report.md``, ``compare.yaml`` and ``plots/compare.png`` in the output directory.

Search cost is reported in wall time and in epochs: the supernet epochs (for sampling strategies,
the shared supernet's, paid once for all of them) plus, for sampling strategies, the candidates
evaluated. Every stage lives in its own run directory; a rerun with ``--resume`` skips finished
stages and resumes the unfinished one.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spnas.data import DataSplit
from spnas.errors import SpnasError
from spnas.graph import SpaceGraph
from spnas.runs import RunDir, atomic_write_text, dump_yaml, read_yaml
from spnas.report import try_write_report
from spnas.runtime import RuntimeModel
from spnas.train import TrainRecipe


@dataclass(frozen=True)
class CompareOptions:
    strategies: tuple[str, ...] = ("single-path", "random", "evolution", "rl")
    target: float | None = None
    supernet_epochs: int = 8
    evaluations: int = 100
    recipe: TrainRecipe = field(default_factory=TrainRecipe)
    seed: int = 0
    measure: bool = True

    def __post_init__(self) -> None:
        if not self.strategies:
            raise SpnasError("--strategies: empty; name at least one strategy (see 'spnas plugins')")
        if len(set(self.strategies)) != len(self.strategies):
            raise SpnasError(f"--strategies {','.join(self.strategies)}: a strategy is named twice")
        if self.supernet_epochs < 1:
            raise SpnasError(f"--supernet-epochs {self.supernet_epochs} is not allowed; use >= 1")
        if self.evaluations < 1:
            raise SpnasError(f"--evaluations {self.evaluations} is not allowed; use >= 1")
        if self.target is not None and not self.target > 0:
            raise SpnasError(f"--target {self.target} is not allowed; use a latency > 0")


def _strategy(name: str, opts: CompareOptions, supernet: Path | None):
    """The registered strategy ``name`` with the comparison's budget and constraint."""
    from spnas.registry import get_registry
    from spnas.sampling import SamplingStrategy
    from spnas.strategy import DifferentiableStrategy

    cls = get_registry().get("strategy", name)
    fields = {f.name for f in dataclasses.fields(cls.Options)}
    values: dict[str, Any] = {"target": opts.target}
    if issubclass(cls, SamplingStrategy):
        values.update(evaluations=opts.evaluations, supernet=str(supernet) if supernet else None)
        kind = "sampling"
    elif issubclass(cls, DifferentiableStrategy) or "epochs" in fields:
        values.update(epochs=opts.supernet_epochs)
        kind = "differentiable"
    else:
        kind = "other"
    values = {k: v for k, v in values.items() if k in fields and v is not None}
    return cls.from_options(values), kind


class Comparison:
    """One bake-off in ``out`` (see the module docstring)."""

    def __init__(self, space: SpaceGraph, data: DataSplit, runtime: RuntimeModel, device: Any, out: Path,
                 opts: CompareOptions, *, accelerator: str = "cpu", resume: bool = False, progress: bool = True):
        self.space, self.data, self.runtime, self.device = space, data, runtime, device
        self.out, self.opts, self.accelerator = Path(out), opts, torch.device(accelerator)
        self.resume, self.progress = resume, progress
        marker = self.out / "compare-config.yaml"
        if marker.exists() and not resume:
            raise SpnasError(f"{self.out}: already holds a comparison; pass --resume to continue it, or choose "
                             f"another --out")
        if resume and not marker.exists():
            raise SpnasError(f"{self.out}: nothing to resume (no compare-config.yaml)")
        # every strategy exists and accepts the constraint before anything is trained (the shared
        # supernet does not exist yet: the strategies that will use it are checked without it)
        for strategy, _ in (_strategy(n, opts, None) for n in opts.strategies):
            strategy.check(space, runtime)
        self.strategies = {n: _strategy(n, opts, self.supernet_path) for n in opts.strategies}
        self.notes = budget_notes(self.strategies, opts)

    @property
    def supernet_path(self) -> Path:
        return self.out / "supernet" / "supernet.pt"

    def _stage(self, name: str) -> tuple[RunDir, bool]:
        """The run directory of a stage, and whether it resumes."""
        path = self.out / name
        resume = self.resume and (path / "checkpoint.pt").exists()
        return RunDir(path, resume=resume), resume

    def _shared_supernet(self) -> float:
        """Train the shared supernet unless it exists; returns the seconds it took (recorded)."""
        from spnas.oneshot import UniformTraining, train_uniform

        info = self.out / "supernet" / "seconds.yaml"
        if self.supernet_path.is_file() and info.is_file():
            return float(read_yaml(info)["seconds"])
        run, resume = self._stage("supernet")
        start = time.perf_counter()
        try:
            train_uniform(self.space, self.data, UniformTraining(epochs=self.opts.supernet_epochs), run,
                          seed=self.opts.seed, device=self.accelerator, resume=resume, progress=self.progress)
        finally:
            run.close()
        seconds = time.perf_counter() - start
        atomic_write_text(info, dump_yaml({"seconds": round(seconds, 3)}))
        return seconds

    def _search(self, name: str) -> dict[str, Any]:
        from spnas.strategy import SearchContext

        path = self.out / f"search-{name}"
        if (path / "result.yaml").is_file():
            return read_yaml(path / "result.yaml")
        strategy, _ = self.strategies[name]
        run, resume = self._stage(f"search-{name}")
        run.write_config({"command": "compare/search", "strategy": name, "space": self.space.name,
                          "options": dataclasses.asdict(strategy.options), "seed": self.opts.seed,
                          "table_header": self.runtime.table.header})
        ctx = SearchContext(self.space, self.data, self.runtime, run, seed=self.opts.seed,
                            accelerator=self.accelerator, resume=resume, progress=self.progress)
        start = time.perf_counter()
        try:
            result = strategy.search(ctx)
        finally:
            run.close()
        out = result.to_dict()
        out["search_seconds"] = round(time.perf_counter() - start, 3)
        run.write_result(out)
        try_write_report(run.path)  # the stage's own report; a failure costs only that
        return out

    def _train(self, name: str, arch: str) -> dict[str, Any]:
        from spnas.train import train

        path = self.out / f"train-{name}"
        if (path / "result.yaml").is_file():
            return read_yaml(path / "result.yaml")
        run, resume = self._stage(f"train-{name}")
        run.write_config({"command": "compare/train", "arch": arch, "space": self.space.name,
                          "recipe": self.opts.recipe, "seed": self.opts.seed})
        try:
            result = train(self.space, self.space.parse(arch), self.data, self.opts.recipe, run,
                           seed=self.opts.seed, device=self.accelerator, resume=resume, progress=self.progress)
        finally:
            run.close()
        run.write_result(result)
        try_write_report(run.path)  # the stage's own report; a failure costs only that
        return result

    def run(self) -> dict[str, Any]:
        """Every stage, then ``compare.yaml``, ``report.md`` and the plot; returns compare.yaml's content."""
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "compare-config.yaml", dump_yaml({
            "space": self.space.name, "data": self.data.name, "options": self.opts,
            "table_header": self.runtime.table.header}))
        kinds = {n: k for n, (_, k) in self.strategies.items()}
        shared = self._shared_supernet() if "sampling" in kinds.values() else None
        rows = []
        for name in self.opts.strategies:
            found = self._search(name)
            trained = self._train(name, found["arch"])
            sampling = kinds[name] == "sampling"
            rows.append({
                "strategy": name, "arch": found["arch"], "predicted_latency": found["predicted_latency"],
                "units": found["units"], "supernet_val_accuracy": found["supernet_val_accuracy"],
                "top1": trained["top1"], "top5": trained["top5"],
                **({"test_top1": trained["test_top1"]} if "test_top1" in trained else {}),
                "search_seconds": round(found["search_seconds"] + ((shared or 0.0) if sampling else 0.0), 3),
                "search_epochs": self.opts.supernet_epochs,
                "evaluations": found.get("evaluations") if sampling else None,
                "shared_supernet_seconds": round(shared, 3) if sampling and shared is not None else None,
                "train_seconds": trained["train_seconds"], "params": found["params"], "macs": found["macs"],
            })
        measured = self._measure([r["arch"] for r in rows])
        for row, m in zip(rows, measured):
            row["measured_latency"] = m
        result = {"space": self.space.name, "data": self.data.name, "device": self.runtime.table.header.device,
                  "units": self.runtime.units, "target": self.opts.target, "supernet_epochs": self.opts.supernet_epochs,
                  "evaluations": self.opts.evaluations, "train_epochs": self.opts.recipe.epochs,
                  "seed": self.opts.seed, "results": rows, "notes": self.notes}
        atomic_write_text(self.out / "compare.yaml", dump_yaml(result))
        write_compare_report(self.out, result)
        return result

    def _measure(self, archs: list[str]) -> list[float | None]:
        from spnas.profiling import MeasuredDevice

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


def budget_notes(strategies: dict[str, tuple[Any, str]], opts: CompareOptions) -> list[str]:
    """Where the budget leaves a strategy unable to act as itself (e.g. evolution that never gets
    past its random first generation)."""
    notes = []
    for name, (strategy, kind) in strategies.items():
        population = getattr(strategy.options, "population", None)
        if kind == "sampling" and isinstance(population, int) and population >= opts.evaluations:
            notes.append(f"{name}: its population ({population}) is not smaller than --evaluations "
                         f"({opts.evaluations}), so it evaluated only its random first generation: "
                         f"it searched as random search does")
    return notes


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def write_compare_report(out: Path, result: dict[str, Any]) -> Path:
    """``report.md`` and ``plots/compare.png`` of a comparison (also rebuilt by ``spnas report``)."""
    out = Path(out)
    from spnas.plots import plot_comparison

    plot_comparison(result["results"], out / "plots" / "compare.png", units=result["units"],
                    device=result["device"], target=result.get("target"), title=f"{result['space']}: found architectures")
    u = result["units"]
    lines = [f"# Strategy comparison on {result['space']}", "",
             f"Data `{result['data']}`, device `{result['device']}` ({u}), target "
             f"{_fmt(result.get('target'), 'g')}, seed {result['seed']}. Budget: {result['supernet_epochs']} supernet "
             f"epochs each (sampling strategies share one uniform supernet and evaluate up to "
             f"{result['evaluations']} candidates); every found network trained from scratch for "
             f"{result['train_epochs']} epochs with the same recipe.", "",
             f"| strategy | architecture | predicted ({u}) | measured | supernet acc. | top-1 | top-5 | "
             f"search (s) | search epochs | evaluations | training (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        arch = str(r["arch"]).replace("|", "\\|")  # a bare | would end the table cell
        lines.append(f"| {r['strategy']} | `{arch}` | {_fmt(r['predicted_latency'])} | "
                     f"{_fmt(r.get('measured_latency'))} | {_fmt(r['supernet_val_accuracy'])} | {_fmt(r['top1'])} | "
                     f"{_fmt(r['top5'])} | {_fmt(r['search_seconds'], '.1f')} | {r['search_epochs']} | "
                     f"{_fmt(r.get('evaluations'), 'd')} | {_fmt(r['train_seconds'], '.1f')} |")
    notes = [f"- {n}" for n in result.get("notes") or []]
    lines += ([""] + ["Notes:", ""] + notes if notes else [])
    lines += ["", "Search time of sampling strategies includes the shared supernet's training "
              "(paid once for all of them, counted for each). One seed proves no ranking: repeat with "
              "other `--seed` values before drawing conclusions.", "", "![comparison](plots/compare.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
