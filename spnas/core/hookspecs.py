"""Every hook a spnas plugin can implement.

A plugin is a module (or object) with functions marked ``@spnas.hookimpl``, found through the
``spnas`` entry-point group (built-ins are loaded first, through the same hooks). Each hook gets a
``register(name, obj)`` callback; spnas owns the registry and refuses a name registered twice,
naming both plugins.

Example, in a third-party package (``pyproject.toml``: ``[project.entry-points.spnas]
myplugin = "my_package.plugin"``)::

    import spnas

    @spnas.hookimpl
    def spnas_register_strategies(register):
        register("my-strategy", MyStrategy)
"""

from __future__ import annotations

from typing import Callable

import pluggy

hookspec = pluggy.HookspecMarker("spnas")
hookimpl = pluggy.HookimplMarker("spnas")

Register = Callable[[str, object], None]


@hookspec
def spnas_register_strategies(register: Register) -> None:
    """Register search strategies.

    Called once, when the registry is first used. Call ``register(name, cls)`` for each strategy;
    ``cls`` is a :class:`spnas.searching.strategy.Strategy` subclass, constructed with keyword options.
    ``name`` is what users pass to ``spnas search --strategy``.
    """


@hookspec
def spnas_register_devices(register: Register) -> None:
    """Register latency devices.

    Call ``register(name, cls)``; ``cls`` is a :class:`spnas.latency.device.Device` subclass whose
    ``latency_table(space)`` returns a :class:`spnas.latency.table.LatencyTable` for a space.
    ``name`` is what users pass to ``--device``.
    """


@hookspec
def spnas_register_search_spaces(register: Register) -> None:
    """Register search spaces: ``register(name, path)`` with the path of a YAML space file."""


@hookspec
def spnas_register_datasets(register: Register) -> None:
    """Register data sets: ``register(name, factory)``.

    ``factory(arg, resolution, in_chs, seed, val_fraction)`` returns a
    :class:`spnas.data.split.DataSplit` (train and validation sets of ``(CHW float tensor, label)``,
    the class count, and optionally a ``test`` set, ``hflip`` when horizontal flips keep labels,
    and the per-channel ``mean``/``std`` used); ``arg`` is the text after ``name:`` in
    ``--data name:arg`` (``None`` when absent). See docs/data.md.
    """


@hookspec
def spnas_register_checkpoint_formats(register: Register) -> None:
    """Register checkpoint formats: ``register(format, spec)`` with the ``format`` field a plugin
    writes into its ``.pt`` files and a :class:`spnas.core.checkpoints.CheckpointFormat` that says
    which network the file holds. ``spnas export`` and ``spnas eval`` then read the plugin's
    checkpoints (and run directories) like the built-in ones.
    """

