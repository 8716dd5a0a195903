"""A straightforward multi-path supernet (DARTS-style), as a baseline for the benchmarks.

Every searchable layer computes every candidate op, each its own :class:`~spnas.supernet.superkernel.MBConv`
(plus the identity where the layer may be skipped), and sums them with ``softmax(alpha)``
weights (Liu et al. 2019, DARTS, Eq. 2). This is the cost that Single-Path NAS avoids (Stamoulis
et al. 2019, Sec. 1): memory and time grow with the number of candidates per layer. It is only
used to put the single-path numbers in context; it is not part of the library.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spnas.supernet.builder import ChildNet
from spnas.space.graph import LayerNode, SpaceGraph
from spnas.supernet.superkernel import MBConv


class MultiPathMBConv(nn.Module):
    """``sum_i softmax(alpha)_i op_i(x)`` over every candidate op of one layer."""

    def __init__(self, layer: LayerNode, act: str):
        super().__init__()
        self.ops = [op for op in layer.ops if not op.is_skip]
        self.paths = nn.ModuleList(
            MBConv(layer.in_chs, layer.out_chs, layer.stride, op, act) for op in self.ops)
        self.has_identity = layer.skip_allowed  # the skip-op is the identity (stride 1, same width)
        self.alpha = nn.Parameter(torch.zeros(len(self.paths) + int(self.has_identity)))

    def forward(self, x: Tensor) -> Tensor:
        weights = F.softmax(self.alpha, 0)
        y = weights[0] * self.paths[0](x)
        for w, path in zip(weights[1:], self.paths[1:]):
            y = y + w * path(x)
        if self.has_identity:
            y = y + weights[-1] * x
        return y


class MultiPathNet(nn.Module):
    """The space's network with every searchable layer replaced by a :class:`MultiPathMBConv`.

    The fixed layers (stem, fixed blocks, head, classifier) are those of the space's largest
    child network, so the only difference to it is the searchable layers.

    Example:
        >>> net = MultiPathNet(SpaceGraph.load("tiny"))
        >>> net(torch.randn(2, 3, 16, 16)).shape[0]
        2
    """

    def __init__(self, space: SpaceGraph):
        super().__init__()
        layers = list(ChildNet(space, space.largest()).layers)
        for i, layer in enumerate(space.layers):
            if layer.searchable:
                layers[i] = MultiPathMBConv(layer, space.spec.activation)
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
