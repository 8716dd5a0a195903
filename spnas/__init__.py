"""spnas: hardware-aware neural architecture search (Single-Path NAS and friends)."""

from __future__ import annotations

from spnas.arch import SKIP, Architecture, Op, from_arch_def, to_arch_def
from spnas.errors import LatencyTableError, SpaceError, SpnasError
from spnas.graph import LayerNode, SpaceGraph
from spnas.hookspecs import hookimpl
from spnas.spec import SpaceSpec, load_space_file, parse_space

__version__ = "0.1.0"

__all__ = [
    "SKIP", "Architecture", "Op", "from_arch_def", "to_arch_def",
    "LatencyTableError", "SpaceError", "SpnasError",
    "LayerNode", "SpaceGraph", "hookimpl",
    "SpaceSpec", "load_space_file", "parse_space",
]
