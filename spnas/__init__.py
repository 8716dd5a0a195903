"""spnas: hardware-aware neural architecture search (Single-Path NAS and friends)."""

from __future__ import annotations

from spnas.arch import SKIP, Architecture, Op, from_arch_def, to_arch_def
from spnas.builder import ChildNet, Supernet, recalibrate_bn
from spnas.errors import LatencyTableError, SpaceError, SpnasError
from spnas.graph import LayerNode, SpaceGraph
from spnas.hookspecs import hookimpl
from spnas.latency import LatencyTable, TableHeader
from spnas.runtime import RuntimeModel
from spnas.spec import SpaceSpec, load_space_file, parse_space
from spnas.strategy import DifferentiableStrategy, SearchContext, SearchResult, Strategy, option
from spnas.sampling import Constraint, Driver, SamplingOptions, SamplingStrategy, Trial, pareto_front
from spnas.evaluator import SupernetEvaluator
from spnas.oneshot import UniformTraining, load_supernet, save_supernet, train_uniform
from spnas.registry import get_registry, register_plugin
from spnas.report import write_report
from spnas.superkernel import MBConv, SuperMBConv
from spnas.target import RangeFraction, parse_target, resolve_target

__version__ = "0.1.0"

__all__ = [
    "SKIP", "Architecture", "Op", "from_arch_def", "to_arch_def",
    "ChildNet", "Supernet", "recalibrate_bn",
    "LatencyTableError", "SpaceError", "SpnasError",
    "LayerNode", "SpaceGraph", "hookimpl",
    "LatencyTable", "TableHeader", "RuntimeModel",
    "SpaceSpec", "load_space_file", "parse_space",
    "DifferentiableStrategy", "SearchContext", "SearchResult", "Strategy", "option",
    "Constraint", "Driver", "SamplingOptions", "SamplingStrategy", "Trial", "pareto_front",
    "SupernetEvaluator", "UniformTraining", "load_supernet", "save_supernet", "train_uniform",
    "get_registry", "register_plugin", "write_report",
    "MBConv", "SuperMBConv", "RangeFraction", "parse_target", "resolve_target",
]
