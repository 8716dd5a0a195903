"""Turn a :class:`~spnas.space.graph.SpaceGraph` into modules: the supernet and child networks.

The graph holds specs; this builder makes ``nn.Module``s from them (like timm's
``EfficientNetBuilder``). A :class:`ChildNet` is the standalone network of one architecture;
``ChildNet.from_supernet`` copies the supernet's weights so that, in eval mode,
``childnet(x) == supernet(x, arch=arch)`` (up to float rounding).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from spnas.space.arch import Architecture, Op
from spnas.space.graph import LayerNode, SpaceGraph
from spnas.supernet.superkernel import BatchNorm2d, MBConv, SuperMBConv, make_act

Decision = tuple[Tensor, Tensor]


class ConvBnAct(nn.Sequential):
    def __init__(self, in_chs: int, out_chs: int, kernel: int, stride: int, act: str):
        super().__init__(
            nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, bias=False),
            BatchNorm2d(out_chs),
            make_act(act),
        )


class Classifier(nn.Module):
    """Global average pooling, dropout, linear."""

    def __init__(self, in_chs: int, num_classes: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_chs, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.dropout(x.mean((2, 3))))


def _fixed_module(layer: LayerNode, space: SpaceGraph) -> nn.Module:
    act = space.spec.activation
    if layer.kind == "conv":
        return ConvBnAct(layer.in_chs, layer.out_chs, layer.kernel, layer.stride, act)
    if layer.kind == "classifier":
        return Classifier(layer.in_chs, layer.out_chs, space.spec.dropout)
    return MBConv(layer.in_chs, layer.out_chs, layer.stride, layer.fixed_op, act)


def _init_weights(model: nn.Module) -> None:
    """MobileNet-style init (as timm's ``_init_weight_goog``): fan-out normal convs, unit BN."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / m.weight.size(0) ** 0.5
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)


class Supernet(nn.Module):
    """Every layer of the space; searchable layers are :class:`SuperMBConv` superkernels.

    Example:
        >>> space = SpaceGraph.load("tiny")
        >>> net = Supernet(space)
        >>> logits = net(torch.randn(2, 3, 16, 16))                      # threshold mode
        >>> logits = net(torch.randn(2, 3, 16, 16), arch=space.largest())  # fixed-choice mode
    """

    def __init__(self, space: SpaceGraph):
        super().__init__()
        self.space = space
        act = space.spec.activation
        layers: list[nn.Module] = []
        for layer in space.layers:
            if layer.searchable:
                layers.append(SuperMBConv(layer.in_chs, layer.out_chs, layer.stride, layer.kernels,
                                          layer.expansions, layer.skip_allowed, act))
            else:
                layers.append(_fixed_module(layer, space))
        self.layers = nn.ModuleList(layers)
        self.search_positions = tuple(i for i, l in enumerate(space.layers) if l.searchable)
        _init_weights(self)

    @property
    def superkernels(self) -> list[SuperMBConv]:
        return [self.layers[i] for i in self.search_positions]  # type: ignore[misc]

    def threshold_parameters(self) -> list[nn.Parameter]:
        return [p for sk in self.superkernels for p in (sk.t_kernel, sk.t_expansion)]

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.threshold_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def decide(self, keep_prob: float = 1.0) -> list[Decision]:
        """The indicators of every searchable layer (see :meth:`SuperMBConv.decide`)."""
        return [sk.decide(keep_prob) for sk in self.superkernels]

    def set_threshold_units(self, relative: bool) -> None:
        """Absolute (the paper) or relative threshold units in every superkernel (see SuperMBConv)."""
        for sk in self.superkernels:
            sk.set_threshold_units(relative)

    @torch.no_grad()
    def read_arch(self) -> Architecture:
        """The architecture the thresholds select now (hard indicators, no dropout)."""
        ops = [sk.op_of(*sk.decide(1.0)) for sk in self.superkernels]
        return self.space.arch(ops)

    @torch.no_grad()
    def force(self, arch: Architecture) -> None:
        """Set every threshold so that threshold mode selects ``arch``."""
        arch = self.space.validate(arch)
        for sk, op in zip(self.superkernels, arch.ops):
            sk.force(op)

    def forward(self, x: Tensor, arch: Architecture | None = None,
                decisions: Sequence[Decision] | None = None) -> Tensor:
        """Threshold mode by default; ``arch`` runs that architecture's path on sliced weights;
        ``decisions`` (from :meth:`decide`) lets the caller reuse the indicators, e.g. for the
        runtime model, so that both see the same (possibly dropped-out) values."""
        if arch is not None:
            ops: Sequence[Op | None] = arch.ops
        else:
            if decisions is None:
                decisions = self.decide()
        s = 0
        for i, module in enumerate(self.layers):
            if i in self.search_positions:
                if arch is not None:
                    x = module(x, op=ops[s])
                else:
                    x = module(x, decision=decisions[s])  # type: ignore[index]
                s += 1
            else:
                x = module(x)
        return x


class ChildNet(nn.Module):
    """The standalone network of one architecture (skipped layers are not built)."""

    def __init__(self, space: SpaceGraph, arch: Architecture):
        super().__init__()
        self.space, self.arch = space, space.validate(arch)
        act = space.spec.activation
        layers: list[nn.Module] = []
        for layer in space.layers:
            if layer.searchable:
                op = self.arch.ops[layer.search_index]
                layers.append(nn.Identity() if op.is_skip else
                              MBConv(layer.in_chs, layer.out_chs, layer.stride, op, act))
            else:
                layers.append(_fixed_module(layer, space))
        self.layers = nn.Sequential(*layers)
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)

    @classmethod
    @torch.no_grad()
    def from_supernet(cls, supernet: Supernet, arch: Architecture) -> "ChildNet":
        """A child network carrying ``supernet``'s weights for ``arch`` (BatchNorm statistics included)."""
        child = cls(supernet.space, arch)
        for i, (src, dst) in enumerate(zip(supernet.layers, child.layers)):
            if isinstance(src, SuperMBConv):
                op = child.arch.ops[supernet.search_positions.index(i)]
                if not op.is_skip:
                    dst.load_state_dict(src.export(op).state_dict())
            else:
                dst.load_state_dict(src.state_dict())
        return child


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches, arch: Architecture | None = None,
                   device: torch.device | None = None) -> None:
    """Recompute BatchNorm running statistics on ``batches`` (as SPOS does for each candidate).

    Resets every BatchNorm's statistics and re-estimates them as a plain average over the batches,
    in train mode, on ``arch``'s path (supernet) or the model's own path. Statistics accumulated
    while the search sampled other paths do not match the chosen network; these do.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [(m.momentum, m.training) for m in bns]
    was_training = model.training
    model.train()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    for x, *_ in batches:
        x = x.to(device) if device is not None else x
        model(x) if arch is None else model(x, arch=arch)
    for m, (momentum, training) in zip(bns, saved):
        m.momentum = momentum
    model.train(was_training)
