"""Devices: where a latency table comes from.

A device plugin is a :class:`Device` subclass registered through the
``spnas_register_devices`` hook; :func:`resolve_table` turns a ``--device`` name (and an optional
``--device-table`` file) into a :class:`~spnas.latency.table.LatencyTable` that covers a space.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from spnas.core.errors import SpnasError, describe
from spnas.space.graph import SpaceGraph
from spnas.latency.table import LatencyTable, LatencyTableError, read_json


def user_data_dir() -> Path:
    """Per-user spnas data: ``$SPNAS_HOME``, else ``$XDG_DATA_HOME/spnas``, else ``~/.local/share/spnas``."""
    if os.environ.get("SPNAS_HOME"):
        return Path(os.environ["SPNAS_HOME"]).expanduser()
    if os.environ.get("XDG_DATA_HOME"):
        return Path(os.environ["XDG_DATA_HOME"]).expanduser() / "spnas"
    return Path.home() / ".local" / "share" / "spnas"


class Device:
    """A source of per-layer costs for a search space.

    Subclasses set :attr:`name` (the registry name), :attr:`units`, and :attr:`option_names`
    (the keyword options they accept), and implement :meth:`latency_table`.

    Example:
        >>> from spnas.devices.flops import FlopsDevice
        >>> FlopsDevice().describe()
        'flops: Multiply-accumulates of each layer (an analytic proxy, no device); units MMACs'
    """

    name: ClassVar[str] = ""
    units: ClassVar[str] = "ms"
    option_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any):
        for key in options:
            if key not in self.option_names:
                allowed = ", ".join(self.option_names) or "none"
                raise SpnasError(f"device {self.name}: unknown option {key!r}; allowed: {allowed}")
        self.options = dict(options)

    def latency_table(self, space: SpaceGraph) -> LatencyTable:
        """A table with an entry for every (signature, choice) that ``space`` needs."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line: the name, what it measures, the units."""
        doc = (type(self).__doc__ or "").strip().splitlines()
        what = doc[0].rstrip(".") if doc else "no description"
        return f"{self.name}: {what}; units {self.units}"


def resolve_table(device_name: str, space: SpaceGraph, table_path: str | Path | None = None,
                  **options: Any) -> LatencyTable:
    """The latency table of ``device_name`` for ``space``, checked to cover it.

    A ``table_path`` in spnas format is loaded as it is (its header must name ``device_name``);
    any other file is handed to the device as option ``path`` (pixel1 reads the authors' format).

    Raises:
        SpnasError: unknown device, bad options, or a file that does not exist.
        LatencyTableError: a malformed table, or one that lacks entries the space needs.
    """
    from spnas.core.registry import get_registry

    if table_path is not None:
        path = Path(table_path)
        if not path.is_file():
            raise SpnasError(f"{path}: no such latency table file (--device-table)")
        data = read_json(path, "latency table")
        if is_spnas_table(data):
            table = LatencyTable.from_dict(data, origin=str(path))
            if table.header.device != device_name:
                raise LatencyTableError(
                    f"{path}: header.device: {describe(table.header.device)} is not the requested device "
                    f"{device_name!r}; pass --device {table.header.device} or another table"
                )
            table.check_covers(space)
            return table
    cls = get_registry().get("device", device_name)
    if table_path is not None:
        if "path" not in cls.option_names:
            raise LatencyTableError(f"{path}: not an spnas latency table (no 'format' field), and device "
                                    f"{device_name} reads no other table format")
        options = {**options, "path": path}
    device = cls(**options)
    table = device.latency_table(space)
    table.check_covers(space)
    return table


def is_spnas_table(data: Any) -> bool:
    """Whether parsed JSON claims to be an spnas table (it has a ``format`` field; a wrong one is
    then reported by :meth:`LatencyTable.from_dict` rather than handed to a device)."""
    return isinstance(data, dict) and "format" in data


def make_device(name: str, **options: Any) -> Device:
    """The registered device ``name`` with ``options`` (an unknown name lists the registered ones;
    an unknown option lists the device's)."""
    from spnas.core.registry import get_registry

    return get_registry().get("device", name)(**options)
