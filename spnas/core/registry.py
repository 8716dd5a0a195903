"""The plugin registry: built-ins first, then the ``spnas`` entry-point group.

Built-in strategies, devices, spaces and data sets are plugins too: they are listed in
:data:`BUILTIN_PLUGINS` and go through exactly the same hooks as a third-party package (as
pytest loads its ``default_plugins``). Every hook gets a ``register(name, obj)`` callback; a name
registered twice is refused with an error naming both plugins. A plugin that fails to load is
recorded with its error (``spnas plugins`` shows it) and the others still load.

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

from spnas.core import hookspecs
from spnas.core.errors import SpnasError

#: built-in plugins, loaded through the same hooks as third-party ones (like pytest's default_plugins)
BUILTIN_PLUGINS = (
    "spnas.search_spaces",
    "spnas.data.datasets",
    "spnas.training.train",
    "spnas.training.oneshot",
    "spnas.devices.flops",
    "spnas.devices.pixel1",
    "spnas.devices.tflite",
    "spnas.devices.android",
    "spnas.devices.onnxruntime",
    "spnas.strategies.single_path",
    "spnas.strategies.random_search",
    "spnas.strategies.evolution",
    "spnas.strategies.rl",
)

#: kind -> (hook name, plural for messages)
KINDS = {
    "strategy": ("spnas_register_strategies", "strategies"),
    "device": ("spnas_register_devices", "devices"),
    "space": ("spnas_register_search_spaces", "search spaces"),
    "dataset": ("spnas_register_datasets", "data sets"),
    "checkpoint": ("spnas_register_checkpoint_formats", "checkpoint formats"),
}

ENTRY_POINT_GROUP = "spnas"


@dataclass
class PluginInfo:
    """One loaded (or broken) plugin: where it comes from and what it registered."""

    name: str
    distribution: str
    version: str
    registered: list[tuple[str, str]] = field(default_factory=list)  # (kind, name)
    error: str | None = None


@dataclass
class Registry:
    """Name -> object tables for each kind, filled by the plugins' hooks."""

    entries: dict[str, dict[str, tuple[Any, str]]] = field(default_factory=lambda: {k: {} for k in KINDS})
    plugins: list[PluginInfo] = field(default_factory=list)
    pm: pluggy.PluginManager = field(default_factory=lambda: _plugin_manager())

    @property
    def broken(self) -> dict[str, str]:
        return {p.name: p.error for p in self.plugins if p.error is not None}

    def get(self, kind: str, name: str) -> Any:
        """The object registered as ``name``; an unknown name lists the available ones."""
        table = self.entries[kind]
        if name not in table:
            broken = self.broken
            extra = "; broken plugins: " + ", ".join(broken) if broken else ""
            raise SpnasError(
                f"unknown {kind} {name!r}; available: {', '.join(sorted(table)) or 'none'} "
                f"(see 'spnas plugins'){extra}"
            )
        return table[name][0]

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries[kind])

    def plugin_of(self, kind: str, name: str) -> str:
        return self.entries[kind][name][1]

    def space_path(self, name: str) -> Path:
        return Path(self.get("space", name))

    def add(self, plugin: Any, info: PluginInfo) -> None:
        """Register ``plugin`` with pluggy (which checks its hooks against the specs) and collect
        what each of its hooks registers. Nothing is kept if the plugin fails half-way."""
        pm = self.pm
        if pm.is_registered(plugin):
            return
        pm.register(plugin, name=info.name)
        added: list[tuple[str, str]] = []
        try:
            for kind, (hook, _) in KINDS.items():
                for impl in getattr(pm.hook, hook).get_hookimpls():
                    if impl.plugin is not plugin:
                        continue
                    impl.function(register=self._register_fn(kind, info.name, added))
        except BaseException:
            for kind, name in added:
                self.entries[kind].pop(name, None)
            pm.unregister(plugin)
            raise
        info.registered = added
        self.plugins.append(info)

    def _register_fn(self, kind: str, plugin_name: str, added: list[tuple[str, str]]):
        def register(name: str, obj: Any) -> None:
            if not isinstance(name, str) or not name:
                raise SpnasError(f"plugin {plugin_name!r} registered a {kind} with a bad name {name!r}")
            table = self.entries[kind]
            if name in table:
                raise SpnasError(
                    f"{kind} {name!r} is registered twice: by plugin {table[name][1]!r} and by plugin {plugin_name!r}"
                )
            table[name] = (obj, plugin_name)
            added.append((kind, name))

        return register


def _plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("spnas")
    pm.add_hookspecs(hookspecs)
    return pm


def autoload_enabled() -> bool:
    return os.environ.get("SPNAS_DISABLE_PLUGIN_AUTOLOAD", "").lower() not in ("1", "true", "yes")


def _load() -> Registry:
    from spnas._version import __version__

    registry = Registry()
    for modname in BUILTIN_PLUGINS:  # a broken built-in is a bug: let it raise
        registry.add(importlib.import_module(modname), PluginInfo(modname, "spnas", __version__))
    if autoload_enabled():
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = ep.dist.name if ep.dist is not None else "?"
            version = ep.dist.version if ep.dist is not None else "?"
            info = PluginInfo(ep.name, dist, version)
            try:
                registry.add(ep.load(), info)
            except Exception as exc:  # a broken plugin must not take the others down
                text = " ".join(str(exc).split())[:300]  # one line, however long the original
                info.error = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
                registry.plugins.append(info)
    return registry


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _load()
    return _REGISTRY


def register_plugin(plugin: Any, name: str | None = None, distribution: str = "?", version: str = "?") -> None:
    """Add a plugin (a module or object with hook implementations) to the live registry, as an
    entry point would; a plugin already registered is left alone. For tests and notebooks::

        import spnas_optuna.plugin
        register_plugin(spnas_optuna.plugin)
    """
    name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
    get_registry().add(plugin, PluginInfo(name, distribution, version))


def reset_registry() -> None:
    """Forget the loaded registry (tests that install or fake plugins)."""
    global _REGISTRY
    _REGISTRY = None
