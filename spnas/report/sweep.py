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
