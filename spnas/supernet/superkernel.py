"""The Single-Path superkernel (Stamoulis et al. 2019, Sec. 3.1-3.2, Eq. 1-3).

One MBConv layer holds the weights of every candidate op: a 1x1 expansion to the largest ratio
(``conv_pw``), a depthwise conv with the largest kernel (``conv_dw``), a 1x1 projection
(``conv_pwl``). Smaller kernels are the centre of the largest one (rings nest: 3x3 in 5x5 in
7x7), smaller expansion ratios are the first channels (e3 channels in e6 channels), and
dropping the first channel group is the skip-op.

Decisions (Eq. 2-3), for kernel sizes k_0 < ... < k_{K-1} and ratios e_0 < ... < e_{E-1}:

* kernel: ``g_m = 1(||ring_{m+1}(w)|| - t_k[m] >= 0)``, where ring m+1 holds the positions of
  k_{m+1} outside k_m, over all channels. The kernel in use is
  ``w_k = w * (centre + g_0 ring_1 + g_0 g_1 ring_2 + ...)``.
* channels, computed on the kernel already chosen: ``h_j = 1(||w_k[group_j]|| - t_e[j] >= 0)``;
  group 0 is the first ``in_chs * e_0`` channels and ``h_0 = 0`` skips the layer (only where skip
  is allowed; otherwise ``h_0 = 1``). Channel group j is used when ``h_1 ... h_j`` are all 1.

Indicators are hard in the forward pass and pass the sigmoid's gradient backwards
(straight-through, as in the authors' ``Indicator``). Thresholds start at 0, so every norm wins
and the search starts from the largest op.

Exactness. The authors multiply only the depthwise weights by the channel indicators, so the
BatchNorm shift of a dropped channel still reaches the projection. Here the decisions act where
they are exact: the kernel mask on the depthwise weights, the channel mask on the projection's
input channels (equal to masking the activations, without storing a second activation), and the
skip indicator on the last BatchNorm's affine parameters (so a skipped layer's branch is exactly
zero). With hard indicators the layer equals the standalone MBConv of the chosen op.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from spnas.space.arch import Op


class _HardSigmoidSTE(torch.autograd.Function):
    """1(x >= 0) forward; d sigmoid(x)/dx backward. Exact 0.0/1.0 values (no ``h - s + s`` rounding)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        z = torch.exp(-x.abs())  # s (1 - s) = z / (1 + z)^2: no cancellation in 1 - s for large |x|
        return grad * z / (1 + z) ** 2


def indicator(x: Tensor) -> Tensor:
    """The paper's indicator ``1(x >= 0)`` with a sigmoid straight-through gradient."""
    return _HardSigmoidSTE.apply(x)


def make_act(name: str) -> nn.Module:
    return nn.ReLU6(inplace=True) if name == "relu6" else nn.ReLU(inplace=True)


def _act_fn(name: str):
    return F.relu6 if name == "relu6" else F.relu


class BatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` that can normalise over the batch of every data-parallel rank (see
    :class:`spnas.core.distributed.sync_batchnorm`); otherwise, and for one process, exactly the same."""

    def forward(self, x: Tensor) -> Tensor:
        if self.__dict__.get("sync_batchnorm"):
            return _bn(self, x)
        return super().forward(x)


def _bn(module: nn.BatchNorm2d, x: Tensor, n: int | None = None, weight: Tensor | None = None,
        bias: Tensor | None = None) -> Tensor:
    """BatchNorm over the first ``n`` channels of ``module``, exactly as ``module`` itself would run.

    Running statistics of those channels are updated in place; ``momentum=None`` means a cumulative
    average (used by BatchNorm recalibration), as in ``nn.BatchNorm2d``.
    """
    def part(t: Tensor | None) -> Tensor | None:  # no slicing op where every channel is used
        return t if n is None or t is None else t[:n]

    training = module.training or module.running_mean is None
    factor = 0.0
    if module.training and module.track_running_stats:
        module.num_batches_tracked.add_(1)
        factor = 1.0 / float(module.num_batches_tracked) if module.momentum is None else module.momentum
    if training and module.__dict__.get("sync_batchnorm"):  # data-parallel training: the batch of every rank
        from spnas.core.distributed import synced_batch_norm

        return synced_batch_norm(x, part(module.running_mean), part(module.running_var),
                                 part(module.weight) if weight is None else weight,
                                 part(module.bias) if bias is None else bias, factor, module.eps)
    return F.batch_norm(
        x, part(module.running_mean), part(module.running_var),
        part(module.weight) if weight is None else weight,
        part(module.bias) if bias is None else bias,
        training, factor, module.eps,
    )


# --- threshold mode on the CPU: one autograd node per layer --------------------------------------
# What a threshold-mode step costs beyond the plain MBConv is the number of small ops on tiny
# tensors (norms, indicators, masks): each costs microseconds forward and backward whatever its
# size (docs/performance.md). As autograd ops, decisions and masks are ~20 nodes and ~100 ops per
# layer (SuperMBConv._decide_graph, kept for accelerators and other dtypes). On the CPU they are one
# node, _ThresholdStep: the squared depthwise weights summed per (channel group, ring) block, a few
# Python floats per layer for Eq. 2-3, and a backward pass that is the chain rule of the same
# formulas, written out. Values are those of the graph; gradients equal it to float rounding.


def _sigmoid_slope(x: float) -> float:
    """``s (1 - s)`` with ``s = sigmoid(x)``: the indicator's straight-through gradient, as
    :class:`_HardSigmoidSTE` computes it."""
    z = math.exp(-abs(x))
    return z / (1.0 + z) ** 2


def _float32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def _chain(factors: list[float], rounding) -> list[float]:
    """``[1, f_1, f_1 f_2, ...]``, rounded as the weights' dtype would after every product."""
    out = [1.0]
    for f in factors:
        out.append(rounding(out[-1] * f))
    return out


def _chain_grad(factors: list[float], levels: list[float], d_levels: list[float]) -> list[float]:
    """Gradient of :func:`_chain` with respect to its factors (zeros included)."""
    grads, acc = [0.0] * len(factors), 0.0
    for i in range(len(factors), 0, -1):
        acc += d_levels[i]
        grads[i - 1] = acc * levels[i - 1]
        acc *= factors[i - 1]
    return grads


@dataclass
class _Values:
    """The per-layer numbers of Eq. 2-3, kept for the backward pass."""

    blocks: list[list[float]]  # sum of w^2 over channel group j (rows) x ring r (columns)
    ring_norm: list[float]  # rings 1.. (those with a decision)
    a: list[float]  # ring_norm - t_k
    g: list[float]
    levels: list[float]  # rings 0..: 1, g_1, g_1 g_2, ...
    group_norm: list[float]  # groups with a decision, of w_k = w * mask
    b: list[float]  # group_norm - t_e
    h: list[float]
    h_levels: list[float]  # groups 0..: 1, h_1, h_1 h_2, ...
    keep: list[float] | None
    keep_prob: float


def _read_layer(sk: "SuperMBConv", w_dw: Tensor, t_k: Tensor, t_e: Tensor):
    """One read from the tensors per layer: the sums of ``w^2`` over every (channel group, ring)
    block, the thresholds in norm units (``t * unit``, rounded as the tensor product would be) and
    the units (for the backward pass)."""
    buf, w = sk._buffers, w_dw.view(1, w_dw.shape[0], -1)
    per_group = torch.linalg.vecdot(w, w * buf["_group_onehot"], dim=1)  # (groups, K*K)
    n_e, n_p, n_k = per_group.shape[0], per_group.shape[1], t_k.shape[0]
    flat = torch.cat((per_group.view(-1), t_k, buf["t_kernel_unit"], t_e, buf["t_expansion_unit"])).tolist()
    rows = (flat[j * n_p:(j + 1) * n_p] for j in range(n_e))
    blocks = [[sum(map(row.__getitem__, ring)) for ring in sk._ring_positions] for row in rows]
    rest = flat[n_e * n_p:]
    units = rest[n_k:2 * n_k], rest[2 * n_k + n_e:]
    rounding = _float32 if w_dw.dtype == torch.float32 else float
    t_k_ = [rounding(t * u) for t, u in zip(rest[:n_k], units[0])]
    t_e_ = [rounding(t * u) for t, u in zip(rest[2 * n_k:2 * n_k + n_e], units[1])]
    return blocks, t_k_, t_e_, units


def _decide_values(blocks: list[list[float]], t_k: list[float], t_e: list[float], skip: bool,
                   keep: Tensor | None, keep_prob: float, w: Tensor) -> tuple[_Values, Tensor]:
    """Eq. 2-3 from the block sums of ``w^2``: the numbers, and ``g`` as a tensor."""
    n_g, first = len(t_k), 0 if skip else 1
    keep_ = keep.tolist() if keep is not None else None
    ring_norm = [math.sqrt(sum(row[m] for row in blocks)) for m in range(1, n_g + 1)]
    a = [n - t for n, t in zip(ring_norm, t_k)]
    g = [1.0 if x >= 0 else 0.0 for x in a]
    g_t = w.new_tensor(g)
    if keep is not None:  # kernel decisions are rescaled (see decide); tensor ops round as before
        g_t = g_t * keep[:n_g] / keep_prob
        g = g_t.tolist()
    levels = _chain(g, _float32 if w.dtype == torch.float32 else float)
    group_norm = [math.sqrt(sum(x * lv * lv for x, lv in zip(row, levels))) for row in blocks[first:]]
    b = [n - t for n, t in zip(group_norm, t_e[first:])]
    h = [1.0] * first + [(1.0 if x >= 0 else 0.0) * (keep_[n_g + i] if keep_ else 1.0) for i, x in enumerate(b)]
    v = _Values(blocks, ring_norm, a, g, levels, group_norm, b, h, _chain(h[1:], float), keep_, keep_prob)
    return v, g_t


def _decide_grads(v: _Values, d_g: list[float], d_h: list[float], d_levels: list[float],
                  d_h_levels: list[float]) -> tuple[list[list[float]], list[float], list[float]]:
    """Backward of :func:`_decide_values`: the coefficient of ``w`` in dL/dw on each (group, ring)
    block, dL/dt_k and dL/dt_e, from dL/d of g, h, the ring levels and the group levels."""
    n_g, n_e = len(v.g), len(v.h)
    d_h = [x + y for x, y in zip(d_h, [0.0] + _chain_grad(v.h[1:], v.h_levels, d_h_levels))]
    first = n_e - len(v.b)
    keep_g, keep_h = (v.keep[:n_g], v.keep[n_g:]) if v.keep else ([1.0] * n_g, [1.0] * len(v.b))
    d_te, r = [0.0] * n_e, [0.0] * n_e
    for i, j in enumerate(range(first, n_e)):  # group norms: d n_j / d w = w mask^2 / n_j
        d_b = d_h[j] * keep_h[i] * _sigmoid_slope(v.b[i])
        d_te[j] = -d_b
        r[j] = d_b / v.group_norm[i] if v.group_norm[i] else 0.0
    d_levels = [d + sum(r[j] * v.blocks[j][m] for j in range(n_e)) * lv
                for m, (d, lv) in enumerate(zip(d_levels, v.levels))]
    d_g = [x + y for x, y in zip(d_g, _chain_grad(v.g, v.levels, d_levels))]
    d_tk, q = [], [0.0]
    for m in range(n_g):  # ring norms: d n_m / d w = w / n_m on ring m
        d_a = (d_g[m] / v.keep_prob * keep_g[m] if v.keep else d_g[m]) * _sigmoid_slope(v.a[m])
        d_tk.append(-d_a)
        q.append(d_a / v.ring_norm[m] if v.ring_norm[m] else 0.0)
    coef = [[r[j] * lv * lv + q[m] for m, lv in enumerate(v.levels)] for j in range(n_e)]
    return coef, d_tk, d_te


class _ThresholdStep(torch.autograd.Function):
    """``(w_dw, w_pwl, bn3 affine, t_k, t_e) -> (g, h, masked weights)`` for one superkernel.

    BN3's affine is None where the layer cannot be skipped. Outputs: the decisions, the depthwise
    weights masked to the chosen kernel, the projection masked to the chosen channel groups and,
    with skip, BN3's affine times ``h_0`` (see :meth:`SuperMBConv._masked_weights`). A mask of
    ones returns its weights as they are (autograd makes them a view), saving two products. No
    matrix products or advanced indexing: on tiny operands they may still open a parallel region,
    and on a busy machine each one then waits a scheduler time slice (milliseconds) for a thread.
    """

    @staticmethod
    def forward(ctx, w_dw, w_pwl, bn_w, bn_b, t_k, t_e, sk, keep, keep_prob):  # type: ignore[override]
        blocks, t_k_, t_e_, units = _read_layer(sk, w_dw, t_k, t_e)
        v, g = _decide_values(blocks, t_k_, t_e_, sk.skip, keep, keep_prob, w_dw)
        mask = chan = None
        if any(lv != 1.0 for lv in v.levels + v.h_levels):  # else w * 1 == w: no product needed
            mask = w_dw.new_tensor([v.levels[r] for r in sk._ring_of_position]).view(w_dw.shape[2:])
            chan = w_dw.new_tensor(v.h_levels).index_select(0, sk._buffers["group_of_channel"]).view(-1, 1, 1)
        out = (g, w_dw.new_tensor(v.h),
               w_dw if mask is None else w_dw * mask, w_pwl if chan is None else w_pwl * chan)
        if bn_w is not None:
            out += (bn_w, bn_b) if v.h[0] == 1.0 else (bn_w * v.h[0], bn_b * v.h[0])
        ctx.save_for_backward(w_dw, w_pwl, bn_w, bn_b)
        ctx.sk, ctx.v, ctx.mask, ctx.chan, ctx.units = sk, v, mask, chan, units
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, d_g, d_h, d_dw, d_pwl, *d_bn):  # type: ignore[override]
        (w_dw, w_pwl, bn_w, bn_b), sk, v = ctx.saved_tensors, ctx.sk, ctx.v
        n_g, n_e, ring_of = len(v.g), len(v.h), sk._ring_of_position
        groups = sk._buffers["group_of_channel"]
        # dL/d(mask) per kernel position, dL/d(channel mask) summed per group, BN3's gate products
        parts = [d_g, d_h, torch.linalg.vecdot(d_dw, w_dw, dim=0).view(-1),
                 torch.bincount(groups, torch.linalg.vecdot(d_pwl, w_pwl, dim=0).view(-1), n_e)]
        if d_bn:
            parts += [d_bn[0] * bn_w, d_bn[1] * bn_b]
        flat = torch.cat(parts).tolist()
        pos, n_p = flat[n_g + n_e:], len(ring_of)
        d_h_ = flat[n_g:n_g + n_e]
        d_h_[0] += sum(pos[n_p + n_e:])  # h_0 gates BN3's affine
        d_levels = [sum(map(pos.__getitem__, ring)) for ring in sk._ring_positions]
        coef, d_tk, d_te = _decide_grads(v, flat[:n_g], d_h_, d_levels, pos[n_p:n_p + n_e])
        d_tk, d_te = ([d * u for d, u in zip(ds, us)] for ds, us in zip((d_tk, d_te), ctx.units))
        rows = w_dw.new_tensor([c[r] for c in coef for r in ring_of]).view(n_e, *w_dw.shape[1:])
        coef_w = rows.index_select(0, groups)  # the coefficient of every weight
        d_w_dw = torch.addcmul(d_dw if ctx.mask is None else d_dw * ctx.mask, w_dw, coef_w)
        d_bn_w = d_bn_b = None
        if d_bn:
            d_bn_w, d_bn_b = (d_bn[0], d_bn[1]) if v.h[0] == 1.0 else (d_bn[0] * v.h[0], d_bn[1] * v.h[0])
        return (d_w_dw, d_pwl if ctx.chan is None else d_pwl * ctx.chan, d_bn_w, d_bn_b,
                w_dw.new_tensor(d_tk) if d_tk else None, w_dw.new_tensor(d_te) if v.b else None,
                None, None, None)


class _Decision(tuple):
    """``(g, h)`` from :meth:`SuperMBConv.decide`, carrying the masked weights computed with them.

    The forward pass uses those weights while they still hold: same layer, weights not changed
    in place since, and computed with gradients if gradients are wanted now.
    """

    masked: tuple[Tensor, ...] = ()
    owner: "SuperMBConv | None" = None
    versions: tuple[int, ...] = ()
    with_grad: bool = False


class MBConv(nn.Module):
    """A standalone MBConv (inverted residual) of one op: timm's ``InvertedResidual`` layout.

    Expansion 1 has no expansion conv (timm's ``DepthwiseSeparableConv``). No activation after
    the projection (linear bottleneck); a residual when stride is 1 and shapes match.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, op: Op, act: str = "relu"):
        super().__init__()
        assert not op.is_skip, "a skipped layer is not built"
        self.in_chs, self.out_chs, self.stride, self.op = in_chs, out_chs, stride, op
        mid = in_chs * op.expansion
        self.has_pw = op.expansion != 1
        if self.has_pw:
            self.conv_pw = nn.Conv2d(in_chs, mid, 1, bias=False)
            self.bn1 = BatchNorm2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, op.kernel, stride, op.kernel // 2, groups=mid, bias=False)
        self.bn2 = BatchNorm2d(mid)
        self.conv_pwl = nn.Conv2d(mid, out_chs, 1, bias=False)
        self.bn3 = BatchNorm2d(out_chs)
        self.act = make_act(act)
        self.has_residual = stride == 1 and in_chs == out_chs

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if self.has_pw:
            y = self.act(self.bn1(self.conv_pw(y)))
        y = self.act(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_residual else y


class SuperMBConv(nn.Module):
    """An MBConv superkernel over nested kernel sizes and expansion ratios, with optional skip.

    Args:
        in_chs, out_chs, stride: the layer's shape.
        kernels: sorted odd kernel sizes, e.g. ``(3, 5)`` or ``(3, 5, 7)``.
        expansions: sorted expansion ratios >= 2, e.g. ``(3, 6)`` or ``(2, 4, 6)``.
        skip: whether the layer may be skipped (needs stride 1 and ``in_chs == out_chs``).
        act: ``relu`` or ``relu6``.

    Three ways to run it: ``forward(x, op=Op(5, 6))`` computes one op on sliced weights (fixed-choice
    mode, used by sampling strategies and equal to the standalone :class:`MBConv`);
    ``forward(x, decision=(g, h))`` runs the whole superkernel masked by indicators (threshold
    mode); :meth:`decide` computes those indicators from the weights and thresholds.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, kernels: Sequence[int],
                 expansions: Sequence[int], skip: bool, act: str = "relu"):
        super().__init__()
        assert list(kernels) == sorted(set(kernels)) and all(k % 2 for k in kernels)
        assert list(expansions) == sorted(set(expansions)) and expansions[0] >= 2
        assert not skip or (stride == 1 and in_chs == out_chs), "skip needs an identity shortcut"
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        self.kernels, self.expansions, self.skip = tuple(kernels), tuple(expansions), skip
        self.act_name = act
        k_max, mid = kernels[-1], in_chs * expansions[-1]
        self.mid = mid
        self.conv_pw = nn.Conv2d(in_chs, mid, 1, bias=False)
        self.bn1 = BatchNorm2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, k_max, stride, k_max // 2, groups=mid, bias=False)
        self.bn2 = BatchNorm2d(mid)
        self.conv_pwl = nn.Conv2d(mid, out_chs, 1, bias=False)
        self.bn3 = BatchNorm2d(out_chs)
        self.has_residual = stride == 1 and in_chs == out_chs
        # thresholds t_k (one per ring) and t_e (group 0 = skip decision, then one per extra group);
        # zeros: every norm is >= 0, so the search starts from the largest op (authors' init)
        self.t_kernel = nn.Parameter(torch.zeros(len(kernels) - 1))
        self.t_expansion = nn.Parameter(torch.zeros(len(expansions)))
        # threshold units: a threshold compares as t * unit (1: the paper's absolute norm units;
        # see set_threshold_units and docs/superkernel.md, "Threshold units")
        self.register_buffer("t_kernel_unit", torch.ones(len(kernels) - 1))
        self.register_buffer("t_expansion_unit", torch.ones(len(expansions)))
        squares = torch.zeros(len(kernels), k_max, k_max)
        for i, k in enumerate(kernels):
            o = (k_max - k) // 2
            squares[i, o:o + k, o:o + k] = 1.0
        rings = squares.clone()
        rings[1:] -= squares[:-1]
        self.register_buffer("rings", rings, persistent=False)  # rings[0] is the smallest kernel
        bounds = [in_chs * e for e in expansions]
        self.group_bounds = tuple(bounds)
        group = torch.bucketize(torch.arange(mid), torch.tensor(bounds), right=True)
        self.register_buffer("group_of_channel", group, persistent=False)
        self._register_selectors(rings, group)

    def _register_selectors(self, rings: Tensor, group: Tensor) -> None:
        """Which ring each kernel position lies in, and which group each channel (one-hot too), in
        the forms threshold mode indexes and multiplies with. A position lies in one ring and a
        channel in one group, so the masks built from them are exact."""
        ring_of_position = rings.reshape(rings.shape[0], -1).argmax(0)  # (K*K,), ring 0: smallest kernel
        self._ring_of_position = ring_of_position.tolist()
        self._ring_positions = [tuple(torch.nonzero(ring_of_position == r).flatten().tolist())
                                for r in range(rings.shape[0])]
        onehot = (group[None] == torch.arange(len(self.expansions))[:, None]).to(rings.dtype)
        self.register_buffer("_ring_index", ring_of_position, persistent=False)
        self.register_buffer("_group_onehot", onehot[:, :, None].contiguous(), persistent=False)  # (E, mid, 1)

    # --- decisions ------------------------------------------------------------------------
    def decide(self, keep_prob: float = 1.0) -> tuple[Tensor, Tensor]:
        """The indicators ``(g, h)`` of Eq. 2-3 from the current weights and thresholds.

        ``keep_prob < 1`` applies the authors' indicator dropout (warm-up): each decision is kept
        with probability ``keep_prob``. Kept kernel decisions are scaled by ``1 / keep_prob``, kept
        channel and skip decisions are not: in the authors' code every indicator scales depthwise
        weights that a BatchNorm follows, which cancels the scale of whole channels (channel and
        skip decisions) and keeps it only for the outer kernel ring relative to the centre. Here
        the channel and skip decisions act after that BatchNorm, so the same effect needs no scale.
        ``h[0]`` stays 1 where skip is not allowed.
        """
        w, w_pwl, bn_w, bn_b = weights = self._masked_params()
        keep = self._keep(keep_prob, w)
        if w.device.type != "cpu" or w.dtype not in (torch.float32, torch.float64):
            return self._decide_graph(keep, keep_prob)  # no host round trips on accelerators
        params = self._parameters
        out = _ThresholdStep.apply(w, w_pwl, bn_w if self.skip else None, bn_b if self.skip else None,
                                   params["t_kernel"], params["t_expansion"], self, keep, keep_prob)
        decision = _Decision(out[:2])
        decision.masked, decision.owner, decision.with_grad = out[2:], self, torch.is_grad_enabled()
        decision.versions = tuple(p._version for p in weights)
        return decision

    def _masked_params(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """conv_dw, conv_pwl, BN3 weight and bias, read from the module dicts: attribute lookups on
        an ``nn.Module`` cost microseconds each, and this runs twice per layer and step."""
        mods = self._modules
        bn3 = mods["bn3"]._parameters  # type: ignore[union-attr]
        return (mods["conv_dw"]._parameters["weight"], mods["conv_pwl"]._parameters["weight"],  # type: ignore
                bn3["weight"], bn3["bias"])

    def _decide_graph(self, keep: Tensor | None, keep_prob: float) -> tuple[Tensor, Tensor]:
        """:meth:`decide` as autograd ops (any device or dtype); :class:`_ThresholdStep` on the CPU."""
        w = self.conv_dw.weight
        n_g, first = len(self.kernels) - 1, 0 if self.skip else 1
        g = w.new_zeros(0)
        if n_g:  # Eq. 2, every ring at once: ||w * ring_m|| over all channels
            norms = torch.linalg.vector_norm(w * self.rings[1:, None, None], dim=(1, 2, 3, 4))
            g = indicator(norms - self.thresholds()[0])
            if keep is not None:
                g = g * keep[:n_g] / keep_prob
        if first == len(self.expansions):  # one ratio and no skip: nothing to decide
            return g, w.new_ones(1)
        # Eq. 3, every group at once, on the kernel already chosen: ||w_k[group_j]||
        wk = w * self._kernel_mask(g)
        groups = self._group_onehot[first:, :, :, None, None]
        norms = torch.linalg.vector_norm(wk * groups, dim=(1, 2, 3, 4))
        h = indicator(norms - self.thresholds()[1][first:])
        if keep is not None:
            h = h * keep[n_g:]
        return g, torch.cat([h.new_ones(1), h]) if first else h

    def thresholds(self) -> tuple[Tensor, Tensor]:
        """The thresholds in norm units: ``t_kernel * unit`` and ``t_expansion * unit``."""
        return self.t_kernel * self.t_kernel_unit, self.t_expansion * self.t_expansion_unit

    @torch.no_grad()
    def subset_norms(self) -> tuple[Tensor, Tensor]:
        """The norms the decisions compare: every kernel ring, then every channel group on the
        kernel the current thresholds choose (group 0 included, even where skip is not allowed)."""
        w = self.conv_dw.weight
        ring = torch.linalg.vector_norm(w * self.rings[1:, None, None], dim=(1, 2, 3, 4))
        g = (ring - self.thresholds()[0] >= 0).to(w.dtype)
        wk = w * self._kernel_mask(g)
        group = torch.linalg.vector_norm(wk * self._group_onehot[:, :, :, None, None], dim=(1, 2, 3, 4))
        return ring, group

    @torch.no_grad()
    def set_threshold_units(self, relative: bool) -> None:
        """Measure thresholds in absolute norm units (the paper) or in units of each subset's norm now.

        Relative units keep the decision ``||w_subset|| >= t * unit`` (still a norm against a
        threshold) but make ``t = 1`` mean "the norm this subset has at the start" in every layer,
        so a short run can move a threshold across a decision in a few dozen optimizer steps
        whatever the layer's width. Call it once, before training; the units are saved with the model.
        """
        self.t_kernel_unit.fill_(1.0)
        self.t_expansion_unit.fill_(1.0)
        if relative:
            ring, group = self.subset_norms()
            self.t_kernel_unit.copy_(ring.clamp_min(1e-12))
            self.t_expansion_unit.copy_(group.clamp_min(1e-12))

    def _keep(self, keep_prob: float, like: Tensor) -> Tensor | None:
        """0/1 dropout draws for every decision that has a threshold (kernel ones first), or None.

        One draw of n values gives the same random stream as n scalar draws in that order.
        """
        if keep_prob >= 1.0 or not self.training:
            return None
        n = len(self.kernels) - 1 + len(self.expansions) - (0 if self.skip else 1)
        return (torch.rand(n, device=like.device) < keep_prob).to(like.dtype)

    def _kernel_mask(self, g: Tensor) -> Tensor:
        """(K, K): ``rings[0] + g_1 rings[1] + g_1 g_2 rings[2] + ...``."""
        k = self.kernels[-1]
        return torch.cat([g.new_ones(1), g.cumprod(0)]).index_select(0, self._ring_index).view(k, k)

    def _channel_mask(self, h: Tensor) -> Tensor:
        """(mid, 1, 1): group j >= 1 is used when ``h_1 ... h_j`` are all 1; group 0 always."""
        levels = torch.cat([h.new_ones(1), h[1:].cumprod(0)])
        return levels.index_select(0, self.group_of_channel).view(-1, 1, 1)

    def op_of(self, g: Tensor, h: Tensor) -> Op:
        """The op selected by hard indicators."""
        g, h = g.detach().tolist(), h.detach().tolist()
        if h[0] == 0.0:
            return Op(0, 0)
        ki = 0
        while ki < len(g) and g[ki] != 0.0:
            ki += 1
        ei = 0
        while ei + 1 < len(h) and h[ei + 1] != 0.0:
            ei += 1
        return Op(self.kernels[ki], self.expansions[ei])

    @torch.no_grad()
    def force(self, op: Op, margin: float = 1e4) -> None:
        """Set the thresholds so that :meth:`decide` selects ``op`` (whatever the weights)."""
        if op.is_skip:
            assert self.skip, "this layer cannot be skipped"
            self.t_expansion.fill_(margin)
            return
        ki, ei = self.kernels.index(op.kernel), self.expansions.index(op.expansion)
        self.t_kernel.copy_(torch.tensor([-margin if m < ki else margin for m in range(len(self.kernels) - 1)]))
        self.t_expansion.copy_(torch.tensor([-margin if j <= ei else margin for j in range(len(self.expansions))]))

    # --- forward --------------------------------------------------------------------------
    def forward(self, x: Tensor, op: Op | None = None, decision: tuple[Tensor, Tensor] | None = None) -> Tensor:
        if op is not None:
            return self.forward_op(x, op)
        if decision is None:
            decision = self.decide()
        masked = self._prepared(decision)
        return self._run_masked(x, masked if masked is not None else self._masked_weights(*decision))

    def forward_masked(self, x: Tensor, g: Tensor, h: Tensor) -> Tensor:
        """The whole superkernel, masked by indicators (threshold mode)."""
        return self._run_masked(x, self._masked_weights(g, h))

    def _masked_weights(self, g: Tensor, h: Tensor) -> tuple[Tensor, ...]:
        """The depthwise weights masked to the chosen kernel, the projection's input channels to the
        chosen groups (exactly masking the activations, without storing a second one) and, with
        skip, BN3's affine times ``h_0``: a skipped branch must be exactly zero, not BN3's shift."""
        out = (self.conv_dw.weight * self._kernel_mask(g), self.conv_pwl.weight * self._channel_mask(h))
        if self.skip:
            out += (self.bn3.weight * h[0], self.bn3.bias * h[0])
        return out

    def _prepared(self, decision: tuple[Tensor, Tensor]) -> tuple[Tensor, ...] | None:
        """The masked weights :meth:`decide` computed with ``decision``, if they still hold."""
        if type(decision) is not _Decision or decision.owner is not self:
            return None
        if torch.is_grad_enabled() and not decision.with_grad:
            return None
        versions = tuple(p._version for p in self._masked_params())
        return decision.masked if decision.versions == versions else None

    def _run_masked(self, x: Tensor, masked: tuple[Tensor, ...]) -> Tensor:
        """The superkernel on masked weights. Functional BatchNorm as :func:`_bn` runs it (exactly
        as the modules would), without the module calls: this runs for every layer and step."""
        act = _act_fn(self.act_name)
        y = act(_bn(self.bn1, F.conv2d(x, self.conv_pw.weight)), inplace=True)
        y = act(_bn(self.bn2, F.conv2d(y, masked[0], None, self.stride, self.conv_dw.padding, 1, self.mid)),
                inplace=True)
        y = F.conv2d(y, masked[1])
        y = _bn(self.bn3, y, weight=masked[2], bias=masked[3]) if self.skip else _bn(self.bn3, y)
        return x + y if self.has_residual else y

    def forward_op(self, x: Tensor, op: Op) -> Tensor:
        """One op on sliced weights (fixed-choice mode): the cost of that op alone."""
        if op.is_skip:
            assert self.skip, "this layer cannot be skipped"
            return x
        act = _act_fn(self.act_name)
        mid, k = self.in_chs * op.expansion, op.kernel
        o = (self.kernels[-1] - k) // 2
        y = F.conv2d(x, self.conv_pw.weight[:mid])
        y = act(_bn(self.bn1, y, mid), inplace=True)
        y = F.conv2d(y, self.conv_dw.weight[:mid, :, o:o + k, o:o + k], None, self.stride, k // 2, 1, mid)
        y = act(_bn(self.bn2, y, mid), inplace=True)
        y = self.bn3(F.conv2d(y, self.conv_pwl.weight[:, :mid]))
        return x + y if self.has_residual else y

    @torch.no_grad()
    def export(self, op: Op) -> MBConv:
        """A standalone :class:`MBConv` of ``op`` with this superkernel's weights (eval-equal)."""
        mid, k = self.in_chs * op.expansion, op.kernel
        o = (self.kernels[-1] - k) // 2
        block = MBConv(self.in_chs, self.out_chs, self.stride, op, self.act_name)
        block.conv_pw.weight.copy_(self.conv_pw.weight[:mid])
        block.conv_dw.weight.copy_(self.conv_dw.weight[:mid, :, o:o + k, o:o + k])
        block.conv_pwl.weight.copy_(self.conv_pwl.weight[:, :mid])
        for name, n in (("bn1", mid), ("bn2", mid), ("bn3", None)):
            src, dst = getattr(self, name), getattr(block, name)
            sl = slice(None) if n is None else slice(0, n)
            for attr in ("weight", "bias", "running_mean", "running_var"):
                getattr(dst, attr).copy_(getattr(src, attr)[sl])
            dst.num_batches_tracked.copy_(src.num_batches_tracked)
        return block
