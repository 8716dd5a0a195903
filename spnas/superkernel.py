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

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spnas.arch import Op


class _HardSigmoidSTE(torch.autograd.Function):
    """1(x >= 0) forward; d sigmoid(x)/dx backward. Exact 0.0/1.0 values (no ``h - s + s`` rounding)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad * s * (1 - s)


def indicator(x: Tensor) -> Tensor:
    """The paper's indicator ``1(x >= 0)`` with a sigmoid straight-through gradient."""
    return _HardSigmoidSTE.apply(x)


def make_act(name: str) -> nn.Module:
    return nn.ReLU6(inplace=True) if name == "relu6" else nn.ReLU(inplace=True)


def _act_fn(name: str):
    return F.relu6 if name == "relu6" else F.relu


def _bn(module: nn.BatchNorm2d, x: Tensor, n: int | None = None, weight: Tensor | None = None,
        bias: Tensor | None = None) -> Tensor:
    """BatchNorm over the first ``n`` channels of ``module`` (running stats updated in place)."""
    sl = slice(None) if n is None else slice(0, n)
    training = module.training or module.running_mean is None
    return F.batch_norm(
        x,
        None if module.running_mean is None else module.running_mean[sl],
        None if module.running_var is None else module.running_var[sl],
        module.weight[sl] if weight is None else weight,
        module.bias[sl] if bias is None else bias,
        training, module.momentum if module.momentum is not None else 0.1, module.eps,
    )


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
            self.bn1 = nn.BatchNorm2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, op.kernel, stride, op.kernel // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv_pwl = nn.Conv2d(mid, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
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
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, k_max, stride, k_max // 2, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv_pwl = nn.Conv2d(mid, out_chs, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.has_residual = stride == 1 and in_chs == out_chs
        # thresholds t_k (one per ring) and t_e (group 0 = skip decision, then one per extra group);
        # zeros: every norm is >= 0, so the search starts from the largest op (authors' init)
        self.t_kernel = nn.Parameter(torch.zeros(len(kernels) - 1))
        self.t_expansion = nn.Parameter(torch.zeros(len(expansions)))
        squares = torch.zeros(len(kernels), k_max, k_max)
        for i, k in enumerate(kernels):
            o = (k_max - k) // 2
            squares[i, o:o + k, o:o + k] = 1.0
        rings = squares.clone()
        rings[1:] -= squares[:-1]
        self.register_buffer("rings", rings, persistent=False)  # rings[0] is the smallest kernel
        bounds = [in_chs * e for e in expansions]
        self.group_bounds = tuple(bounds)
        self.register_buffer(
            "group_of_channel",
            torch.bucketize(torch.arange(mid), torch.tensor(bounds), right=True),
            persistent=False,
        )

    # --- decisions ------------------------------------------------------------------------
    def decide(self, keep_prob: float = 1.0) -> tuple[Tensor, Tensor]:
        """The indicators ``(g, h)`` of Eq. 2-3 from the current weights and thresholds.

        ``keep_prob < 1`` applies indicator dropout (each kept with that probability and scaled by
        ``1 / keep_prob``, as in the authors' warm-up); ``h[0]`` stays 1 where skip is not allowed.
        """
        w = self.conv_dw.weight.squeeze(1)  # (mid, K, K)
        g = []
        mask = self.rings[0]
        level = None
        for m in range(1, len(self.kernels)):
            norm = (w * self.rings[m]).norm()
            gm = self._drop(indicator(norm - self.t_kernel[m - 1]), keep_prob)
            g.append(gm)
            level = gm if level is None else level * gm
            mask = mask + level * self.rings[m]
        wk = w * mask
        h = []
        lo = 0
        for j, hi in enumerate(self.group_bounds):
            if j == 0 and not self.skip:
                h.append(torch.ones((), dtype=w.dtype, device=w.device))
            else:
                norm = wk[lo:hi].norm()
                h.append(self._drop(indicator(norm - self.t_expansion[j]), keep_prob))
            lo = hi
        g_t = torch.stack(g) if g else w.new_zeros(0)
        return g_t, torch.stack(h)

    def _drop(self, ind: Tensor, keep_prob: float) -> Tensor:
        if keep_prob >= 1.0 or not self.training:
            return ind
        keep = (torch.rand((), device=ind.device) < keep_prob).to(ind.dtype)
        return ind * keep / keep_prob

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
        g, h = decision if decision is not None else self.decide()
        return self.forward_masked(x, g, h)

    def forward_masked(self, x: Tensor, g: Tensor, h: Tensor) -> Tensor:
        """The whole superkernel, masked by indicators (threshold mode)."""
        act = _act_fn(self.act_name)
        mask = self.rings[0]
        level = None
        for m in range(1, len(self.kernels)):
            level = g[m - 1] if level is None else level * g[m - 1]
            mask = mask + level * self.rings[m]
        w_dw = self.conv_dw.weight * mask
        # channel group j is used when h_1 ... h_j are all 1 (group 0 always; h_0 gates the branch)
        levels = torch.cumprod(torch.cat([h.new_ones(1), h[1:]]), 0)
        w_pwl = self.conv_pwl.weight * levels[self.group_of_channel].view(1, -1, 1, 1)
        y = act(self.bn1(self.conv_pw(x)), inplace=True)
        y = act(self.bn2(F.conv2d(y, w_dw, None, self.stride, self.conv_dw.padding, 1, self.mid)), inplace=True)
        y = F.conv2d(y, w_pwl)
        if self.skip:  # a skipped branch must be exactly zero: gate BN3's affine, not only its input
            y = _bn(self.bn3, y, weight=self.bn3.weight * h[0], bias=self.bn3.bias * h[0])
        else:
            y = self.bn3(y)
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
