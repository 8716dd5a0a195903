"""``report.md`` and ``plots/front.png`` of a sweep over latency targets (``spnas search --targets``;
:mod:`spnas.pipeline.sweep` runs it, ``spnas report`` rebuilds this from ``sweep.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from spnas.core.runs import atomic_write_text


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def write_sweep_report(out: Path, record: Mapping[str, Any]) -> Path:
    """The front as a table (one row per target) and a plot, with the shared warm-up's cost."""
    from spnas.report.plots import plot_front
    from spnas.searching.target import WINDOW

    out = Path(out)
    points = record["points"]
    u = record.get("units", "")
    plot_front(points, out / "plots" / "front.png", units=u, device=str(record.get("device", "")),
               latency_range=record.get("latency_range"),
               title=f"{record.get('strategy')} on {record.get('space')}: one warm-up, {len(points)} targets")
    lines = [f"# {out.name}: a front of {len(points)} targets", "",
             f"Strategy `{record.get('strategy')}` on `{record.get('space')}`, device `{record.get('device')}` ({u}), "
             f"seed {record.get('seed')}. The first {record.get('warmup_epochs')} of {record.get('epochs')} epochs "
             f"(the warm-up: no runtime term) were trained once, in {_fmt(record.get('warmup_seconds'), '.1f')} s; "
             f"each target's search continued from them. Wall time in all: {_fmt(record.get('seconds'), '.1f')} s.",
             "", f"| target | window ({u}) | architecture | predicted ({u}, % of range) | supernet acc. | search (s) "
             f"| run |", "|---|---|---|---|---|---|---|"]
    for p in points:
        t = p.get("target")
        window = f"{(1 - WINDOW) * t:.4g}-{t:.4g}" if isinstance(t, (int, float)) else "n/a"
        where = f" ({p['range_fraction'] * 100:.0f}%)" if p.get("range_fraction") is not None else ""
        arch = str(p.get("arch")).replace("|", "\\|")
        lines.append(f"| {p.get('target_spec')} | {window} | `{arch}` | {_fmt(p.get('predicted_latency'))}{where} | "
                     f"{_fmt(p.get('supernet_val_accuracy'))} | {_fmt(p.get('search_seconds'), '.1f')} | "
                     f"[{p.get('run')}]({p.get('run')}/report.md) |")
    lines += ["", "Each point is, bit for bit, the search `--target` alone runs with the same seed and options "
              "(the fork continues the warm-up's checkpoint as a resume would). Train the front from scratch "
              f"with `spnas train {out}`.", "", "![front](plots/front.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path


def write_front_report(out: Path, record: Mapping[str, Any]) -> Path:
    """The front of a sweep trained from scratch (``spnas train SWEEP_DIR``): trained top-1 against
    predicted latency, one row per target."""
    from spnas.report.plots import plot_front

    out = Path(out)
    points = record["points"]
    u = record.get("units", "")
    test = any(p.get("test_top1") is not None for p in points)
    plot_front(points, out / "plots" / "front.png", units=u, device=str(record.get("device", "")),
               latency_range=record.get("latency_range"), y_key="top1",
               y_label="top-1 (validation), trained from scratch",
               title=f"{record.get('space')}: the front of {record.get('sweep')}, trained {record.get('epochs')} epochs")
    lines = [f"# {out.name}: a front trained from scratch", "",
             f"The {len(points)} networks of the sweep `{record.get('sweep')}` on `{record.get('space')}`, each "
             f"trained from scratch for {record.get('epochs')} epochs with one recipe (seed {record.get('seed')}).",
             "", f"| target | architecture | predicted ({u}) | supernet acc. | top-1 | top-5 | "
             + ("test top-1 | " if test else "") + "training (s) | run |",
             "|---|---|---|---|---|---|" + ("---|" if test else "") + "---|---|"]
    for p in points:
        arch = str(p.get("arch")).replace("|", "\\|")
        lines.append(f"| {p.get('target_spec')} | `{arch}` | {_fmt(p.get('predicted_latency'))} | "
                     f"{_fmt(p.get('supernet_val_accuracy'))} | {_fmt(p.get('top1'))} | {_fmt(p.get('top5'))} | "
                     + (f"{_fmt(p.get('test_top1'))} | " if test else "")
                     + f"{_fmt(p.get('train_seconds'), '.1f')} | [{p.get('run')}]({p.get('run')}/report.md) |")
    lines += ["", "![front](plots/front.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
