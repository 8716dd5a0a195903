"""Target-latency mode: meet ``cost <= T`` and ``cost >= 0.95 T`` without hand-tuning lambda.

Two parts (see docs/superkernel.md, "Target-latency mode"):

1. During the search, the runtime term of Eq. 9 becomes a hinge: ``lambda * max(0, log(R / T*))``
   with ``T*`` the middle of the window ``[0.95 T, T]``. Above ``T*`` it pushes thresholds up
   (smaller ops) with the authors' weight; below, it vanishes at once and cross-entropy takes back
   what it needs, so the architecture settles near ``T*`` whatever lambda is (no tuning).
2. At read-out, the hard decisions may still sit just outside the window. :func:`project` returns
   the architecture inside the window that flips the fewest and least-confident decisions: each
   layer's ops are scored by the relative margins ``|norm - t| / norm`` of the decisions that would
   have to change, and a multiple-choice knapsack over the table costs picks the best total score
   (exact dynamic programming over a fine cost grid, then an exact re-check).

A target (and any option marked ``range_fraction`` in :func:`spnas.searching.strategy.option`) is given in
the device's units (``--target 3.0``) or as a fraction of the space's range on the device
(``--target 40%``: ``T = lo + 0.40 (hi - lo)`` with ``lo, hi = RuntimeModel.bounds()``).
:func:`parse_target` reads the text before anything is measured; :func:`resolve_target` turns a
:class:`RangeFraction` into device units once the latency table is known. Options dataclasses
always hold the absolute value. :func:`range_position` says where a result sits in that range.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from spnas.space.arch import Architecture, Op
from spnas.core.errors import SpnasError, describe
from spnas.latency.runtime import RuntimeModel
from spnas.supernet.superkernel import SuperMBConv

WINDOW = 0.05  # the result must be within 5 % below the target


@torch.no_grad()
def decision_margins(sk: SuperMBConv) -> tuple[list[float], list[float]]:
    """Relative margins ``(norm - t) / norm`` of a superkernel's kernel and channel decisions.

    ``inf`` for a channel decision that does not exist (group 0 of a layer that cannot be skipped).
    """
    ring, group = sk.subset_norms()
    t_k, t_e = sk.thresholds()
    g_m = [float((n - t) / n.clamp_min(1e-12)) for n, t in zip(ring, t_k)]
    h_m = [float((n - t) / n.clamp_min(1e-12)) if (j or sk.skip) else math.inf
           for j, (n, t) in enumerate(zip(group, t_e))]
    return g_m, h_m


def _required(sk: SuperMBConv, op: Op) -> tuple[dict[int, bool], dict[int, bool]]:
    """The decision values that select ``op`` (decisions after the first 0 do not matter)."""
    if op.is_skip:
        return {}, {0: False}
    ki, ei = sk.kernels.index(op.kernel), sk.expansions.index(op.expansion)
    g = {m: m < ki for m in range(min(ki + 1, len(sk.kernels) - 1))}
    h = {j: j <= ei for j in range(min(ei + 2, len(sk.expansions)))}
    return g, h


def op_penalties(sk: SuperMBConv, ops: Sequence[Op]) -> list[float]:
    """How far each op is from what the thresholds chose: the summed |margin| of the flips it needs."""
    g_m, h_m = decision_margins(sk)
    out = []
    for op in ops:
        g_req, h_req = _required(sk, op)
        cost = sum(abs(g_m[m]) for m, v in g_req.items() if (g_m[m] >= 0) != v)
        cost += sum(abs(h_m[j]) for j, v in h_req.items() if (h_m[j] >= 0) != v)
        out.append(cost)
    return out


def check_target(runtime: RuntimeModel, target: float, window: float = WINDOW) -> None:
    """Raise a clear error when no architecture can cost between ``(1 - window) T`` and ``T``."""
    lo_b, hi_b = runtime.bounds()
    if target < lo_b or (1 - window) * target > hi_b:
        raise SpnasError(
            f"--target {target:g} {runtime.units} cannot be met: architectures of {runtime.space.name} cost "
            f"{lo_b:.4g} to {hi_b:.4g} {runtime.units} on this device (the result must be in [0.95 T, T])"
        )


def project(runtime: RuntimeModel, superkernels: Sequence[SuperMBConv], target: float,
            window: float = WINDOW, bins: int = 4000) -> tuple[Architecture, int]:
    """The architecture with predicted cost in ``[(1 - window) T, T]`` closest to the thresholds' choice.

    Returns the architecture and the number of layers whose op differs from the hard read-out.
    Raises SpnasError when no architecture of the space can meet the window.
    """
    space = runtime.space
    check_target(runtime, target, window)
    lo_t, hi_t = (1 - window) * target, target
    layers = space.searchable
    const = runtime.constant
    per_op = [[runtime.op_cost(i, op) for op in l.ops] for i, l in enumerate(layers)]
    pens = [op_penalties(sk, l.ops) for sk, l in zip(superkernels, layers)]
    step = (hi_t - const) / bins
    slack = 0.5 * step * len(layers) + 1e-9  # worst-case rounding error of the grid
    best: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}
    for costs, pen in zip(per_op, pens):
        nxt: dict[int, tuple[float, tuple[int, ...]]] = {}
        for b, (score, picks) in best.items():
            for i, (c, p) in enumerate(zip(costs, pen)):
                nb = b + round(c / step)
                if nb * step > hi_t - const + slack:
                    continue
                cand = (score + p, picks + (i,))
                if nb not in nxt or cand[0] < nxt[nb][0]:
                    nxt[nb] = cand
        best = nxt
    feasible = []
    for score, picks in best.values():
        ops = [l.ops[i] for l, i in zip(layers, picks)]
        cost = runtime.predict(space.arch(ops))
        if lo_t <= cost <= hi_t:
            feasible.append((score, cost, ops))
    if not feasible:
        raise SpnasError(f"no architecture of {space.name} has a predicted cost in [{lo_t:.4g}, {hi_t:.4g}] "
                         f"{runtime.units}; widen the target")
    score, _, ops = min(feasible, key=lambda t: (t[0], -t[1]))
    readout = [sk.op_of(*sk.decide(1.0)) for sk in superkernels]
    return space.arch(ops), sum(a != b for a, b in zip(ops, readout))


@dataclass(frozen=True)
class RangeFraction:
    """A cost given as a fraction of a space's range on a device: ``lo + fraction * (hi - lo)``.

    Example:
        >>> from spnas.devices.flops import FlopsDevice
        >>> from spnas.space.graph import SpaceGraph
        >>> space = SpaceGraph.load("tiny")
        >>> runtime = RuntimeModel(space, FlopsDevice().latency_table(space))
        >>> lo, hi = runtime.bounds()
        >>> abs(RangeFraction(0.5).resolve(runtime) - (lo + hi) / 2) < 1e-12
        True
        >>> str(parse_target("40%"))
        '40%'
    """

    fraction: float  # in (0, 1]

    def resolve(self, runtime: RuntimeModel) -> float:
        lo, hi = runtime.bounds()
        return lo + self.fraction * (hi - lo)

    def __str__(self) -> str:
        return f"{self.fraction * 100:g}%"


def parse_target(value: str | float | RangeFraction, flag: str = "--target",
                 units: str | None = None) -> float | RangeFraction:
    """A cost in the device's units (a float > 0) or ``P%`` of the space's range (``0 < P <= 100``).

    ``flag`` and ``units`` only word the error: one line naming the flag, the value and what is allowed.
    """
    if isinstance(value, RangeFraction):
        return value
    cost = f"a cost in {units}" if units else "a cost in the device's units"
    text = str(value).strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            percent = math.nan
        if not 0 < percent <= 100:  # also refuses nan
            raise SpnasError(f"{flag} {_shown(text)}: a fraction of the range must be in (0%, 100%]; "
                             f"or give {cost}")
        return RangeFraction(percent / 100)
    try:
        number = float(text) if not isinstance(value, bool) else math.nan
    except ValueError:
        raise SpnasError(f"{flag} {_shown(text)}: not a number; give {cost} (e.g. 3.0) or a fraction "
                         f"of the space's range (e.g. 40%)") from None
    if not (math.isfinite(number) and number > 0):
        raise SpnasError(f"{flag} {_shown(text)}: a cost must be a finite number > 0; give {cost} or a "
                         f"fraction of the space's range (e.g. 40%)")
    return number


def _shown(text: str) -> str:
    """The value as typed, quoted only when it would not read as one plain word."""
    return text if text and text.isprintable() and " " not in text and len(text) <= 40 else describe(text, 40)


def resolve_target(value: str | float | RangeFraction, runtime: RuntimeModel, flag: str = "--target") -> float:
    """The target in the device's units: a float as it is, ``P%`` (text or :class:`RangeFraction`)
    as ``lo + P/100 (hi - lo)`` of ``runtime``'s range."""
    parsed = parse_target(value, flag, runtime.units)
    return parsed.resolve(runtime) if isinstance(parsed, RangeFraction) else parsed


def range_fraction_options(options_cls: type) -> tuple[str, ...]:
    """The fields of a strategy's options dataclass that take ``P%`` (``option(..., range_fraction=True)``)."""
    return tuple(f.name for f in dataclasses.fields(options_cls) if f.metadata.get("range_fraction"))


def parse_target_options(options_cls: type, values: Mapping[str, Any],
                         units: str | None = None) -> tuple[dict[str, Any], dict[str, RangeFraction]]:
    """Split a strategy's option values (CLI text or YAML) before the latency table is known.

    Returns ``values`` with every given ``range_fraction`` option that is a plain cost parsed to a
    float and every ``P%`` one left out, and the left-out ones as :class:`RangeFraction` (to be
    resolved with :func:`resolve_target` and put back once the runtime model exists).
    """
    from spnas.core.errors import flag_name

    plain, fractions = dict(values), {}
    for name in range_fraction_options(options_cls):
        if values.get(name) is None:
            continue
        parsed = parse_target(values[name], flag_name(name), units)
        if isinstance(parsed, RangeFraction):
            fractions[name] = parsed
            del plain[name]
        else:
            plain[name] = parsed
    return plain, fractions


def range_position(latency: float, runtime: RuntimeModel) -> dict[str, Any]:
    """Where ``latency`` sits in the space's range on the device, for ``result.yaml``:
    ``range_fraction`` = (latency - lo) / (hi - lo) (0 when the range is one value) and
    ``latency_range`` = [lo, hi]."""
    lo, hi = runtime.bounds()
    fraction = (latency - lo) / (hi - lo) if hi > lo else 0.0
    return {"range_fraction": round(fraction, 6), "latency_range": [round(lo, 6), round(hi, 6)]}


def describe_position(latency: float, runtime: RuntimeModel) -> str:
    """``29% of the range 1.198-6.12``: the position of :func:`range_position`, for a person."""
    pos = range_position(latency, runtime)
    lo, hi = pos["latency_range"]
    return f"{pos['range_fraction'] * 100:.0f}% of the range {lo:.4g}-{hi:.4g}"
