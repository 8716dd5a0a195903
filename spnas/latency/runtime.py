"""The runtime model R: Eq. 10-12 of Single-Path NAS (Stamoulis et al. 2019), any nesting.

The paper writes the runtime of a searchable MBConv layer with kernels {3, 5} and expansions
{3, 6} in the superkernel's indicator functions (Eq. 10: the kernel decision inside each channel
group; Eq. 11: the channel decisions, where dropping the first group is the skip-op), and the
network's runtime as a constant for the fixed layers plus the sum over searchable layers (Eq. 12).

Here the same construction holds for any sorted kernel set k_0 < ... < k_{K-1} and expansion set
e_0 < ... < e_{E-1}. A layer's indicators are ``g`` (shape ``[K-1]``; ``g[m]`` = 1: use kernel
ring m+1) and ``h`` (shape ``[E]``; ``h[0]`` = 1: keep the layer, ``h[j]`` = 1: use channel group
j). Decisions are nested, so a ring or group counts only if every inner one is on::

    a = [1, g0, g0 g1, ..., prod(g)]      P_i = a_i - a_{i+1}   (a_K = 0)
    b = [h0, h0 h1, ..., prod(h)]         Q_j = b_j - b_{j+1}   (b_E = 0)
    R_l = sum_ij P_i Q_j T_l[i, j]        T_l[i, j] = table entry of op k{k_i}e{e_j}
    R   = constant + sum_l R_l            (Eq. 12)

P (and Q) is the one-hot of the chosen kernel (expansion) at hard 0/1 indicators, and all zeros
for a skipped layer, so R equals the table sum of the chosen ops exactly; R is multilinear in the
indicators. For K = E = 2 it is the paper's Eq. 10-11:
``R_l = h0 (R_l^{e3}(g) + h1 (R_l^{e6}(g) - R_l^{e3}(g)))`` with
``R_l^{e}(g) = R_l^{k3,e} + g0 (R_l^{k5,e} - R_l^{k3,e})``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from spnas.space.arch import Architecture
from spnas.space.graph import LayerNode, SpaceGraph
from spnas.latency.table import LatencyTable

Indicators = Sequence[tuple[torch.Tensor, torch.Tensor]]


class RuntimeModel:
    """Differentiable runtime of a space's architectures, from a latency table.

    Example:
        >>> from spnas.devices.flops import FlopsDevice
        >>> space = SpaceGraph.load("tiny")
        >>> model = RuntimeModel(space, FlopsDevice().latency_table(space))
        >>> arch = space.parse("k7e6 skip | k3e3 k5e6")
        >>> abs(model(model.hard_indicators(arch)).item() - model.predict(arch)) < 1e-4
        True

    Attributes:
        constant: the cost of the non-searchable layers (``table.fixed_cost`` or their entries' sum),
            plus the table's once-per-network ``overhead``. Every layer cost is multiplied by the
            table's ``scale`` (1 unless the table was calibrated against whole networks).
        tables: for each searchable layer, ``T_l`` as a float64 ``[K, E]`` tensor.
    """

    def __init__(self, space: SpaceGraph, table: LatencyTable):
        self.space = space
        self.table = table
        costs = table.layer_costs(space)  # raises LatencyTableError listing what is missing
        if table.scale != 1.0:  # every layer cost scaled alike; the overhead is not
            costs = [{c: v * table.scale for c, v in row.items()} for row in costs]
        self._costs = [c for layer, c in zip(space.layers, costs) if layer.searchable]
        if table.fixed_cost is not None:
            self.constant = float(table.fixed_cost) * table.scale
        else:
            self.constant = 0.0
            for layer, c in zip(space.layers, costs):
                if not layer.searchable:
                    self.constant += c[layer.choices[0]]
        self.constant += table.overhead  # once per network
        self.tables = [layer_table(layer, c) for layer, c in zip(space.searchable, self._costs)]
        self._on_device: dict[torch.device, list[torch.Tensor]] = {}

    @property
    def units(self) -> str:
        return self.table.units

    def _tables_on(self, device: torch.device) -> list[torch.Tensor]:
        if device not in self._on_device:
            self._on_device[device] = [t.to(device) for t in self.tables]
        return self._on_device[device]

    def forward(self, indicators: Indicators) -> torch.Tensor:
        """R (Eq. 12) for one ``(g, h)`` pair per searchable layer, in network order.

        Computed in float64 and returned in the indicators' dtype; gradients flow to ``g`` and ``h``.
        For a layer that cannot be skipped, ``h[0]`` must be 1.
        """
        if len(indicators) != len(self.tables):
            raise ValueError(f"got indicators for {len(indicators)} layers; space {self.space.name} "
                             f"has {len(self.tables)} searchable layers")
        dtype, device = indicators[0][1].dtype, indicators[0][1].device
        total = torch.tensor(self.constant, dtype=torch.float64, device=device)
        for l, (T, (g, h)) in enumerate(zip(self._tables_on(device), indicators)):
            if g.shape != (T.shape[0] - 1,) or h.shape != (T.shape[1],):
                raise ValueError(f"searchable layer {l}: indicator shapes g {tuple(g.shape)}, h {tuple(h.shape)}; "
                                 f"expected g ({T.shape[0] - 1},), h ({T.shape[1]},)")
            total = total + layer_runtime(T, g.to(torch.float64), h.to(torch.float64))
        return total.to(dtype)

    __call__ = forward

    def hard_indicators(self, arch: Architecture, dtype: torch.dtype = torch.float32) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The 0/1 ``(g, h)`` of ``arch``: rings and groups up to the chosen ones on, the rest off."""
        arch = self.space.validate(arch)
        out = []
        for layer, op in zip(self.space.searchable, arch.ops):
            g = torch.zeros(len(layer.kernels) - 1, dtype=dtype)
            h = torch.zeros(len(layer.expansions), dtype=dtype)
            if not op.is_skip:
                g[: layer.kernels.index(op.kernel)] = 1
                h[: layer.expansions.index(op.expansion) + 1] = 1
            out.append((g, h))
        return out

    def op_cost(self, index: int, op) -> float:
        """The table cost of ``op`` in searchable layer ``index`` (0 for skip)."""
        return 0.0 if op.is_skip else self._costs[index][str(op)]

    def per_layer(self, arch: Architecture) -> list[float]:
        """The table cost of each searchable layer's op in ``arch`` (0 for skip)."""
        arch = self.space.validate(arch)
        return [0.0 if op.is_skip else c[str(op)] for op, c in zip(arch.ops, self._costs)]

    def predict(self, arch: Architecture) -> float:
        """R of ``arch``: the constant plus the table entries of its ops, summed exactly."""
        total = self.constant
        for cost in self.per_layer(arch):
            total += cost
        return total

    def bounds(self) -> tuple[float, float]:
        """The least and the greatest R over the whole space (exact: layers are independent)."""
        lo = hi = self.constant
        for layer, c in zip(self.space.searchable, self._costs):
            values = list(c.values()) + ([0.0] if layer.skip_allowed else [])
            lo += min(values)
            hi += max(values)
        return lo, hi


def layer_runtime(T: torch.Tensor, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """R_l = P^T T Q for one layer (see the module docstring); multilinear in ``g`` and ``h``."""
    zero = T.new_zeros(1)
    a = torch.cumprod(torch.cat([T.new_ones(1), g]), 0)  # a_i: kernel ring i is on
    b = torch.cumprod(h, 0)  # b_j: channel group j is on (b_0 = keep the layer)
    P = a - torch.cat([a[1:], zero])
    Q = b - torch.cat([b[1:], zero])
    return P @ T @ Q


def layer_table(layer: LayerNode, costs: dict[str, float]) -> torch.Tensor:
    """``T_l[i, j]`` = cost of ``k{kernels[i]}e{expansions[j]}``, float64."""
    return torch.tensor([[costs[f"k{k}e{e}"] for e in layer.expansions] for k in layer.kernels],
                        dtype=torch.float64)
