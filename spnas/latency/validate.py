"""Validate a latency model: predicted against measured on random networks (the paper's Fig. 7).

The paper measured 100 random networks on the Pixel 1 and compared them with the sum of the
per-layer table entries: 1.76 % mean absolute error, RMSE 1.32 ms. :func:`validate` does the
same for any device that can measure a whole network (``measure_network``), and
:func:`scatter_plot` draws the measured-against-predicted plot with the identity line.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from spnas.space.arch import Architecture
from spnas.core.errors import SpnasError
from spnas.space.graph import SpaceGraph
from spnas.latency.runtime import RuntimeModel


@dataclass(frozen=True)
class Validation:
    """Predicted and measured latency of each sampled network, and the error statistics."""

    space: str
    device: str
    units: str
    archs: tuple[str, ...]
    predicted: tuple[float, ...]
    measured: tuple[float, ...]

    @property
    def errors(self) -> list[float]:
        """Signed relative errors (predicted - measured) / measured."""
        return [(p - m) / m for p, m in zip(self.predicted, self.measured)]

    @property
    def mape(self) -> float:
        """Mean absolute error, in percent of the measured latency."""
        return 100 * statistics.fmean(abs(e) for e in self.errors)

    @property
    def rmse(self) -> float:
        return math.sqrt(statistics.fmean((p - m) ** 2 for p, m in zip(self.predicted, self.measured)))

    @property
    def bias(self) -> float:
        """Mean signed error, in percent (negative: the model underestimates)."""
        return 100 * statistics.fmean(self.errors)

    @property
    def worst(self) -> tuple[str, float]:
        i = max(range(len(self.errors)), key=lambda k: abs(self.errors[k]))
        return self.archs[i], 100 * self.errors[i]

    def to_dict(self) -> dict:
        arch, worst = self.worst
        return {"space": self.space, "device": self.device, "units": self.units, "samples": len(self.archs),
                "mean_abs_error_pct": round(self.mape, 4), "rmse": _sig(self.rmse),
                "mean_error_pct": round(self.bias, 4), "worst_error_pct": round(worst, 4), "worst_arch": arch,
                "networks": [{"arch": a, "predicted": _sig(p), "measured": _sig(m)}
                             for a, p, m in zip(self.archs, self.predicted, self.measured)]}


def _sig(x: float) -> float:
    """9 significant digits: enough to recompute every statistic from the file, at any scale
    (µs-scale networks lost 0.05 % to a fixed 6 decimals)."""
    return float(f"{x:.9g}")


def validate(space: SpaceGraph, runtime: RuntimeModel, device: Any, samples: int, seed: int = 0,
             progress: bool = True, device_name: str = "") -> Validation:
    """Sample ``samples`` random networks, predict each from the table and measure it whole.

    A :class:`~spnas.latency.profiling.MeasuredDevice` builds every network first (conversion is the
    slow part), then times them all in its clean timing process, in interleaved rounds, as the
    table itself. Other devices (a phone) measure each network with ``measure_network``.
    """
    if samples < 1:
        raise SpnasError(f"--samples {samples} is not allowed; use >= 1")
    from tqdm.auto import tqdm

    from spnas.latency.profiling import MeasuredDevice

    rng = random.Random(seed)
    archs: list[Architecture] = [space.random(rng) for _ in range(samples)]
    predicted = [runtime.predict(a) for a in archs]
    bar = dict(unit="net", disable=None if progress else True, leave=False)
    if isinstance(device, MeasuredDevice):
        measured = [t.median for t in device.measure_networks(space, archs, progress=progress)]
    else:
        measured = [float(device.measure_network(space, a).median) for a in tqdm(archs, desc="measuring", **bar)]
    return Validation(space.name, device_name or runtime.table.header.device, runtime.units,
                      tuple(str(a) for a in archs), tuple(predicted), tuple(measured))


def scatter_plot(v: Validation, path: str | Path) -> Path:
    """Measured against predicted latency, with the identity line (PNG)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SpnasError("matplotlib is not installed; pip install matplotlib, or leave out --plot") from None
    lo = min(min(v.predicted), min(v.measured))
    hi = max(max(v.predicted), max(v.measured))
    pad = 0.05 * (hi - lo or hi or 1.0)
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.5", lw=1, label="identity")
    ax.scatter(v.predicted, v.measured, s=12, alpha=0.8, label=f"{len(v.archs)} random networks")
    ax.set_xlabel(f"predicted latency ({v.units})")
    ax.set_ylabel(f"measured latency ({v.units})")
    ax.set_title(f"{v.device} on {v.space}: mean |error| {v.mape:.2f} %, RMSE {v.rmse:.3g} {v.units}", fontsize=8)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_ylim(lo - pad, hi + pad)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def summary_lines(v: Validation, paper: Sequence[str] = ()) -> list[str]:
    arch, worst = v.worst
    return [f"{len(v.archs)} random networks of {v.space} on {v.device}:",
            f"  mean absolute error {v.mape:.2f} % (mean signed {v.bias:+.2f} %), RMSE {v.rmse:.4g} {v.units}",
            f"  worst {worst:+.2f} % [{arch}]", *paper]
