"""The plugin registry: built-ins first, then the ``spnas`` entry-point group.

Set ``SPNAS_DISABLE_PLUGIN_AUTOLOAD=1`` to load the built-ins only (tests do).
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from spnas import hookspecs
from spnas.errors import SpnasError

#: built-in plugins, loaded through the same hooks as third-party ones (like pytest's default_plugins)
BUILTIN_PLUGINS = (
    "spnas.search_spaces",
    "spnas.data",
    "spnas.devices.flops",
    "spnas.devices.pixel1",
    "spnas.strategies.single_path",
)

KINDS = {
    "strategy": ("spnas_register_strategies", "strategies", "spnas search --strategy"),
    "device": ("spnas_register_devices", "devices", "--device"),
    "space": ("spnas_register_search_spaces", "search spaces", "--space"),
    "dataset": ("spnas_register_datasets", "data sets", "--data"),
}


@dataclass
class Registry:
    """Name -> object tables for each kind, filled by the plugins' hooks."""

    entries: dict[str, dict[str, tuple[Any, str]]] = field(default_factory=lambda: {k: {} for k in KINDS})
    broken: dict[str, str] = field(default_factory=dict)
    plugins: list[str] = field(default_factory=list)

    def get(self, kind: str, name: str) -> Any:
        table = self.entries[kind]
        if name not in table:
            extra = f"; broken plugins: {', '.join(self.broken)}" if self.broken else ""
            raise SpnasError(
                f"unknown {kind} {name!r}; available: {', '.join(sorted(table)) or 'none'} "
                f"(see 'spnas plugins'){extra}"
            )
        return table[name][0]

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def space_path(self, name: str) -> Path:
        return Path(self.get("space", name))

    def _collect(self, pm: pluggy.PluginManager, plugin: Any, plugin_name: str) -> None:
        for kind, (hook, _, _) in KINDS.items():
            impl = getattr(plugin, hook, None)
            if impl is None:
                continue

            def register(name: str, obj: Any, _kind: str = kind) -> None:
                table = self.entries[_kind]
                if name in table:
                    raise SpnasError(
                        f"{_kind} {name!r} is registered twice: by plugin {table[name][1]!r} "
                        f"and by plugin {plugin_name!r}"
                    )
                table[name] = (obj, plugin_name)

            impl(register=register)


def _load() -> Registry:
    registry = Registry()
    pm = pluggy.PluginManager("spnas")
    pm.add_hookspecs(hookspecs)
    for modname in BUILTIN_PLUGINS:
        module = importlib.import_module(modname)
        pm.register(module, name=modname)
        registry._collect(pm, module, modname)
        registry.plugins.append(modname)
    if os.environ.get("SPNAS_DISABLE_PLUGIN_AUTOLOAD", "") not in ("1", "true", "yes"):
        for ep in metadata.entry_points(group="spnas"):
            label = f"{ep.name} ({ep.dist.name if ep.dist else '?'})"
            try:
                plugin = ep.load()
                pm.register(plugin, name=ep.name)
                registry._collect(pm, plugin, ep.name)
                registry.plugins.append(label)
            except SpnasError:
                raise
            except Exception as exc:  # a broken plugin must not take the others down
                registry.broken[label] = f"{type(exc).__name__}: {exc}"
    return registry


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _load()
    return _REGISTRY
