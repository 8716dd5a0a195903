"""``report.md`` and plots of a run directory (``spnas report RUN_DIR``; ``spnas search`` writes one too).

:func:`write_report` reads what the run holds (config.yaml, result.yaml, log.jsonl, supernet.pt),
decides the kind of run, draws the plots that apply into ``<run>/plots/`` (see
:mod:`spnas.report.plots`) and writes ``<run>/report.md`` with the key numbers and relative links to the
plots. A run that lacks something (an unfinished run, a torn log line, a supernet file that moved)
gets the parts that can be made and a note for each missing one, never a traceback.

The kind of run decides what the report shows: a ``spnas compare`` directory, a ``spnas train``
run, or a search. A search's report is built by its strategy: the registered strategy class's
``report(run, report)`` (:attr:`spnas.searching.strategy.Strategy.report`; single-path's draws the
paper's figures), else the default of its kind (:func:`build_sampling` for a sampling strategy,
:func:`build_search` for any other). A plugin strategy builds its own with the helpers here
(:func:`search_facts`, :func:`add_plot`, :func:`architecture_plot`, :func:`superkernel_plot`,
:func:`arch_block`, :func:`num`, :func:`pct`, :func:`seconds`); see docs/plugins.md.

Example:
    >>> write_report("runs/single-path-tiny-20260101-120000")      # doctest: +SKIP
    PosixPath('runs/single-path-tiny-20260101-120000/report.md')
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from spnas.core.errors import SpnasError
from spnas.core.runs import atomic_write_text

REPORT_FILE = "report.md"
PLOTS_DIR = "plots"


@dataclass
class RunFiles:
    """What a run directory holds, read leniently: a file that is missing or broken is empty here
    and named in ``notes``."""

    path: Path
    config: dict
    result: dict
    records: list[dict]
    notes: list[str] = field(default_factory=list)

    @property
    def options(self) -> dict:
        options = self.config.get("options")
        return options if isinstance(options, dict) else {}

    @property
    def units(self) -> str:
        header = self.config.get("table_header")
        return str(self.result.get("units") or (header.get("units") if isinstance(header, dict) else "") or "")


@dataclass
class Report:
    """The parts of one report: a title, key numbers, plots and free Markdown blocks."""

    kind: str
    facts: list[tuple[str, str]] = field(default_factory=list)
    plots: list[tuple[str, str]] = field(default_factory=list)  # (caption, path relative to the run)
    blocks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fact(self, name: str, value: Any) -> None:
        if value is not None and value != "":
            self.facts.append((name, str(value)))


Builder = Callable[[RunFiles, Report], None]


def read_run(path: str | Path) -> RunFiles:
    """Read a run directory; a SpnasError when ``path`` is not one (neither config.yaml nor result.yaml)."""
    path = Path(path)
    if not path.is_dir():
        raise SpnasError(f"{path}: no such run directory")
    if not (path / "config.yaml").is_file() and not (path / "result.yaml").is_file():
        raise SpnasError(f"{path}: not a run directory (no config.yaml and no result.yaml); "
                         f"give the --out directory of a 'spnas search' or 'spnas train' run")
    notes: list[str] = []
    config = _read_yaml(path / "config.yaml", notes)
    result = _read_yaml(path / "result.yaml", notes)
    if not (path / "result.yaml").is_file():
        notes.append("no result.yaml: the run has not finished (or was interrupted); this report shows its progress")
    records: list[dict] = []
    log = path / "log.jsonl"
    if log.is_file():
        bad = 0
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad += 1
        if bad:
            notes.append(f"log.jsonl: {bad} unreadable line(s) skipped (a torn last line of a killed run is one)")
    else:
        notes.append("no log.jsonl")
    return RunFiles(path, config, result, records, notes)


def _read_yaml(path: Path, notes: list[str]) -> dict:
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        notes.append(f"{path.name}: unreadable ({type(exc).__name__}); left out")
        return {}
    if not isinstance(data, dict):
        notes.append(f"{path.name}: not a mapping; left out")
        return {}
    return data


# --- kinds ---------------------------------------------------------------------------------
def _is_train(run: RunFiles) -> bool:
    return run.result.get("kind") == "train" or run.config.get("command") == "train"


def strategy_of(run: RunFiles) -> Any:
    """The registered strategy class of a search run, or None (no name recorded, or its plugin is
    not installed here)."""
    from spnas.core.registry import get_registry

    name = run.result.get("strategy") or run.config.get("strategy")
    if not isinstance(name, str):
        return None
    try:
        return get_registry().get("strategy", name)
    except SpnasError:
        return None


def _builder(run: RunFiles) -> tuple[str, Builder]:
    """The kind of ``run`` and the function that builds its report."""
    from spnas.searching.sampling import SamplingStrategy

    if _is_train(run):
        return "train", build_train
    cls = strategy_of(run)
    own = getattr(cls, "report", None)
    if callable(own):
        return f"{cls.name} search", own
    if (isinstance(cls, type) and issubclass(cls, SamplingStrategy)) or (
            cls is None and ("pareto_front" in run.result or any("trial" in r for r in run.records))):
        return "sampling search", build_sampling
    return "search", build_search


def run_kind(run: RunFiles) -> str:
    """The kind of ``run``: ``train``, ``<strategy> search`` (a strategy with its own report),
    ``sampling search`` or ``search``."""
    return _builder(run)[0]


# --- formatting ------------------------------------------------------------------------------
def num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def count(value: Any, unit: str = "M") -> str | None:
    v = num(value)
    return None if v is None else f"{int(v):,} ({v / 1e6:.3f} {unit})"


def pct(value: Any) -> str | None:
    v = num(value)
    return None if v is None else f"{v:.4f} ({100 * v:.2f} %)"


def seconds(value: Any) -> str | None:
    v = num(value)
    if v is None:
        return None
    return f"{v:.1f} s" if v < 120 else f"{v:.1f} s ({v / 60:.1f} min)"


def _table_origin(config: dict) -> str | None:
    header = config.get("table_header")
    if not isinstance(header, dict):
        return None
    runtime = ", ".join(str(header[k]) for k in ("runtime", "runtime_version") if header.get(k))
    parts = [runtime] if runtime else []
    parts += [f"{k} {header[k]}" for k in ("threads", "host", "date") if header.get(k) not in (None, "")]
    if header.get("source"):
        parts.append(f"source: {header['source']}")
    return "; ".join(parts) or None


def esc(text: Any) -> str:
    """A Markdown table cell: '|' would end the cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


# --- plots -----------------------------------------------------------------------------------
def add_plot(run: RunFiles, report: Report, name: str, caption: str, draw: Callable[[Path], Any]) -> None:
    """Draw one plot to ``plots/<name>.png``; a failure becomes a note (and no stale file stays)."""
    path = run.path / PLOTS_DIR / f"{name}.png"
    try:
        draw(path)
    except Exception as exc:  # a plot must never cost the report (or the search) its other parts
        path.unlink(missing_ok=True)
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        report.notes.append(f"{caption}: not drawn ({type(exc).__name__}{': ' + first if first else ''})")
        return
    report.plots.append((caption, f"{PLOTS_DIR}/{name}.png"))


def _not_drawn(run: RunFiles, report: Report, name: str, why: str) -> None:
    """A plot that does not apply: a note, and no stale file of an earlier report left behind."""
    (run.path / PLOTS_DIR / f"{name}.png").unlink(missing_ok=True)
    report.notes.append(why)


def _space(run: RunFiles):
    """The run's SpaceGraph, or None when it cannot be loaded any more."""
    from spnas.space.graph import SpaceGraph

    for name in (run.config.get("space"), run.result.get("space"), run.config.get("space_name")):
        if isinstance(name, str) and name:
            try:
                return SpaceGraph.load(name)
            except (SpnasError, OSError):
                continue
    return None


def architecture_plot(run: RunFiles, report: Report) -> None:
    from spnas.report import plots

    arch = run.result.get("arch")
    if not isinstance(arch, str):
        _not_drawn(run, report, "architecture", "architecture: not drawn (no architecture in result.yaml)")
        return
    space = _space(run)
    choices: list[str] = []
    labels: list[str] = []
    if space is not None and space.num_searchable == len(arch.replace("|", " ").split()):
        choices = sorted({str(op) for layer in space.searchable for op in layer.ops})
        labels = [f"c{l.out_chs} s{l.stride}" for l in space.searchable]
    add_plot(run, report, "architecture", "Architecture", lambda p: plots.plot_architecture(
        arch, p, choices=choices, layer_labels=labels, title=f"{run.result.get('space', '')}: {arch}"))


def _supernet_state(run: RunFiles, report: Report) -> dict | None:
    """The weights of the run's supernet: supernet.pt here, else the one result.yaml names, else a
    single-path checkpoint (an unfinished search). Loaded with ``weights_only=True``."""
    from spnas.core.runs import load_checkpoint

    candidates = [run.path / "supernet.pt"]
    named = run.result.get("supernet")
    if isinstance(named, str) and named:
        candidates.append(Path(named))
    candidates.append(run.path / "checkpoint.pt")
    for path in candidates:
        if not path.is_file():
            continue
        try:
            state = load_checkpoint(path)
        except SpnasError as exc:
            report.notes.append(f"superkernel maps: {exc}")
            continue
        if isinstance(state.get("model"), dict):
            return state["model"]
    return None


def superkernel_plot(run: RunFiles, report: Report) -> None:
    from spnas.report import plots

    state = _supernet_state(run, report)
    if state is None:
        _not_drawn(run, report, "superkernels",
                   "superkernel maps: not drawn (no supernet.pt or single-path checkpoint found)")
        return
    ops = run.result.get("ops") if isinstance(run.result.get("ops"), list) else []

    def draw(path: Path):
        maps = plots.superkernel_maps(state)
        titles = [f"{i}: {ops[i]}" if len(ops) == len(maps) else f"layer {i}" for i in range(len(maps))]
        return plots.plot_superkernels(maps, path, titles=titles)

    add_plot(run, report, "superkernels", "Superkernels (std across channels, log scale)", draw)


# --- builders --------------------------------------------------------------------------------
def range_text(r: dict) -> str:
    b = r.get("latency_range")
    return f"{b[0]:.4g}-{b[1]:.4g}" if isinstance(b, list) and len(b) == 2 and None not in map(num, b) else ""


def search_facts(run: RunFiles, report: Report) -> None:
    r, c = run.result, run.config
    report.fact("strategy", r.get("strategy") or c.get("strategy"))
    report.fact("space", r.get("space") or c.get("space_name") or c.get("space"))
    device = c.get("device")
    if device and c.get("device_table"):
        device = f"{device} (table {c['device_table']})"
    report.fact("device", device)
    if isinstance(c.get("device_options"), list) and c["device_options"]:
        report.fact("device options", ", ".join(map(str, c["device_options"])))
    report.fact("latency table", _table_origin(c))
    report.fact("data", c.get("data"))
    report.fact("seed", c.get("seed"))
    latency = num(r.get("predicted_latency"))
    if latency is not None:
        where = num(r.get("range_fraction"))  # 0..1 of the space's range on the device
        report.fact("predicted latency", f"{r['predicted_latency']} {run.units}".rstrip()
                    + (f", {where * 100:.0f}% of the space's range {range_text(r)}" if where is not None else ""))
    report.fact("supernet val accuracy", pct(r.get("supernet_val_accuracy")))
    report.fact("params", count(r.get("params")))
    report.fact("MACs", count(r.get("macs")))


def arch_block(run: RunFiles, report: Report, heading: str = "Architecture") -> None:
    arch = run.result.get("arch")
    if isinstance(arch, str):
        report.blocks.insert(0, f"## {heading}\n\n    {arch}\n")


def _constraint(opts: dict) -> tuple[float, float] | None:
    """The sampling constraint from the resolved options (as :meth:`spnas.searching.sampling.Constraint.from_options`)."""
    from spnas.searching.target import WINDOW

    if num(opts.get("target")) is not None:
        return (1 - WINDOW) * opts["target"], float(opts["target"])
    if num(opts.get("max_latency")) is not None:
        return 0.0, float(opts["max_latency"])
    window = opts.get("latency_window")
    if isinstance(window, (list, tuple)) and len(window) == 2 and all(num(v) is not None for v in window):
        return float(window[0]), float(window[1])
    return None


def build_sampling(run: RunFiles, report: Report) -> None:
    """A sampling search (random, evolution, rl, a plugin's): candidates, Pareto front, architecture."""
    from spnas.report import plots

    r = run.result
    search_facts(run, report)
    report.fact("latency constraint", r.get("constraint"))
    trials = [x for x in run.records if "trial" in x]
    report.fact("evaluations", r.get("evaluations", sum(1 for t in trials if t.get("status") == "evaluated")))
    report.fact("asks", r.get("asks"))
    report.fact("stop reason", r.get("stop_reason"))
    front = r.get("pareto_front") if isinstance(r.get("pareto_front"), list) else []
    report.fact("Pareto front", f"{len(front)} architectures" if front else None)
    report.fact("supernet", r.get("supernet"))
    report.fact("search wall time", seconds(r.get("search_seconds")))
    arch_block(run, report, "Architecture (the most accurate candidate)")
    if front:
        rows = [f"| {esc(p.get('latency'))} | {esc(pct(p.get('accuracy')))} | `{esc(p.get('arch'))}` |"
                for p in front if isinstance(p, dict)]
        report.blocks.append(f"## Pareto front\n\n| latency ({run.units}) | accuracy | architecture |\n|---|---|---|\n"
                             + "\n".join(rows) + "\n")
    chosen = ({"latency": r.get("predicted_latency"), "accuracy": r.get("supernet_val_accuracy")}
              if "predicted_latency" in r else None)
    add_plot(run, report, "candidates", "Candidates (accuracy against latency)", lambda p: plots.plot_candidates(
        trials, p, pareto=front, chosen=chosen, constraint=_constraint(run.options), units=run.units,
        title=f"{r.get('strategy', 'sampling')} on {r.get('space') or run.config.get('space_name', '')}"))
    architecture_plot(run, report)
    superkernel_plot(run, report)


def build_train(run: RunFiles, report: Report) -> None:
    """A ``spnas train`` run: training curves and the architecture."""
    from spnas.report import plots

    r, c = run.result, run.config
    report.fact("space", r.get("space") or c.get("space_name") or c.get("space"))
    report.fact("data", c.get("data"))
    for key in ("top1", "top5", "test_top1", "test_top5"):
        report.fact(key.replace("_", " "), pct(r.get(key)))
    report.fact("params", count(r.get("params")))
    report.fact("MACs", count(r.get("macs")))
    epochs = [x for x in run.records if num(x.get("epoch")) is not None]
    if epochs:
        report.fact("epochs logged", len(epochs))
        best = [x for x in epochs if num(x.get("val_top1")) is not None]
        if best:
            top = max(best, key=lambda x: x["val_top1"])
            report.fact("best val top-1", f"{pct(top['val_top1'])} at epoch {top['epoch']}")
    report.fact("wall time", seconds(r.get("train_seconds", r.get("seconds"))))
    arch_block(run, report)
    add_plot(run, report, "training", "Training curves", lambda p: plots.plot_training(
        run.records, p, test_top1=num(r.get("test_top1")), test_top5=num(r.get("test_top5")),
        title=f"training {r.get('arch', '')}"))
    architecture_plot(run, report)


def build_search(run: RunFiles, report: Report) -> None:
    """A search by a strategy without its own report: the common facts, the other plain values of
    result.yaml, and the architecture."""
    search_facts(run, report)
    known = {name for name, _ in report.facts}
    for key, value in run.result.items():
        if key in known or key in ("strategy", "space", "predicted_latency", "supernet_val_accuracy", "params", "macs"):
            continue
        if isinstance(value, (str, int, float, bool)) and key not in ("arch", "run_dir"):
            report.fact(key, value)
    arch_block(run, report)
    if isinstance(run.result.get("arch"), str):
        architecture_plot(run, report)




# --- the report ------------------------------------------------------------------------------
def build_report(run: RunFiles) -> Report:
    """Detect the kind of ``run`` and build its parts (drawing the plots)."""
    kind, builder = _builder(run)
    report = Report(kind)
    builder(run, report)  # plots import matplotlib when drawn: without it, each plot becomes a note
    report.notes[:0] = run.notes
    return report


def render(run: RunFiles, report: Report) -> str:
    """The Markdown text of ``report.md``."""
    lines = [f"# {run.path.name}: {report.kind}", ""]
    if report.facts:
        lines += ["| | |", "|---|---|"]
        lines += [f"| {esc(k)} | {esc(v)} |" for k, v in report.facts]
        lines.append("")
    for block in report.blocks:
        lines += [block.rstrip(), ""]
    if report.plots:
        lines += ["## Plots", ""]
        for caption, rel in report.plots:
            lines += [f"### {caption}", "", f"![{caption}]({rel})", ""]
    if report.notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in report.notes] + [""]
    files = sorted(p.name for p in run.path.iterdir() if p.is_file() and not p.name.startswith("."))
    lines += ["## Files", "", ", ".join(f"`{f}`" for f in files if f != REPORT_FILE) or "(none)", ""]
    return "\n".join(lines)


def write_report(run_dir: str | Path) -> Path:
    """Write ``report.md`` and ``plots/*.png`` into a run directory; returns the report's path.

    Raises:
        SpnasError: ``run_dir`` is not a directory, or holds neither config.yaml nor result.yaml.
    """
    fronts = Path(run_dir) / "compare-front.yaml"
    if fronts.is_file():  # spnas compare --targets: the strategies' fronts (each target has its own report)
        from spnas.report.compare import write_compare_front_report

        data = _read_yaml(fronts, [])
        if not isinstance(data.get("aggregate"), list):
            raise SpnasError(f"{fronts}: aggregate: missing or unreadable; expected 'spnas compare --targets' output")
        return write_compare_front_report(Path(run_dir), data)
    front = Path(run_dir) / "front.yaml"
    if front.is_file():  # a sweep's front trained from scratch (spnas train SWEEP_DIR)
        from spnas.report.sweep import write_front_report

        data = _read_yaml(front, [])
        if not isinstance(data.get("points"), list):
            raise SpnasError(f"{front}: points: missing or unreadable; expected the front.yaml of 'spnas train SWEEP_DIR'")
        return write_front_report(Path(run_dir), data)
    sweep = Path(run_dir) / "sweep.yaml"
    if sweep.is_file():  # a sweep over targets (spnas search --targets): the front (its targets have theirs)
        from spnas.report.sweep import write_sweep_report

        data = _read_yaml(sweep, [])
        if not isinstance(data.get("points"), list):
            raise SpnasError(f"{sweep}: points: missing or unreadable; expected the sweep.yaml of 'spnas search --targets'")
        return write_sweep_report(Path(run_dir), data)
    compare = Path(run_dir) / "compare.yaml"
    if compare.is_file():  # a 'spnas compare' directory: its own report (its stages have theirs)
        from spnas.report.compare import write_compare_report

        data = _read_yaml(compare, [])
        if not isinstance(data.get("results"), list):
            raise SpnasError(f"{compare}: results: missing or unreadable; expected the compare.yaml of 'spnas compare'")
        return write_compare_report(Path(run_dir), data)
    run = read_run(run_dir)
    report = build_report(run)
    path = run.path / REPORT_FILE
    atomic_write_text(path, render(run, report))
    return path


def try_write_report(run_dir: str | Path) -> Path | None:
    """:func:`write_report` for a run that has just finished: its result is already on disk, so a
    failure costs only the report (a warning on stderr saying how to retry), never the run."""
    import sys

    try:
        return write_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - a plot must never cost a finished search, training or stage
        print(f"spnas: warning: report not written ({type(exc).__name__}: {exc}); "
              f"retry with 'spnas report {run_dir}'", file=sys.stderr)
        return None


__all__ = ["Report", "RunFiles", "add_plot", "arch_block", "architecture_plot", "build_report", "build_sampling",
           "build_search", "build_train", "count", "esc", "num", "pct", "read_run", "render", "run_kind", "search_facts",
           "seconds", "strategy_of", "superkernel_plot", "try_write_report", "write_report"]
