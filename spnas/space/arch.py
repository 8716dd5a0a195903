"""Architectures: one op per searchable layer, as a short string a person can read.

The string form lists the searchable stages, separated by ``|``, each a list of ops::

    k3e3 k3e3 k3e3 skip | k5e6 k3e3 k3e3 k3e3 | ...

An op is ``k{kernel}e{expansion}`` or ``skip``. :func:`to_arch_def` writes timm-style block
strings (``ir_r1_k5_s2_e6_c40``), :func:`from_arch_def` reads them back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol, Sequence

from spnas.core.errors import SpaceError, describe



class SpaceLike(Protocol):
    """What an architecture needs of its space (:class:`spnas.space.graph.SpaceGraph` is one):
    defined here so that this module, below the graph, does not import it."""

    name: str
    stage_sizes: tuple[int, ...]

    def validate(self, arch: "Architecture") -> "Architecture": ...

    def block_groups(self) -> list[list[Any]]: ...

_OP_RE = re.compile(r"^k(\d+)e(\d+)$")


@dataclass(frozen=True, order=True)
class Op:
    """One candidate op of an MBConv layer; ``Op(0, 0)`` is the skip-op."""

    kernel: int
    expansion: int

    @property
    def is_skip(self) -> bool:
        return self.kernel == 0

    def __str__(self) -> str:
        return "skip" if self.is_skip else f"k{self.kernel}e{self.expansion}"

    @classmethod
    def parse(cls, text: str) -> "Op":
        """``"k5e6"`` -> ``Op(5, 6)``; ``"skip"`` -> :data:`SKIP`."""
        text = text.strip().lower()
        if text == "skip":
            return SKIP
        match = _OP_RE.match(text)
        if not match:
            raise SpaceError(f"{describe(text)} is not an op; use k<kernel>e<expansion> (e.g. k5e6) or skip")
        return cls(int(match.group(1)), int(match.group(2)))


SKIP = Op(0, 0)


@dataclass(frozen=True)
class Architecture:
    """One op per searchable layer, in network order.

    ``stages`` holds the number of searchable layers of each stage; it only affects how the
    string is grouped, not equality.

    Example:
        >>> arch = Architecture.parse("k3e3 k5e6 | k3e3 skip")
        >>> str(arch), arch.stages
        ('k3e3 k5e6 | k3e3 skip', (2, 2))
    """

    ops: tuple[Op, ...]
    stages: tuple[int, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.stages:
            object.__setattr__(self, "stages", (len(self.ops),))
        assert sum(self.stages) == len(self.ops), "stage sizes must add up to the number of ops"

    def __len__(self) -> int:
        return len(self.ops)

    def __str__(self) -> str:
        out, start = [], 0
        for size in self.stages:
            out.append(" ".join(str(op) for op in self.ops[start:start + size]))
            start += size
        return " | ".join(out)

    @classmethod
    def parse(cls, text: str, space: "SpaceLike | None" = None) -> "Architecture":
        """Read the string form; with ``space``, also validate it against that space."""
        if not isinstance(text, str) or not text.strip():
            raise SpaceError(f"{describe(text)} is not an architecture; use ops such as 'k3e3 k5e6 | skip k3e6'")
        groups = [g.replace(",", " ").split() for g in text.split("|")]
        if any(not g for g in groups):
            raise SpaceError(f"{describe(text)}: empty stage between '|' separators")
        ops = tuple(Op.parse(t) for g in groups for t in g)
        arch = cls(ops, tuple(len(g) for g in groups))
        if space is not None:
            if len(groups) > 1 and arch.stages != space.stage_sizes:
                raise SpaceError(
                    f"architecture {describe(text)} has stages of {list(arch.stages)} layers; "
                    f"space {space.name} has {list(space.stage_sizes)}"
                )
            arch = space.validate(arch)
        return arch

    def to_dict(self) -> dict:
        return {"arch": str(self), "ops": [str(op) for op in self.ops]}

    @classmethod
    def from_ops(cls, ops: Iterable[Op | str], stages: Sequence[int] = ()) -> "Architecture":
        return cls(tuple(op if isinstance(op, Op) else Op.parse(op) for op in ops), tuple(stages))


@dataclass(frozen=True)
class BlockDef:
    """One timm-style block string, decoded: ``ir_r1_k5_s2_e6_c40``."""

    block_type: str  # "ir" (inverted residual) or "ds" (depthwise separable)
    repeat: int
    kernel: int
    stride: int
    expansion: int
    out_chs: int
    noskip: bool = False

    def __str__(self) -> str:
        parts = [self.block_type, f"r{self.repeat}", f"k{self.kernel}", f"s{self.stride}"]
        if self.block_type == "ir":
            parts.append(f"e{self.expansion}")
        parts.append(f"c{self.out_chs}")
        if self.noskip:
            parts.append("noskip")
        return "_".join(parts)

    # option prefix -> (field, converter); a table, not an if/elif chain
    _OPTIONS = {"r": "repeat", "k": "kernel", "s": "stride", "e": "expansion", "c": "out_chs"}

    @classmethod
    def parse(cls, text: str) -> "BlockDef":
        parts = text.split("_")
        if parts[0] not in ("ir", "ds"):
            raise SpaceError(f"block string {describe(text)}: type {parts[0]!r} is not supported; use ir or ds")
        values: dict[str, object] = {"block_type": parts[0], "repeat": 1, "stride": 1, "expansion": 1}
        for part in parts[1:]:
            if part == "noskip":
                values["noskip"] = True
                continue
            name = cls._OPTIONS.get(part[:1])
            if name is None or not part[1:].isdigit():
                raise SpaceError(
                    f"block string {describe(text)}: option {part!r} is not supported; "
                    f"use r<repeat> k<kernel> s<stride> e<expansion> c<channels> or noskip"
                )
            values[name] = int(part[1:])
        for needed in ("kernel", "out_chs"):
            if needed not in values:
                raise SpaceError(f"block string {describe(text)}: missing the {needed} option")
        return cls(**values)  # type: ignore[arg-type]


def _merge(blocks: list[BlockDef]) -> list[BlockDef]:
    """Merge consecutive identical stride-1 blocks into one with a larger repeat (timm's r)."""
    out: list[BlockDef] = []
    for block in blocks:
        prev = out[-1] if out else None
        if prev and block.stride == 1 and (prev.block_type, prev.kernel, prev.expansion, prev.out_chs, prev.noskip) == (
            block.block_type, block.kernel, block.expansion, block.out_chs, block.noskip
        ):
            out[-1] = BlockDef(prev.block_type, prev.repeat + block.repeat, prev.kernel, prev.stride,
                               prev.expansion, prev.out_chs, prev.noskip)
        else:
            out.append(block)
    return out


def to_arch_def(arch: Architecture, space: SpaceLike) -> list[list[str]]:
    """timm-style ``arch_def``: one list of block strings per block of the space (stem and head excluded).

    Skipped layers are left out, and runs of identical layers are merged (``ir_r3_k3_s1_e3_c40``).
    """
    arch = space.validate(arch)
    stages: list[list[str]] = []
    for group in space.block_groups():
        blocks = []
        for layer in group:
            op = arch.ops[layer.search_index] if layer.searchable else layer.fixed_op
            if op.is_skip:
                continue
            kind = "ds" if op.expansion == 1 else "ir"
            blocks.append(BlockDef(kind, 1, op.kernel, layer.stride, op.expansion, layer.out_chs))
        stages.append([str(b) for b in _merge(blocks)])
    return stages


def from_arch_def(arch_def: Sequence[Sequence[str]], space: SpaceLike) -> Architecture:
    """Read a timm-style ``arch_def`` back into an Architecture of ``space``.

    Each stage's blocks fill the stage's layers in order; the layers left over are skips.
    """
    groups = space.block_groups()
    if len(arch_def) != len(groups):
        raise SpaceError(f"arch_def has {len(arch_def)} stages; space {space.name} has {len(groups)}")
    ops: list[Op] = []
    for i, (stage, group) in enumerate(zip(arch_def, groups)):
        layers = [BlockDef.parse(s) for s in stage]
        for b in layers:
            if b.out_chs != group[0].out_chs:
                raise SpaceError(f"arch_def stage {i}: block {b} has {b.out_chs} channels; the space has "
                                 f"{group[0].out_chs}")
        if layers and layers[0].stride != group[0].stride:
            raise SpaceError(f"arch_def stage {i}: block {layers[0]} has stride {layers[0].stride}; the space has "
                             f"{group[0].stride}")
        expanded = [Op(b.kernel, b.expansion) for b in layers for _ in range(b.repeat)]
        if len(expanded) > len(group):
            raise SpaceError(f"arch_def stage {i}: {len(expanded)} layers; the space has {len(group)}")
        if not group[0].searchable and expanded != [layer.fixed_op for layer in group]:
            raise SpaceError(f"arch_def stage {i}: {', '.join(stage)} differs from the space's fixed block")
        if group[0].searchable:
            ops.extend(expanded + [SKIP] * (len(group) - len(expanded)))
    return space.validate(Architecture(tuple(ops), space.stage_sizes))
