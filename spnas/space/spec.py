"""Search-space files: YAML in, validated frozen dataclasses out.

A space is plain data (no includes, no substitution, no eval), read with ``yaml.safe_load``.
Every error names the file, the key path, the bad value and what is allowed, e.g.::

    spnas-x.yaml: blocks[2].search.kernel: [3, 4] contains even kernel size 4; use odd sizes such as [3, 5]

See ``docs/search-space.md`` for every field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from spnas.core.errors import SpaceError, describe, keypath

ACTIVATIONS = ("relu", "relu6")


@dataclass(frozen=True)
class StemSpec:
    """The first convolution (conv, BatchNorm, activation)."""

    out_chs: int
    kernel: int = 3
    stride: int = 2


@dataclass(frozen=True)
class FixedBlockSpec:
    """Fixed MBConv layers: one kernel size and one expansion ratio (1 means no 1x1 expansion)."""

    out_chs: int
    kernel: int
    expansion: int
    stride: int = 1
    layers: int = 1


@dataclass(frozen=True)
class SearchStageSpec:
    """A searchable stage: ``layers`` MBConv superkernels, the first with ``stride``.

    ``kernel`` and ``expansion`` are sorted choice sets; nested subsets of one superkernel.
    ``skip`` lets every layer after the first be dropped (the first changes the shape).
    """

    out_chs: int
    layers: int
    stride: int
    kernel: tuple[int, ...]
    expansion: tuple[int, ...]
    skip: bool = True


BlockSpec = FixedBlockSpec | SearchStageSpec


@dataclass(frozen=True)
class SpaceSpec:
    """A MobileNetV2-style search space, channels already scaled by ``width_multiplier``."""

    name: str
    resolution: int
    in_chs: int
    num_classes: int
    stem: StemSpec
    blocks: tuple[BlockSpec, ...]
    head_chs: int
    width_multiplier: float = 1.0
    dropout: float = 0.0
    activation: str = "relu"
    description: str = ""
    source: str = "<memory>"

    @property
    def total_stride(self) -> int:
        stride = self.stem.stride
        for block in self.blocks:
            stride *= block.stride
        return stride


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor``, never more than 10 % down (MobileNetV2)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class _Reader:
    """Typed access to one YAML mapping with errors that name the file and key path."""

    def __init__(self, source: str, data: Any, path: tuple[str | int, ...] = ()):
        self.source = source
        self.path = path
        if not isinstance(data, Mapping):
            self.fail(data, "must be a mapping of keys to values")
        self.data = data

    def where(self, *key: str | int) -> str:
        return f"{self.source}: {keypath(*self.path, *key) or '<top level>'}"

    def fail(self, value: Any, what: str, *key: str | int) -> None:
        raise SpaceError(f"{self.where(*key)}: {describe(value)} {what}")

    def check_keys(self, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                raise SpaceError(
                    f"{self.where(str(key))}: unknown key; allowed keys: {', '.join(allowed)}"
                )
        for key in required:
            if key not in self.data:
                raise SpaceError(f"{self.where(key)}: missing; it is required")

    def child(self, key: str) -> "_Reader":
        return _Reader(self.source, self.data.get(key), (*self.path, key))

    def integer(self, key: str, default: int | None = None, *, minimum: int = 1) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(value, "is not an integer", key)
        if value < minimum:
            self.fail(value, f"must be >= {minimum}", key)
        return value

    def stride(self, key: str, default: int | None = None) -> int:
        value = self.integer(key, default)
        if value not in (1, 2):
            self.fail(value, "is not an allowed stride; use 1 or 2", key)
        return value

    def kernel(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.fail(value, "is not a kernel size; use a positive odd integer such as 3 or 5", key)
        if value % 2 == 0:
            self.fail(value, "is an even kernel size; use odd sizes such as 3, 5 or 7", key)
        return value

    def number(self, key: str, default: float, lo: float, hi: float, *, hi_open: bool = False) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(value, "is not a number", key)
        if not (lo <= value < hi if hi_open else lo <= value <= hi) or value != value:
            bracket = ")" if hi_open else "]"
            self.fail(value, f"is out of range; allowed: [{lo}, {hi}{bracket}", key)
        return float(value)

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value:
            self.fail(value, "is not a non-empty string", key)
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.fail(value, "is not a boolean; use true or false", key)
        return value

    def choices(self, key: str, *, odd: bool) -> tuple[int, ...]:
        value = self.data.get(key)
        if not isinstance(value, list) or not value:
            example = "[3, 5]" if odd else "[3, 6]"
            self.fail(value, f"is not a non-empty list of choices; use a list such as {example}", key)
        items = []
        for i, item in enumerate(value):
            if odd:
                items.append(self._odd(item, key, i))
            else:
                if isinstance(item, bool) or not isinstance(item, int) or item < 1:
                    self.fail(item, "is not a positive integer expansion ratio", key, i)
                items.append(item)
        if any(b <= a for a, b in zip(items, items[1:])):
            self.fail(value, f"must be sorted ascending without repeats, e.g. {'[3, 5]' if odd else '[3, 6]'}", key)
        return tuple(items)

    def _odd(self, item: Any, key: str, i: int) -> int:
        if isinstance(item, bool) or not isinstance(item, int) or item < 1:
            self.fail(item, "is not a kernel size; use a positive odd integer such as 3 or 5", key, i)
        if item % 2 == 0:
            self.fail(item, "is an even kernel size; use odd sizes such as 3, 5 or 7", key, i)
        return item


_TOP_KEYS = (
    "name", "description", "input", "num_classes", "width_multiplier", "dropout",
    "activation", "stem", "blocks", "head",
)
_FIXED_KEYS = ("out_chs", "kernel", "expansion", "stride", "layers")
_SEARCH_KEYS = ("out_chs", "layers", "stride", "kernel", "expansion", "skip")


def parse_space(data: Any, source: str = "<memory>") -> SpaceSpec:
    """Validate plain data (as loaded from YAML) into a :class:`SpaceSpec`.

    Raises:
        SpaceError: naming ``source``, the key path, the bad value and what is allowed.
    """
    top = _Reader(source, data)
    top.check_keys(_TOP_KEYS, ("name", "input", "num_classes", "stem", "blocks", "head"))
    width = top.number("width_multiplier", 1.0, 0.05, 8.0)

    def chs(reader: _Reader, key: str = "out_chs") -> int:
        return make_divisible(reader.integer(key) * width)

    inp = top.child("input")
    inp.check_keys(("resolution", "channels"), ("resolution",))
    resolution = inp.integer("resolution")
    in_chs = inp.integer("channels", 3)

    stem_r = top.child("stem")
    stem_r.check_keys(("out_chs", "kernel", "stride"), ("out_chs",))
    stem = StemSpec(chs(stem_r), stem_r.kernel(stem_r.data.get("kernel", 3), "kernel"),
                    stem_r.stride("stride", 2))

    raw_blocks = top.data.get("blocks")
    if not isinstance(raw_blocks, list) or not raw_blocks:
        top.fail(raw_blocks, "is not a non-empty list of blocks ({fixed: ...} or {search: ...})", "blocks")
    blocks: list[BlockSpec] = []
    for i, raw in enumerate(raw_blocks):
        blocks.append(_parse_block(source, raw, i, chs))
    if not any(isinstance(b, SearchStageSpec) for b in blocks):
        top.fail(raw_blocks, "has no searchable stage; add at least one {search: ...} block", "blocks")

    head_r = top.child("head")
    head_r.check_keys(("out_chs",), ("out_chs",))
    activation = top.text("activation", "relu")
    if activation not in ACTIVATIONS:
        top.fail(activation, f"is not a supported activation; allowed: {', '.join(ACTIVATIONS)}", "activation")
    description = top.data.get("description", "")
    if not isinstance(description, str):
        top.fail(description, "is not a string", "description")
    spec = SpaceSpec(
        name=top.text("name"),
        resolution=resolution,
        in_chs=in_chs,
        num_classes=top.integer("num_classes"),
        stem=stem,
        blocks=tuple(blocks),
        head_chs=chs(head_r),
        width_multiplier=width,
        dropout=top.number("dropout", 0.0, 0.0, 1.0, hi_open=True),
        activation=activation,
        description=description,
        source=source,
    )
    if resolution < spec.total_stride:
        top.fail(
            resolution,
            f"is too small for the total stride {spec.total_stride} of stem and blocks; "
            f"use at least {spec.total_stride}",
            "input", "resolution",
        )
    return spec


def _parse_block(source: str, raw: Any, i: int, chs) -> BlockSpec:
    where = _Reader(source, raw, ("blocks", i))
    if len(raw) != 1 or next(iter(raw)) not in ("fixed", "search"):
        where.fail(list(raw), "must have exactly one key: 'fixed' or 'search'")
    kind = next(iter(raw))
    r = where.child(kind)
    if kind == "fixed":
        r.check_keys(_FIXED_KEYS, ("out_chs", "kernel", "expansion"))
        return FixedBlockSpec(
            out_chs=chs(r),
            kernel=r.kernel(r.data["kernel"], "kernel"),
            expansion=r.integer("expansion"),
            stride=r.stride("stride", 1),
            layers=r.integer("layers", 1),
        )
    r.check_keys(_SEARCH_KEYS, ("out_chs", "layers", "stride", "kernel", "expansion"))
    expansion = r.choices("expansion", odd=False)
    if expansion[0] < 2:
        # e1 has no 1x1 expansion conv, so its weights are not a subset of the larger ratios'
        r.fail(list(expansion), "contains expansion 1, which cannot nest in a superkernel; use ratios >= 2",
               "expansion")
    return SearchStageSpec(
        out_chs=chs(r),
        layers=r.integer("layers"),
        stride=r.stride("stride"),
        kernel=r.choices("kernel", odd=True),
        expansion=expansion,
        skip=r.flag("skip", True),
    )


def load_space_file(path: str | Path) -> SpaceSpec:
    """Read and validate a search-space YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpaceError(f"{path}: no such search-space file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"{path}: cannot read search-space file ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise SpaceError(f"{path}: not valid YAML{at}: {problem}") from None
    return parse_space(data, source=str(path))
