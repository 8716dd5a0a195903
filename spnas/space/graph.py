"""Compile a :class:`~spnas.space.spec.SpaceSpec` into a networkx graph of layer specs.

Nodes are :class:`LayerNode` values (shapes, stride, candidate ops, parameters and MACs per op);
edges follow the data flow. The graph holds specs only: :mod:`spnas.supernet.builder` turns them into
modules. :class:`SpaceGraph` answers the questions every other part asks: how many searchable
layers, how large the space is, what an architecture costs, what each layer's signature is.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterator

import networkx as nx

from spnas.space.arch import SKIP, Architecture, Op
from spnas.core.errors import SpaceError, describe
from spnas.space.spec import FixedBlockSpec, SearchStageSpec, SpaceSpec, load_space_file

#: the table key of a layer that is not an MBConv (stem conv, head conv, pooling + classifier)
FIXED_KEY = "op"


def conv_out(res: int, stride: int) -> int:
    """Spatial size after a 'same'-padded convolution (padding k // 2, odd k)."""
    return (res - 1) // stride + 1


def mbconv_cost(op: Op, in_chs: int, out_chs: int, in_res: int, stride: int) -> tuple[int, int]:
    """(parameters, MACs) of one MBConv op; BatchNorm counts 2 parameters per channel.

    Expansion 1 has no 1x1 expansion conv (MobileNetV2's first block, timm's ``ds`` block).
    """
    if op.is_skip:
        return 0, 0
    out_res = conv_out(in_res, stride)
    mid = in_chs * op.expansion
    params = macs = 0
    if op.expansion != 1:
        params += in_chs * mid + 2 * mid
        macs += in_res * in_res * in_chs * mid
    params += op.kernel * op.kernel * mid + 2 * mid
    macs += out_res * out_res * op.kernel * op.kernel * mid
    params += mid * out_chs + 2 * out_chs
    macs += out_res * out_res * mid * out_chs
    return params, macs


@dataclass(frozen=True)
class LayerNode:
    """One layer of the network, as data.

    ``kind`` is ``conv`` (stem and head 1x1 conv, with BatchNorm and activation), ``mbconv``
    (fixed or searchable) or ``classifier`` (global average pooling, dropout, linear).
    ``ops`` are the candidate MBConv ops (one for a fixed MBConv; none for other kinds), and
    ``params`` / ``macs`` are aligned with ``ops`` (skip included, at cost 0), or hold the one
    entry of a layer without ops.
    """

    name: str
    kind: str
    in_chs: int
    out_chs: int
    stride: int
    in_res: int
    kernel: int
    ops: tuple[Op, ...]
    params: tuple[int, ...]
    macs: tuple[int, ...]
    searchable: bool = False
    search_index: int = -1
    block: int = -1  # index into SpaceSpec.blocks, -1 for stem and head

    @property
    def out_res(self) -> int:
        return conv_out(self.in_res, self.stride)

    @property
    def residual(self) -> bool:
        return self.kind == "mbconv" and self.stride == 1 and self.in_chs == self.out_chs

    @property
    def kernels(self) -> tuple[int, ...]:
        return tuple(sorted({op.kernel for op in self.ops if not op.is_skip}))

    @property
    def expansions(self) -> tuple[int, ...]:
        return tuple(sorted({op.expansion for op in self.ops if not op.is_skip}))

    @property
    def skip_allowed(self) -> bool:
        return SKIP in self.ops

    @property
    def fixed_op(self) -> Op:
        assert not self.searchable and self.kind == "mbconv"
        return self.ops[0]

    @property
    def choices(self) -> tuple[str, ...]:
        """Keys of this layer's latency-table entries (skip, which costs 0, is not one)."""
        if self.kind != "mbconv":
            return (FIXED_KEY,)
        return tuple(str(op) for op in self.ops if not op.is_skip)

    @property
    def signature(self) -> str:
        """Latency-table key, derived from shapes only (never from the layer's position)."""
        if self.kind == "mbconv":
            return f"mbconv_i{self.in_chs}_o{self.out_chs}_s{self.stride}_r{self.in_res}"
        if self.kind == "conv":
            return f"conv_k{self.kernel}_i{self.in_chs}_o{self.out_chs}_s{self.stride}_r{self.in_res}"
        return f"pool_fc_i{self.in_chs}_o{self.out_chs}_r{self.in_res}"

    def cost(self, op: Op | None = None) -> tuple[int, int]:
        """(parameters, MACs) of this layer with ``op`` (its only op when fixed)."""
        if op is None:
            return self.params[0], self.macs[0]
        try:
            i = self.ops.index(op)
        except ValueError:
            raise SpaceError(f"layer {self.name}: op {op} is not a candidate; allowed: "
                             f"{', '.join(str(o) for o in self.ops)}") from None
        return self.params[i], self.macs[i]


def _fixed_layer(name, kind, in_chs, out_chs, stride, res, kernel, params, macs, block=-1) -> LayerNode:
    return LayerNode(name, kind, in_chs, out_chs, stride, res, kernel, (), (params,), (macs,), block=block)


def _mbconv_node(name: str, ops: tuple[Op, ...], in_chs: int, out_chs: int, stride: int, res: int,
                 block: int, search_index: int = -1) -> LayerNode:
    costs = [mbconv_cost(op, in_chs, out_chs, res, stride) for op in ops]
    return LayerNode(
        name, "mbconv", in_chs, out_chs, stride, res, max(op.kernel for op in ops), ops,
        tuple(c[0] for c in costs), tuple(c[1] for c in costs),
        searchable=search_index >= 0, search_index=search_index, block=block,
    )


def _layers(spec: SpaceSpec) -> Iterator[LayerNode]:
    res, chs = spec.resolution, spec.in_chs
    st = spec.stem
    out_res = conv_out(res, st.stride)
    yield _fixed_layer("stem", "conv", chs, st.out_chs, st.stride, res, st.kernel,
                       st.kernel ** 2 * chs * st.out_chs + 2 * st.out_chs,
                       out_res ** 2 * st.kernel ** 2 * chs * st.out_chs)
    res, chs = out_res, st.out_chs
    search_index = 0
    for b, block in enumerate(spec.blocks):
        for j in range(block.layers):
            stride = block.stride if j == 0 else 1
            name = f"blocks.{b}.{j}"
            if isinstance(block, FixedBlockSpec):
                node = _mbconv_node(name, (Op(block.kernel, block.expansion),), chs, block.out_chs, stride, res, b)
            else:
                ops = tuple(Op(k, e) for k in block.kernel for e in block.expansion)
                if block.skip and j > 0:
                    ops = ops + (SKIP,)
                node = _mbconv_node(name, ops, chs, block.out_chs, stride, res, b, search_index)
                search_index += 1
            yield node
            res, chs = node.out_res, node.out_chs
    yield _fixed_layer("head", "conv", chs, spec.head_chs, 1, res, 1,
                       chs * spec.head_chs + 2 * spec.head_chs, res * res * chs * spec.head_chs)
    yield _fixed_layer("classifier", "classifier", spec.head_chs, spec.num_classes, 1, res, 1,
                       spec.head_chs * spec.num_classes + spec.num_classes, spec.head_chs * spec.num_classes)


def compile_space(spec: SpaceSpec) -> nx.DiGraph:
    """The layer graph: node ``name`` -> attribute ``layer`` (a :class:`LayerNode`), edges in data order."""
    graph = nx.DiGraph(name=spec.name, spec=spec)
    prev = None
    for node in _layers(spec):
        graph.add_node(node.name, layer=node)
        if prev is not None:
            graph.add_edge(prev, node.name, shape=(node.in_chs, node.in_res, node.in_res))
        prev = node.name
    return graph


class SpaceGraph:
    """A compiled search space: the spec, its layer graph, and what can be asked of them.

    Example:
        >>> space = SpaceGraph.load("spnas-imagenet")
        >>> space.num_searchable, space.size
        (20, 31250000000000)
    """

    def __init__(self, spec: SpaceSpec):
        self.spec = spec
        self.graph = compile_space(spec)

    @classmethod
    def load(cls, name_or_path: str | Path) -> "SpaceGraph":
        """A registered space name (see ``spnas space list``) or a path to a YAML file."""
        from spnas.core.registry import get_registry

        text = str(name_or_path)
        path = Path(text)
        if path.suffix in (".yaml", ".yml") or path.exists():
            return cls(load_space_file(path))
        return cls(load_space_file(get_registry().space_path(text)))

    @property
    def name(self) -> str:
        return self.spec.name

    @cached_property
    def layers(self) -> tuple[LayerNode, ...]:
        return tuple(self.graph.nodes[n]["layer"] for n in nx.topological_sort(self.graph))

    @cached_property
    def searchable(self) -> tuple[LayerNode, ...]:
        return tuple(layer for layer in self.layers if layer.searchable)

    @property
    def num_searchable(self) -> int:
        return len(self.searchable)

    @cached_property
    def stage_sizes(self) -> tuple[int, ...]:
        return tuple(b.layers for b in self.spec.blocks if isinstance(b, SearchStageSpec))

    @property
    def size(self) -> int:
        """Number of distinct architectures."""
        return math.prod(len(layer.ops) for layer in self.searchable)

    def block_groups(self) -> list[list[LayerNode]]:
        """The MBConv layers grouped by the spec's blocks (fixed blocks and searchable stages)."""
        groups: dict[int, list[LayerNode]] = {}
        for layer in self.layers:
            if layer.block >= 0:
                groups.setdefault(layer.block, []).append(layer)
        return [groups[b] for b in sorted(groups)]

    def signature(self) -> str:
        """A key for the space's shapes (for caches): the ordered layer signatures and choices."""
        import hashlib

        text = ";".join(f"{l.signature}:{','.join(l.choices)}" for l in self.layers)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    # --- architectures -------------------------------------------------------------------
    def validate(self, arch: Architecture) -> Architecture:
        """Check ``arch`` against this space; returns it grouped by this space's stages."""
        if len(arch) != self.num_searchable:
            raise SpaceError(
                f"architecture {describe(str(arch))} has {len(arch)} ops; space {self.name} has "
                f"{self.num_searchable} searchable layers (stages of {list(self.stage_sizes)})"
            )
        for layer, op in zip(self.searchable, arch.ops):
            if op not in layer.ops:
                if op.is_skip:
                    why = "cannot be skipped (first layer of its stage, or skip: false)"
                else:
                    why = f"has no op {op}; allowed: {', '.join(str(o) for o in layer.ops)}"
                raise SpaceError(f"architecture layer {layer.search_index} ({layer.name}) {why}")
        return Architecture(arch.ops, self.stage_sizes)

    def arch(self, ops) -> Architecture:
        """An Architecture of this space from ops or op strings (validated)."""
        return self.validate(Architecture.from_ops(ops))

    def parse(self, text: str) -> Architecture:
        return Architecture.parse(text, self)

    def canonical(self, arch: Architecture) -> Architecture:
        """The same network with each stage's skips moved to its end.

        Layers after the first of a stage share one shape, so where a skip sits does not change
        the network: ``k3e3 skip k5e6 k3e3`` and ``k3e3 k5e6 k3e3 skip`` are the same child network.
        """
        arch = self.validate(arch)
        ops, start = [], 0
        for size in self.stage_sizes:
            stage = arch.ops[start:start + size]
            kept = [op for op in stage if not op.is_skip]
            ops.extend(kept + [SKIP] * (size - len(kept)))
            start += size
        return self.arch(ops)

    def largest(self) -> Architecture:
        """Every searchable layer at its largest kernel and expansion (the search's start)."""
        return self.arch(Op(l.kernels[-1], l.expansions[-1]) for l in self.searchable)

    def smallest(self) -> Architecture:
        """Smallest kernel and expansion, and every skippable layer skipped."""
        return self.arch(SKIP if l.skip_allowed else Op(l.kernels[0], l.expansions[0]) for l in self.searchable)

    def uniform(self, op: Op | str) -> Architecture:
        """The same op in every searchable layer."""
        return self.arch([op] * self.num_searchable)

    def random(self, rng: random.Random) -> Architecture:
        """One op per layer, uniformly at random."""
        return self.arch(rng.choice(l.ops) for l in self.searchable)

    def cost(self, arch: Architecture) -> tuple[int, int]:
        """(parameters, MACs) of the child network of ``arch``."""
        arch = self.validate(arch)
        params = macs = 0
        for layer in self.layers:
            p, m = layer.cost(arch.ops[layer.search_index] if layer.searchable else None)
            params += p
            macs += m
        return params, macs
