"""``report.md`` and plots of a run directory (``spnas report RUN_DIR``; ``spnas search`` writes one too).

:func:`write_report` reads what the run holds (config.yaml, result.yaml, log.jsonl, supernet.pt),
decides the kind of run, draws the plots that apply into ``<run>/plots/`` (see
:mod:`spnas.plots`) and writes ``<run>/report.md`` with the key numbers and relative links to the
plots. A run that lacks something (an unfinished run, a torn log line, a supernet file that moved)
gets the parts that can be made and a note for each missing one, never a traceback.

Kinds are tried in :data:`KINDS` order; :func:`register_kind` adds one in front (a more specific
kind wins), so a new kind of run needs a detector and a builder, nothing else::

    register_kind("compare", lambda run: run.result.get("kind") == "compare", build_compare)

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

from spnas.errors import SpnasError
from spnas.runs import atomic_write_text

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


Detector = Callable[[RunFiles], bool]
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


# --- kinds -----------------------------------------------------------------------------------
def _is_train(run: RunFiles) -> bool:
    return run.result.get("kind") == "train" or run.config.get("command") == "train"


def _is_sampling(run: RunFiles) -> bool:
    return ("pareto_front" in run.result or "evaluations" in run.result
            or any("trial" in r for r in run.records))


def _is_single_path(run: RunFiles) -> bool:
    strategy = run.result.get("strategy") or run.config.get("strategy")
    return strategy == "single-path" or any("ce" in r and "R" in r and "step" in r for r in run.records)


#: (name, detector, builder), tried in order; the last one takes any run
KINDS: list[tuple[str, Detector, Builder]] = []


def register_kind(name: str, detect: Detector, build: Builder) -> None:
    """Add a kind of run in front of the others (it wins where its detector says yes); a name
    already registered is replaced."""
    KINDS[:] = [(name, detect, build)] + [k for k in KINDS if k[0] != name]


def run_kind(run: RunFiles) -> str:
    """The name of the first kind whose detector accepts ``run``."""
    return next(name for name, detect, _ in KINDS if detect(run))


# --- formatting ------------------------------------------------------------------------------
def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value: Any, unit: str = "M") -> str | None:
    v = _num(value)
    return None if v is None else f"{int(v):,} ({v / 1e6:.3f} {unit})"


def _pct(value: Any) -> str | None:
    v = _num(value)
    return None if v is None else f"{v:.4f} ({100 * v:.2f} %)"


def _seconds(value: Any) -> str | None:
    v = _num(value)
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


def _esc(text: Any) -> str:
    """A Markdown table cell: '|' would end the cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


# --- plots -----------------------------------------------------------------------------------
def _plot(run: RunFiles, report: Report, name: str, caption: str, draw: Callable[[Path], Any]) -> None:
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
    from spnas.graph import SpaceGraph

    for name in (run.config.get("space"), run.result.get("space"), run.config.get("space_name")):
        if isinstance(name, str) and name:
            try:
                return SpaceGraph.load(name)
            except (SpnasError, OSError):
                continue
    return None


def _architecture_plot(run: RunFiles, report: Report) -> None:
    from spnas import plots

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
    _plot(run, report, "architecture", "Architecture", lambda p: plots.plot_architecture(
        arch, p, choices=choices, layer_labels=labels, title=f"{run.result.get('space', '')}: {arch}"))


def _supernet_state(run: RunFiles, report: Report) -> dict | None:
    """The weights of the run's supernet: supernet.pt here, else the one result.yaml names, else a
    single-path checkpoint (an unfinished search). Loaded with ``weights_only=True``."""
    from spnas.runs import load_checkpoint

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


def _superkernel_plot(run: RunFiles, report: Report) -> None:
    from spnas import plots

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

    _plot(run, report, "superkernels", "Superkernels (std across channels, log scale)", draw)


# --- builders --------------------------------------------------------------------------------
def _range(r: dict) -> str:
    b = r.get("latency_range")
    return f"{b[0]:.4g}-{b[1]:.4g}" if isinstance(b, list) and len(b) == 2 and None not in map(_num, b) else ""


def _search_facts(run: RunFiles, report: Report) -> None:
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
    latency = _num(r.get("predicted_latency"))
    if latency is not None:
        where = _num(r.get("range_fraction"))  # 0..1 of the space's range on the device
        report.fact("predicted latency", f"{r['predicted_latency']} {run.units}".rstrip()
                    + (f", {where * 100:.0f}% of the space's range {_range(r)}" if where is not None else ""))
    report.fact("supernet val accuracy", _pct(r.get("supernet_val_accuracy")))
    report.fact("params", _count(r.get("params")))
    report.fact("MACs", _count(r.get("macs")))


def _arch_block(run: RunFiles, report: Report, heading: str = "Architecture") -> None:
    arch = run.result.get("arch")
    if isinstance(arch, str):
        report.blocks.insert(0, f"## {heading}\n\n    {arch}\n")


def build_single_path(run: RunFiles, report: Report) -> None:
    """A single-path search: progress (Fig. 4), architecture (Fig. 5), superkernels (Fig. 6)."""
    from spnas import plots
    from spnas.target import WINDOW

    r, opts = run.result, run.options
    _search_facts(run, report)
    target = _num(r.get("target", opts.get("target")))
    if target is not None:
        spec = f" (--target {r['target_spec']})" if str(r.get("target_spec", "")).endswith("%") else ""
        report.fact("target", f"T = {target:g} {run.units}{spec}, window [{(1 - WINDOW) * target:g}, {target:g}]")
        readout = _num(r.get("readout_latency"))
        report.fact("read-out before projection", f"{r.get('readout_arch')} ({readout:g} {run.units}, "
                    f"{readout / target:.3f} T)" if r.get("readout_arch") and readout is not None else None)
        report.fact("layers changed by projection", r.get("layers_changed_by_projection"))
    lam, scale = _num(r.get("lambda", opts.get("lambda_"))), _num(r.get("lambda_scale", opts.get("lambda_scale")))
    weight = _num(r.get("target_weight", opts.get("target_weight")))
    if target is not None and weight is not None:  # target mode: lambda is not used
        width = _num(r.get("target_scale", opts.get("target_scale")))
        report.fact("target penalty", f"{weight:g} x (log(R / T*) / {width:g})^2, T* = {1 - WINDOW:g} T")
    elif lam is not None:
        report.fact("lambda", f"{lam:g}" + (f" x {scale:g}" if scale is not None else ""))
    epochs = [x for x in run.records if "epoch" in x and "phase" not in x]
    steps = [x for x in run.records if "ce" in x and "epoch" not in x]
    report.fact("epochs", f"{len(epochs)} of {opts.get('epochs', r.get('epochs', '?'))} logged, {len(steps)} steps")
    if epochs and _num(epochs[-1].get("val_accuracy")) is not None:
        report.fact("last epoch val accuracy (threshold mode)", _pct(epochs[-1]["val_accuracy"]))
    report.fact("search wall time", _seconds(r.get("search_seconds")))
    _arch_block(run, report)
    _plot(run, report, "progress", "Search progress (cross-entropy and R per step)", lambda p: plots.plot_search_progress(
        run.records, p, units=run.units, target=target, title=f"{r.get('strategy', 'single-path')} on "
        f"{r.get('space') or run.config.get('space_name', '')}"))
    _architecture_plot(run, report)
    _superkernel_plot(run, report)


def _constraint(opts: dict) -> tuple[float, float] | None:
    """The sampling constraint from the resolved options (as :meth:`spnas.sampling.Constraint.from_options`)."""
    from spnas.target import WINDOW

    if _num(opts.get("target")) is not None:
        return (1 - WINDOW) * opts["target"], float(opts["target"])
    if _num(opts.get("max_latency")) is not None:
        return 0.0, float(opts["max_latency"])
    window = opts.get("latency_window")
    if isinstance(window, (list, tuple)) and len(window) == 2 and all(_num(v) is not None for v in window):
        return float(window[0]), float(window[1])
    return None


def build_sampling(run: RunFiles, report: Report) -> None:
    """A sampling search (random, evolution, rl, a plugin's): candidates, Pareto front, architecture."""
    from spnas import plots

    r = run.result
    _search_facts(run, report)
    report.fact("latency constraint", r.get("constraint"))
    trials = [x for x in run.records if "trial" in x]
    report.fact("evaluations", r.get("evaluations", sum(1 for t in trials if t.get("status") == "evaluated")))
    report.fact("asks", r.get("asks"))
    report.fact("stop reason", r.get("stop_reason"))
    front = r.get("pareto_front") if isinstance(r.get("pareto_front"), list) else []
    report.fact("Pareto front", f"{len(front)} architectures" if front else None)
    report.fact("supernet", r.get("supernet"))
    report.fact("search wall time", _seconds(r.get("search_seconds")))
    _arch_block(run, report, "Architecture (the most accurate candidate)")
    if front:
        rows = [f"| {_esc(p.get('latency'))} | {_esc(_pct(p.get('accuracy')))} | `{_esc(p.get('arch'))}` |"
                for p in front if isinstance(p, dict)]
        report.blocks.append(f"## Pareto front\n\n| latency ({run.units}) | accuracy | architecture |\n|---|---|---|\n"
                             + "\n".join(rows) + "\n")
    chosen = ({"latency": r.get("predicted_latency"), "accuracy": r.get("supernet_val_accuracy")}
              if "predicted_latency" in r else None)
    _plot(run, report, "candidates", "Candidates (accuracy against latency)", lambda p: plots.plot_candidates(
        trials, p, pareto=front, chosen=chosen, constraint=_constraint(run.options), units=run.units,
        title=f"{r.get('strategy', 'sampling')} on {r.get('space') or run.config.get('space_name', '')}"))
    _architecture_plot(run, report)
    _superkernel_plot(run, report)


def build_train(run: RunFiles, report: Report) -> None:
    """A ``spnas train`` run: training curves and the architecture."""
    from spnas import plots

    r, c = run.result, run.config
    report.fact("space", r.get("space") or c.get("space_name") or c.get("space"))
    report.fact("data", c.get("data"))
    for key in ("top1", "top5", "test_top1", "test_top5"):
        report.fact(key.replace("_", " "), _pct(r.get(key)))
    report.fact("params", _count(r.get("params")))
    report.fact("MACs", _count(r.get("macs")))
    epochs = [x for x in run.records if _num(x.get("epoch")) is not None]
    if epochs:
        report.fact("epochs logged", len(epochs))
        best = [x for x in epochs if _num(x.get("val_top1")) is not None]
        if best:
            top = max(best, key=lambda x: x["val_top1"])
            report.fact("best val top-1", f"{_pct(top['val_top1'])} at epoch {top['epoch']}")
    report.fact("wall time", _seconds(r.get("train_seconds", r.get("seconds"))))
    _arch_block(run, report)
    _plot(run, report, "training", "Training curves", lambda p: plots.plot_training(
        run.records, p, test_top1=_num(r.get("test_top1")), test_top5=_num(r.get("test_top5")),
        title=f"training {r.get('arch', '')}"))
    _architecture_plot(run, report)


def build_generic(run: RunFiles, report: Report) -> None:
    """Any other run: the plain values of result.yaml, and the architecture if there is one."""
    for key, value in run.result.items():
        if isinstance(value, (str, int, float, bool)) and key not in ("arch", "run_dir"):
            report.fact(key, value)
    _arch_block(run, report)
    if isinstance(run.result.get("arch"), str):
        _architecture_plot(run, report)


register_kind("search", lambda run: True, build_generic)
register_kind("single-path search", _is_single_path, build_single_path)
register_kind("sampling search", _is_sampling, build_sampling)
register_kind("train", _is_train, build_train)


# --- the report ------------------------------------------------------------------------------
def build_report(run: RunFiles) -> Report:
    """Detect the kind of ``run`` and build its parts (drawing the plots)."""
    kind = run_kind(run)
    report = Report(kind)
    builder = next(build for name, _, build in KINDS if name == kind)
    builder(run, report)  # plots import matplotlib when drawn: without it, each plot becomes a note
    report.notes[:0] = run.notes
    return report


def render(run: RunFiles, report: Report) -> str:
    """The Markdown text of ``report.md``."""
    lines = [f"# {run.path.name}: {report.kind}", ""]
    if report.facts:
        lines += ["| | |", "|---|---|"]
        lines += [f"| {_esc(k)} | {_esc(v)} |" for k, v in report.facts]
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
    compare = Path(run_dir) / "compare.yaml"
    if compare.is_file():  # a 'spnas compare' directory: its own report (its stages have theirs)
        from spnas.compare import write_compare_report

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


__all__ = ["KINDS", "Report", "RunFiles", "build_report", "read_run", "register_kind", "render", "run_kind",
           "try_write_report", "write_report"]
