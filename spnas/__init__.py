"""spnas: hardware-aware neural architecture search (Single-Path NAS and friends).

The public API is this namespace. Names are imported on first use (PEP 562), so that
``import spnas`` is cheap and no layer of the package has to import the package itself::

    import spnas
    result = spnas.search(space="tiny", strategy="single-path", device="flops", data="digits",
                          target="50%", epochs=2)
    net = result.child()

The layers, lowest first (a module imports only from its own layer or those below it; see
``tests/test_layers.py``): ``core`` (errors, run directories, the plugin registry and hooks,
distributed helpers), ``space`` (YAML spaces, graph, architectures), ``data``, ``supernet``
(superkernel, supernet, child networks), ``latency`` (tables, the runtime model, devices,
profiling), ``training`` (the one training loop), ``searching`` (strategies, the sampling driver,
targets), ``exporting``, ``report``, ``pipeline`` (one search, a comparison), ``api``, ``cli``.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from spnas._version import __version__

_EXPORTS: dict[str, tuple[str, ...]] = {
    "spnas.api": ("search", "train", "evaluate", "profile", "export", "compare",
                  "SearchOutcome", "SweepOutcome", "TrainOutcome", "EvaluateOutcome", "ProfileOutcome", "ExportOutcome",
                  "CompareOutcome"),
    "spnas.space.arch": ("SKIP", "Architecture", "Op", "from_arch_def", "to_arch_def"),
    "spnas.supernet.builder": ("ChildNet", "Supernet", "recalibrate_bn"),
    "spnas.core.errors": ("LatencyTableError", "SpaceError", "SpnasError"),
    "spnas.space.graph": ("LayerNode", "SpaceGraph"),
    "spnas.core.hookspecs": ("hookimpl",),
    "spnas.latency.table": ("LatencyTable", "TableHeader"),
    "spnas.latency.runtime": ("RuntimeModel",),
    "spnas.latency.device": ("Device",),
    "spnas.space.spec": ("SpaceSpec", "load_space_file", "parse_space"),
    "spnas.searching.strategy": ("DifferentiableStrategy", "SearchContext", "SearchResult", "Strategy", "option"),
    "spnas.searching.sampling": ("Constraint", "Driver", "SamplingOptions", "SamplingStrategy", "Trial",
                              "pareto_front"),
    "spnas.searching.evaluator": ("SupernetEvaluator",),
    "spnas.training.oneshot": ("UniformTraining", "load_supernet", "save_supernet", "train_uniform"),
    "spnas.core.registry": ("get_registry", "register_plugin"),
    "spnas.report.writer": ("write_report",),
    "spnas.supernet.superkernel": ("MBConv", "SuperMBConv"),
    "spnas.searching.target": ("RangeFraction", "parse_target", "resolve_target"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["__version__", *_WHERE]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'spnas' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
