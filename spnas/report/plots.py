"""Plots of a run: search progress, the architecture, superkernel maps, candidates, training curves.

The first three are the paper's figures (Stamoulis et al. 2019): Fig. 4, cross-entropy and
runtime R against the search step; Fig. 5, the found network as a row of blocks, coloured by op;
Fig. 6, per searchable layer, the standard deviation of the depthwise superkernel weights across
channels at every kernel position. :func:`plot_candidates` draws what a sampling strategy
evaluated (accuracy against latency, the Pareto front, the constraint), and
:func:`plot_training` the curves of a ``spnas train`` run.

Every function takes plain data (log records, strings, arrays) and an output path, writes a PNG
and returns the path. Figures are :class:`matplotlib.figure.Figure` objects drawn on the Agg
canvas, never pyplot's: nothing is left in pyplot's global state.

Example:
    >>> plot_architecture("k3e6 skip | k5e3 k3e3", "arch.png")          # doctest: +SKIP
    PosixPath('arch.png')
"""

from __future__ import annotations

import colorsys
import math
import textwrap
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from spnas.space.arch import Architecture, Op
from spnas.searching.target import WINDOW

#: one hue per kernel size (Fig. 5 colours each kernel; lightness tells the expansion apart)
KERNEL_COLOURS = {3: "#1f77b4", 5: "#d62728", 7: "#2ca02c", 9: "#9467bd", 11: "#ff7f0e"}
SKIP_COLOUR = "#e6e6e6"
DPI = 120


# --- helpers ---------------------------------------------------------------------------------
def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically (a reader never sees a half-written file) and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
        fig.clear()
    return path


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (missing keys, None, strings, bools, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _series(records: Iterable[Mapping[str, Any]], x: str, y: str) -> tuple[list[float], list[float]]:
    """(x, y) of the records holding a number under both keys, in log order."""
    xs, ys = [], []
    for r in records:
        a, b = _number(r.get(x)), _number(r.get(y))
        if a is not None and b is not None:
            xs.append(a)
            ys.append(b)
    return xs, ys


def _unit(units: str) -> str:
    return f" ({units})" if units else ""


# --- Fig. 4: search progress -----------------------------------------------------------------
def plot_search_progress(records: Sequence[Mapping[str, Any]], path: str | Path, *, units: str = "",
                         target: float | None = None, window: float = WINDOW, title: str = "") -> Path:
    """Cross-entropy and runtime R per step of a single-path search (the paper's Fig. 4).

    Args:
        records: log.jsonl records. Step records (``step``, ``ce``, ``R``, optionally ``warmup``)
            make the curves; epoch records (``epoch``, ``step``, ``val_accuracy``) are marked on
            a second axis of the top panel.
        units: the device's units, for the R axis.
        target: T, drawn as a line with the window ``[(1 - window) T, T]`` shaded.
    """
    steps = [r for r in records if "epoch" not in r and "phase" not in r]
    epochs = [r for r in records if "epoch" in r and "phase" not in r]
    fig = _figure(7.0, 5.0)
    ax_ce, ax_r = fig.subplots(2, 1, sharex=True)
    x, ce = _series(steps, "step", "ce")
    ax_ce.plot(x, ce, color="#1f77b4", lw=1, label="cross-entropy")
    ax_ce.set_ylabel("cross-entropy")
    warm = [_number(r.get("step")) for r in steps if r.get("warmup") is True and _number(r.get("step")) is not None]
    if warm:
        for ax in (ax_ce, ax_r):
            ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="0.92", zorder=0,
                       label="warm-up (runtime term off)" if ax is ax_ce else None)
    ex, acc = _series(epochs, "step", "val_accuracy")
    if acc:
        ax_acc = ax_ce.twinx()
        ax_acc.plot(ex, acc, "o--", color="#2ca02c", ms=4, lw=1, label="val accuracy (per epoch)")
        ax_acc.set_ylabel("val accuracy")
        ax_acc.set_ylim(0, 1)
        handles = ax_ce.get_legend_handles_labels()
        more = ax_acc.get_legend_handles_labels()
        ax_ce.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="upper right")
    elif ce:
        ax_ce.legend(fontsize=7, loc="upper right")
    x, r = _series(steps, "step", "R")
    ax_r.plot(x, r, color="#d62728", lw=1, label="R (predicted runtime)")
    if target is not None:
        ax_r.axhspan((1 - window) * target, target, color="#ff7f0e", alpha=0.15,
                     label=f"window [{1 - window:g} T, T]")
        ax_r.axhline(target, color="#ff7f0e", lw=1.2, ls="--", label=f"target T = {target:g}")
    ax_r.set_ylabel(f"R{_unit(units)}")
    ax_r.set_xlabel("step")
    if r or target is not None:
        ax_r.legend(fontsize=7, loc="upper right")
    if not ce and not r:
        ax_ce.text(0.5, 0.5, "no step records in log.jsonl", ha="center", va="center", transform=ax_ce.transAxes)
    ax_ce.set_title(title or "search progress", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


# --- Fig. 5: the architecture ----------------------------------------------------------------
def op_colour(op: Op | str, kernels: Sequence[int] = (3, 5, 7), expansions: Sequence[int] = (3, 6)) -> tuple:
    """The RGB colour of an op: a hue per kernel size, lighter for smaller expansion; skip is grey."""
    from matplotlib.colors import to_rgb

    op = Op.parse(op) if isinstance(op, str) else op
    if op.is_skip:
        return to_rgb(SKIP_COLOUR)
    kernels = sorted(set(kernels) | {op.kernel})
    expansions = sorted(set(expansions) | {op.expansion})
    base = KERNEL_COLOURS.get(op.kernel)
    if base is None:  # an unusual kernel size: spread over the hue circle
        base = colorsys.hsv_to_rgb(kernels.index(op.kernel) / max(len(kernels), 1), 0.7, 0.8)
    h, l, s = colorsys.rgb_to_hls(*to_rgb(base))
    # the largest expansion is the base colour; the smallest is 60 % of the way to white
    rank = len(expansions) - 1 - expansions.index(op.expansion)
    lightness = l + (1 - l) * 0.6 * rank / max(len(expansions) - 1, 1)
    return colorsys.hls_to_rgb(h, lightness, s)


def plot_architecture(arch: str | Architecture, path: str | Path, *, choices: Sequence[str] = (),
                      layer_labels: Sequence[str] = (), title: str = "") -> Path:
    """The architecture as a row of blocks, one per searchable layer (the paper's Fig. 5).

    Args:
        arch: the architecture string; its ``|`` separators are the stages (drawn apart).
        choices: the ops the space offers (for the legend and the colour scale); default: the
            ops of ``arch``.
        layer_labels: one short line per layer under its block (e.g. ``c16 s2``), optional.
    """
    arch = Architecture.parse(arch) if isinstance(arch, str) else arch
    ops = list(arch.ops)
    offered = [Op.parse(c) if isinstance(c, str) else c for c in choices] or ops
    kernels = sorted({o.kernel for o in offered if not o.is_skip}) or [3]
    expansions = sorted({o.expansion for o in offered if not o.is_skip}) or [6]
    gap, width = 0.6, 1.0
    fig = _figure(max(4.0, 0.45 * len(ops) + 0.3 * gap * len(arch.stages) + 1.6), 2.4)
    ax = fig.subplots()
    from matplotlib.patches import Patch, Rectangle

    x, i, max_e = 0.0, 0, max(expansions)
    for s, size in enumerate(arch.stages):
        start = x
        for _ in range(size):
            op = ops[i]
            height = 0.35 if op.is_skip else 0.5 + 0.5 * op.expansion / max_e  # taller for wider layers
            ax.add_patch(Rectangle((x, -height / 2), width * 0.9, height, facecolor=op_colour(op, kernels, expansions),
                                   edgecolor="0.3", lw=0.8, ls="--" if op.is_skip else "-"))
            ax.text(x + 0.45, 0, str(op), rotation=90, ha="center", va="center", fontsize=7,
                    color="0.3" if op.is_skip else "black")
            if i < len(layer_labels) and layer_labels[i]:
                ax.text(x + 0.45, -0.56, layer_labels[i], rotation=90, ha="center", va="top", fontsize=6, color="0.35")
            x += width
            i += 1
        if len(arch.stages) > 1:
            ax.text((start + x - 0.1) / 2, 0.6, f"stage {s + 1}", ha="center", va="bottom", fontsize=7)
        x += gap
    legend = sorted({o for o in offered} | set(ops), key=lambda o: (o.is_skip, o.kernel, o.expansion))
    ax.legend(handles=[Patch(facecolor=op_colour(o, kernels, expansions), edgecolor="0.3", label=str(o))
                       for o in legend], fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    ax.set_xlim(-0.3, x - gap + 0.2)
    ax.set_ylim(-1.0 if layer_labels else -0.6, 0.8)
    ax.set_axis_off()
    ax.set_title(textwrap.fill(title or f"{len(ops)} searchable layers", 140), fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


# --- Fig. 6: superkernel maps ----------------------------------------------------------------
def superkernel_maps(source: Any) -> list[np.ndarray]:
    """Per searchable layer, the std across channels of the depthwise superkernel weights, (kmax, kmax).

    ``source`` is a :class:`~spnas.supernet.builder.Supernet`, its ``state_dict()``, or the dict of a
    ``supernet.pt`` / single-path ``checkpoint.pt`` (weights under ``"model"``). A searchable
    layer is one with thresholds (``<prefix>t_kernel``); its weight is ``<prefix>conv_dw.weight``,
    shape ``(C, 1, kmax, kmax)``. The std is the population one (``correction=0``: the channels
    are all the layer has, not a sample of them), over every channel of the largest expansion.
    Layers come in network order.
    """
    import torch

    if hasattr(source, "superkernels"):
        weights = [sk.conv_dw.weight for sk in source.superkernels]
    else:
        state = source.get("model", source) if isinstance(source, Mapping) else source
        if not isinstance(state, Mapping):
            raise TypeError(f"superkernel_maps: expected a Supernet or a state dict, got {type(source).__name__}")
        prefixes = [k[: -len("t_kernel")] for k in state if isinstance(k, str) and k.endswith("t_kernel")]
        prefixes.sort(key=lambda p: [int(t) if t.isdigit() else -1 for t in p.split(".") if t])
        weights = [state[p + "conv_dw.weight"] for p in prefixes if p + "conv_dw.weight" in state]
    maps = []
    for w in weights:
        w = torch.as_tensor(w).detach().to("cpu", torch.float64)
        maps.append(w.reshape(w.shape[0], w.shape[-2], w.shape[-1]).std(dim=0, correction=0).numpy())
    return maps


def plot_superkernels(maps: Sequence[np.ndarray], path: str | Path, *, titles: Sequence[str] = (),
                      title: str = "") -> Path:
    """A grid of small heatmaps, one per layer, on one log colour scale with one colourbar (Fig. 6)."""
    from matplotlib.colors import LogNorm

    n = len(maps)
    cols = min(max(n, 1), 8)
    rows = max(1, math.ceil(n / cols))
    fig = _figure(1.25 * cols + 1.2, 1.35 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    positive = [float(m[m > 0].min()) for m in maps if np.any(m > 0)]
    lo = min(positive) if positive else 1e-6
    hi = max([float(m.max()) for m in maps] + [lo])
    norm = LogNorm(vmin=lo, vmax=max(hi, lo * 1.01))
    image = None
    for i, ax in enumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.set_axis_off()
            continue
        image = ax.imshow(np.clip(maps[i], lo, None), norm=norm, cmap="viridis", interpolation="nearest")
        ax.set_title(titles[i] if i < len(titles) else f"layer {i}", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.9, label="std across channels (log)")
    else:
        axes[0].text(0.5, 0.5, "no searchable layers", ha="center", va="center", transform=axes[0].transAxes)
    fig.suptitle(title or "depthwise superkernels: std across channels per kernel position", fontsize=9)
    return _save(fig, path)


# --- sampling strategies ---------------------------------------------------------------------
def plot_candidates(trials: Sequence[Mapping[str, Any]], path: str | Path, *,
                    pareto: Sequence[Mapping[str, Any]] = (), chosen: Mapping[str, Any] | None = None,
                    constraint: tuple[float, float] | None = None, units: str = "", title: str = "") -> Path:
    """Accuracy against latency of every evaluated candidate, the Pareto front, the constraint.

    Args:
        trials: trial records (``trial``, ``latency``, ``accuracy``, ``status``) of log.jsonl;
            duplicates are drawn once, infeasible ones (not evaluated) as ticks on the x axis.
        pareto: the front (``latency``, ``accuracy``), drawn as a step line.
        chosen: the result (``latency``, ``accuracy``), highlighted.
        constraint: ``(lo, hi)``; shaded (``hi`` may be ``inf``, ``lo`` 0).
    """
    evaluated = [t for t in trials if t.get("status", "evaluated") == "evaluated"]
    lx, acc = _series(evaluated, "latency", "accuracy")
    infeasible = [x for t in trials if t.get("status") == "infeasible" and (x := _number(t.get("latency"))) is not None]
    fig = _figure(6.0, 4.2)
    ax = fig.subplots()
    ax.scatter(lx, acc, s=14, alpha=0.6, color="#1f77b4", label=f"{len(lx)} evaluated candidates")
    if infeasible:
        ax.plot(infeasible, [0.0] * len(infeasible), "|", color="0.5", ms=10,
                transform=ax.get_xaxis_transform(), label=f"{len(infeasible)} outside the constraint")
    px, pa = _series(sorted(pareto, key=lambda p: _number(p.get("latency")) or 0.0), "latency", "accuracy")
    if px:
        ax.step(px, pa, where="post", color="#2ca02c", lw=1.5, label=f"Pareto front ({len(px)})")
        ax.plot(px, pa, "o", color="#2ca02c", ms=4)
    if chosen is not None:
        cx, ca = _number(chosen.get("latency")), _number(chosen.get("accuracy"))
        if cx is not None and ca is not None:
            ax.plot([cx], [ca], marker="*", ms=14, color="#d62728", mec="black", ls="none", label="chosen")
    xs = lx + px + infeasible + ([cx] if chosen is not None and cx is not None else [])
    if constraint is not None:
        lo, hi = constraint
        finite = [v for v in (lo, hi) if v is not None and math.isfinite(v) and v > 0]
        bounds = xs + finite
        if bounds:
            left, right = min(bounds), max(bounds)
            pad = 0.05 * (right - left or right or 1.0)
            left, right = left - pad, right + pad
            ax.axvspan(max(lo or 0.0, left), min(hi, right) if hi is not None else right,
                       color="#ff7f0e", alpha=0.12, zorder=0, label="constraint")
            ax.set_xlim(left, right)
    ax.set_xlabel(f"predicted latency{_unit(units)}")
    ax.set_ylabel("supernet accuracy")
    if not lx:
        ax.text(0.5, 0.5, "no evaluated candidates in log.jsonl", ha="center", va="center", transform=ax.transAxes)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(title or "candidates", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


# --- spnas train -------------------------------------------------------------------------------
def plot_training(records: Sequence[Mapping[str, Any]], path: str | Path, *, test_top1: float | None = None,
                  test_top5: float | None = None, title: str = "") -> Path:
    """Loss and top-1/top-5 accuracy against epoch of a training run.

    ``records`` are log.jsonl records with ``epoch`` and any of ``train_loss``, ``val_loss``,
    ``lr``, ``val_top1``, ``val_top5``, ``train_top1`` (missing keys are left out); test accuracy,
    when given, is drawn as a dotted line.
    """
    epochs = [r for r in records if _number(r.get("epoch")) is not None]
    fig = _figure(7.0, 3.4)
    ax_loss, ax_acc = fig.subplots(1, 2)
    drawn = False
    for key, colour in (("train_loss", "#1f77b4"), ("val_loss", "#ff7f0e")):
        x, y = _series(epochs, "epoch", key)
        if y:
            ax_loss.plot(x, y, "o-", ms=3, lw=1, color=colour, label=key.replace("_", " "))
            drawn = True
    handles, labels = ax_loss.get_legend_handles_labels()
    x, lr = _series(epochs, "epoch", "lr")
    if lr:
        ax_lr = ax_loss.twinx()
        (line,) = ax_lr.plot(x, lr, color="0.6", lw=1, ls=":", label="lr")
        ax_lr.set_ylabel("learning rate", fontsize=8)
        ax_lr.tick_params(labelsize=7)
        handles, labels = handles + [line], labels + ["lr (right axis)"]
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    if handles:
        ax_loss.legend(handles, labels, fontsize=7, loc="upper right")
    series = (("val_top1", "#2ca02c", "val top-1"), ("val_top5", "#9467bd", "val top-5"),
              ("train_top1", "#8c564b", "train top-1"))
    any_acc = False
    for key, colour, label in series:
        x, y = _series(epochs, "epoch", key)
        if y:
            ax_acc.plot(x, y, "o-", ms=3, lw=1, color=colour, label=label)
            any_acc = True
    for value, colour, label in ((test_top1, "#2ca02c", "test top-1"), (test_top5, "#9467bd", "test top-5")):
        if _number(value) is not None:
            ax_acc.axhline(float(value), color=colour, ls=":", lw=1.2, label=f"{label} {float(value):.4f}")
            any_acc = True
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    if any_acc:
        ax_acc.legend(fontsize=7, loc="lower right")
    if not drawn and not any_acc:
        ax_loss.text(0.5, 0.5, "no epoch records in log.jsonl", ha="center", va="center", transform=ax_loss.transAxes)
    fig.suptitle(textwrap.fill(title or "training", 110), fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


__all__ = ["op_colour", "plot_architecture", "plot_candidates", "plot_search_progress", "plot_superkernels",
           "plot_training", "superkernel_maps"]


def plot_comparison(rows: Sequence[Mapping[str, Any]], path: str | Path, *,
                    aggregate: Sequence[Mapping[str, Any]] | None = None, units: str = "", device: str = "",
                    target: float | None = None, title: str = "") -> Path:
    """``spnas compare``: trained top-1 against predicted latency, one point per strategy at its means
    over seeds with the sample std as error bars (and every trained network faintly behind it), the
    target line and window; and each strategy's mean search wall time.

    ``aggregate`` is compare.yaml's (:func:`spnas.report.stats.aggregate` of ``rows`` when not given).
    """
    if aggregate is None:
        from spnas.report.stats import aggregate as aggregate_rows

        aggregate = aggregate_rows(rows)
    fig = _figure(10, 4.6)
    ax, bx = fig.subplots(1, 2)
    names = [str(a.get("strategy")) for a in aggregate]
    means = [(_number(a.get("predicted_latency_mean")), _number(a.get("top1_mean"))) for a in aggregate]
    xs_all = [x for x, _ in means if x is not None] + [_number(r.get("predicted_latency")) or 0.0 for r in rows]
    ys_all = [_number(r.get("top1")) for r in rows if _number(r.get("top1")) is not None]
    x_span = (max(xs_all) - min(xs_all)) if xs_all else 0.0
    seen: dict[tuple[float, float], int] = {}
    for i, (name, a) in enumerate(zip(names, aggregate)):
        colour = f"C{i % 10}"
        own = [r for r in rows if str(r.get("strategy")) == name]
        xs, ys = _series(own, "predicted_latency", "top1")
        ax.scatter(xs, ys, s=14, color=colour, alpha=0.3, linewidths=0)
        x, y = means[i]
        if x is not None and y is not None:
            # strategies that found the same network would hide each other: shift each later one a little
            dup = seen.get((round(x, 9), round(y, 9)), 0)
            seen[(round(x, 9), round(y, 9))] = dup + 1
            shift = dup * 0.02 * (x_span or abs(x) or 1.0)
            std = _number(a.get("top1_std")) or 0.0
            ys_all += [y - std, y + std]
            ax.errorbar([x + shift], [y], yerr=[std], xerr=[_number(a.get("predicted_latency_std")) or 0.0], fmt="o",
                        color=colour, capsize=3, markersize=6,
                        label=f"{name} (n={a.get('n')})" + (" (same point as another, shifted)" if dup else ""))
    if ys_all:  # room above and below every point and error bar, so that none sits on the frame
        lo, hi = min(ys_all), max(ys_all)
        pad = max(0.1 * (hi - lo), 0.01)
        ax.set_ylim(lo - pad, hi + pad)
    if _number(target) is not None:
        ax.axvspan((1 - WINDOW) * target, target, color="tab:green", alpha=0.12,
                   label=f"target window [{1 - WINDOW:g} T, T]")
        ax.axvline(target, color="tab:green", linestyle="--", linewidth=1, label=f"T = {target:g}")
    if names:  # below the axes: a legend inside could cover points
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    ax.set_xlabel(f"predicted latency{_unit(units)}" + (f", {device}" if device else ""))
    ax.set_ylabel("top-1 (validation), trained from scratch\nmean ± std over seeds")
    ax.set_title(title, fontsize=9)

    def mean(name: str, key: str) -> float:
        values = [_number(r.get(key)) or 0.0 for r in rows if str(r.get("strategy")) == name]
        return sum(values) / len(values) if values else 0.0

    shared = [mean(n, "shared_supernet_seconds") for n in names]
    own_s = [max(mean(n, "search_seconds") - s, 0.0) for n, s in zip(names, shared)]
    bx.barh(names, shared, color="tab:gray", alpha=0.5, label="shared supernet (trained once per seed)")
    bx.barh(names, own_s, left=shared, color="tab:blue", label="the strategy's own search")
    for i, total in enumerate(s + o for s, o in zip(shared, own_s)):
        if total == 0:  # random-arch: drawn, not searched
            bx.annotate("no search", (0, i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=8)
    bx.set_xlabel("search wall time, mean over seeds (s)")
    bx.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.0), ncol=2, frameon=False)
    bx.invert_yaxis()
    fig.tight_layout()
    return _save(fig, path)


def plot_front(points: Sequence[Mapping[str, Any]], path: str | Path, *, units: str = "", device: str = "",
               latency_range: Sequence[float] | None = None, title: str = "",
               y_key: str = "supernet_val_accuracy", y_label: str = "supernet validation accuracy") -> Path:
    """A front over latency targets: one point per target (accuracy against predicted latency),
    joined in order of latency, each target's window [0.95 T, T] shaded and labelled."""
    fig = _figure(6.5, 4.2)
    ax = fig.subplots()
    rows = sorted((p for p in points if _number(p.get("predicted_latency")) is not None
                   and _number(p.get(y_key)) is not None), key=lambda p: float(p["predicted_latency"]))
    for i, p in enumerate(points):
        t = _number(p.get("target"))
        if t is not None:
            ax.axvspan((1 - WINDOW) * t, t, color=f"C{i % 10}", alpha=0.15,
                       label=f"target {p.get('target_spec', t)}: [{1 - WINDOW:g} T, T]")
    if rows:
        ys = [float(p[y_key]) for p in rows]
        ax.plot([float(p["predicted_latency"]) for p in rows], ys, "-o", color="black",
                markersize=5, linewidth=1, label="found networks")
        pad = max(0.1 * (max(ys) - min(ys)), 0.01)  # no point on the frame
        ax.set_ylim(min(ys) - pad, max(ys) + pad)
    if latency_range is not None and len(latency_range) == 2:
        ax.set_xlim(float(latency_range[0]), float(latency_range[1]))
    ax.set_xlabel(f"predicted latency{_unit(units)}" + (f", {device}" if device else ""))
    ax.set_ylabel(y_label)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def plot_compare_fronts(aggregate: Sequence[Mapping[str, Any]], path: str | Path, *, units: str = "",
                        device: str = "", latency_range: Sequence[float] | None = None, title: str = "") -> Path:
    """``spnas compare --targets``: one line per strategy through its targets, at the mean predicted
    latency and mean top-1 from scratch of each, with the sample std as error bars."""
    fig = _figure(7, 4.4)
    ax = fig.subplots()
    names = list(dict.fromkeys(str(a.get("strategy")) for a in aggregate))
    for i, name in enumerate(names):
        own = sorted((a for a in aggregate if str(a.get("strategy")) == name
                      and _number(a.get("predicted_latency_mean")) is not None),
                     key=lambda a: float(a["predicted_latency_mean"]))
        xs = [float(a["predicted_latency_mean"]) for a in own]
        ys = [float(a["top1_mean"]) for a in own]
        ax.errorbar(xs, ys, yerr=[_number(a.get("top1_std")) or 0.0 for a in own], fmt="-o", color=f"C{i % 10}",
                    capsize=3, markersize=5, linewidth=1, label=name)
    if latency_range is not None and len(latency_range) == 2:
        ax.set_xlim(float(latency_range[0]), float(latency_range[1]))
    ax.set_xlabel(f"predicted latency{_unit(units)}" + (f", {device}" if device else ""))
    ax.set_ylabel("top-1 (validation), trained from scratch\nmean ± std over seeds")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False)
    fig.tight_layout()
    return _save(fig, path)
