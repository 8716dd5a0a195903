"""Latency tables: layer signature x choice -> cost, self-describing, validated on load.

A table says where its numbers come from (:class:`TableHeader`: device, units, runtime and its
version, threads, host, date, source) and maps each layer signature
(:attr:`spnas.space.graph.LayerNode.signature`, derived from shapes only) and choice key
(:attr:`spnas.space.graph.LayerNode.choices`: ``k5e6``, or ``op`` for a layer that is not an MBConv) to
a cost. A skipped layer costs 0 and has no entry. ``fixed_cost``, when set, is one lumped cost of
every non-searchable layer (the Pixel 1 model's 19.5999 ms); otherwise every fixed layer needs
its own entry. Two optional numbers complete the model of a network's cost:
``overhead`` (default 0), paid once per network, and ``scale`` (default 1), a factor on every
layer's cost, fitted by a measured device against whole networks (see :mod:`spnas.latency.profiling`).
A network costs ``overhead + scale * (sum of its layers' entries)``.

Layers of one shape share a signature. A table measured position by position (the authors'
Pixel 1 table measures each of the three identical layers of a stage separately) may add
``"<signature>#<n>"`` entries for the n-th layer (0-based, network order) with that signature;
a lookup tries ``<signature>#<n>`` first, then ``<signature>``.

File format (JSON, read with :func:`json.loads`, never eval)::

    {"format": "spnas-latency-table", "version": 1,
     "header": {"device": "pixel1", "units": "ms", ...},
     "fixed_cost": 19.5999, "overhead": 0.0, "scale": 1.0,
     "entries": {"mbconv_i16_o24_s2_r112": {"k3e3": 4.4905, "k5e6": 11.5892, ...}, ...}}
"""

from __future__ import annotations

import json
import re
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, NoReturn

from spnas.core.errors import LatencyTableError, describe, keypath

if TYPE_CHECKING:
    from spnas.space.graph import LayerNode, SpaceGraph

FORMAT = "spnas-latency-table"
VERSION = 1
UNITS = ("ms", "MMACs")  # the built-in devices' units; a plugin may use others (e.g. "Mparams")
_UNITS_RE = re.compile(r"[A-Za-z][A-Za-z0-9/%_.-]{0,15}")
#: separates a signature from the occurrence index of a per-position entry
OCCURRENCE_SEP = "#"
_MAX_LISTED = 10  # missing entries named in one error line before "and N more"


@dataclass(frozen=True)
class TableHeader:
    """Where a table's numbers come from.

    ``threads`` is ``None`` where it does not apply (an analytic proxy such as MACs).
    """

    device: str
    units: str
    runtime: str = ""
    runtime_version: str = ""
    threads: int | None = None
    host: str = ""
    date: str = ""
    source: str = ""


@dataclass(frozen=True)
class LatencyTable:
    """Per-layer costs of one device, keyed by layer signature and choice.

    Example:
        >>> table = LatencyTable(TableHeader("toy", "ms"), {"mbconv_i16_o24_s2_r112": {"k3e3": 1.5}}, 2.0)
        >>> table.entry("mbconv_i16_o24_s2_r112", "k3e3")
        1.5

    Attributes:
        header: where the numbers come from.
        entries: signature (or ``signature#n``) -> choice -> cost, finite and >= 0.
        fixed_cost: one cost for every non-searchable layer, or ``None`` when each fixed layer
            has its own entries.
        origin: the file the table was read from (for error messages only).
    """

    header: TableHeader
    entries: dict[str, dict[str, float]]
    fixed_cost: float | None = None
    origin: str = field(default="<memory>", compare=False)
    #: a cost paid once per network, whatever its layers (a runtime's per-inference overhead, which
    #: every isolated-layer measurement also contains and which measured entries leave out)
    overhead: float = 0.0
    #: a factor on the sum of the layer entries, fitted against whole networks measured with the
    #: table (a layer inside a network does not cost what it costs alone); 1 for a plain table
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.header.units, str) or not _UNITS_RE.fullmatch(self.header.units):
            self._fail("header.units", self.header.units,
                       f"is not a unit name; use a short word such as {' or '.join(UNITS)}")
        entries: dict[str, dict[str, float]] = {}
        for sig, row in self.entries.items():
            _check_key(sig, self.origin)
            for choice in row:
                if not isinstance(choice, str) or not choice:
                    self._fail(keypath("entries", sig), choice, "is not a choice key; use an op such as k5e6, or op")
            entries[sig] = {choice: self._cost(value, "entries", sig, choice) for choice, value in row.items()}
        # a private copy, so that the caller's dict cannot change a validated table
        object.__setattr__(self, "entries", entries)
        if self.fixed_cost is not None:
            object.__setattr__(self, "fixed_cost", self._cost(self.fixed_cost, "fixed_cost"))
        object.__setattr__(self, "overhead", self._cost(self.overhead, "overhead"))
        if (isinstance(self.scale, bool) or not isinstance(self.scale, (int, float))
                or not math.isfinite(self.scale) or self.scale <= 0):
            self._fail("scale", self.scale, "is not allowed; the scale must be a finite number > 0")
        object.__setattr__(self, "scale", float(self.scale))

    def _fail(self, where: str, value: Any, what: str) -> NoReturn:
        raise LatencyTableError(f"{self.origin}: {where}: {describe(value)} {what}")

    def _cost(self, value: Any, *key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self._fail(keypath(*key), value, "is not a number; costs must be finite numbers >= 0")
        if not math.isfinite(value) or value < 0:
            self._fail(keypath(*key), value, "is not allowed; costs must be finite numbers >= 0")
        return float(value)

    @property
    def units(self) -> str:
        return self.header.units

    # --- lookups ---------------------------------------------------------------------------
    def find(self, signature: str, choice: str, occurrence: int = 0) -> float | None:
        """The cost of ``choice`` for the ``occurrence``-th layer of ``signature``, or ``None``."""
        row = self.entries.get(f"{signature}{OCCURRENCE_SEP}{occurrence}")
        if row is not None and choice in row:
            return row[choice]
        return self.entries.get(signature, {}).get(choice)

    def entry(self, signature: str, choice: str, occurrence: int = 0) -> float:
        """Like :meth:`find`, but a missing entry is a :class:`LatencyTableError`."""
        value = self.find(signature, choice, occurrence)
        if value is None:
            raise LatencyTableError(
                f"{self.origin}: no entry for layer {signature} choice {choice}"
                f"{f' (occurrence {occurrence})' if occurrence else ''}; "
                f"the table has {len(self.entries)} signatures"
            )
        return value

    @staticmethod
    def occurrences(space: SpaceGraph) -> list[int]:
        """For each layer of ``space`` (network order), how many earlier layers share its signature."""
        seen: dict[str, int] = {}
        out = []
        for layer in space.layers:
            out.append(seen.get(layer.signature, 0))
            seen[layer.signature] = out[-1] + 1
        return out

    def _needed(self, space: SpaceGraph) -> list[tuple[LayerNode, int]]:
        """The layers whose entries the space needs, with their occurrence index."""
        pairs = zip(space.layers, self.occurrences(space))
        return [(layer, n) for layer, n in pairs if layer.searchable or self.fixed_cost is None]

    def check_covers(self, space: SpaceGraph) -> None:
        """Raise :class:`LatencyTableError` listing every (signature, choice) ``space`` needs and lacks."""
        missing: list[str] = []
        for layer, n in self._needed(space):
            for choice in layer.choices:
                name = f"{layer.signature}:{choice}"
                if self.find(layer.signature, choice, n) is None and name not in missing:
                    missing.append(name)
        if missing:
            listed = ", ".join(missing[:_MAX_LISTED])
            more = f" and {len(missing) - _MAX_LISTED} more" if len(missing) > _MAX_LISTED else ""
            raise LatencyTableError(
                f"{self.origin}: table for device {self.header.device!r} lacks {len(missing)} "
                f"entries (signature:choice) that space {space.name!r} needs: {listed}{more}; "
                f"measure or import a table for this space"
            )

    def layer_costs(self, space: SpaceGraph) -> list[dict[str, float]]:
        """Choice -> cost for each layer of ``space`` (empty for fixed layers under ``fixed_cost``)."""
        self.check_covers(space)
        needed = {layer.name: n for layer, n in self._needed(space)}
        return [
            {c: self.entry(layer.signature, c, needed[layer.name]) for c in layer.choices}
            if layer.name in needed else {}
            for layer in space.layers
        ]

    # --- files -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "header": asdict(self.header),
            "fixed_cost": self.fixed_cost,
            "overhead": self.overhead,
            "scale": self.scale,
            "entries": {sig: dict(row) for sig, row in self.entries.items()},
        }

    @classmethod
    def from_dict(cls, data: Any, origin: str = "<memory>") -> "LatencyTable":
        """Validate plain data (as read from JSON) into a table; errors name ``origin``."""
        where = f"{origin}: "
        if not isinstance(data, Mapping):
            raise LatencyTableError(f"{where}{describe(data)} is not a latency table; expected a JSON object")
        if data.get("format") != FORMAT:
            raise LatencyTableError(f"{where}format: {describe(data.get('format'))} is not allowed; use {FORMAT!r}")
        if data.get("version") != VERSION:
            raise LatencyTableError(
                f"{where}version: {describe(data.get('version'))} is not supported; this spnas reads version {VERSION}"
            )
        allowed = ("format", "version", "header", "fixed_cost", "overhead", "scale", "entries")
        for key in data:
            if key not in allowed:
                raise LatencyTableError(f"{where}{keypath(str(key))}: unknown key; allowed keys: {', '.join(allowed)}")
        entries = data.get("entries")
        if not isinstance(entries, Mapping):
            raise LatencyTableError(f"{where}entries: {describe(entries)} is not an object of signature -> choice -> cost")
        for sig, row in entries.items():
            if not isinstance(row, Mapping):
                raise LatencyTableError(f"{where}{keypath('entries', sig)}: {describe(row)} is not an object of choice -> cost")
        return cls(_parse_header(data.get("header"), origin), {s: dict(r) for s, r in entries.items()},
                   data.get("fixed_cost"), origin, data.get("overhead", 0.0), data.get("scale", 1.0))

    @classmethod
    def load(cls, path: str | Path) -> "LatencyTable":
        """Read and validate a table file (see the module docstring for the format)."""
        return cls.from_dict(read_json(path, "latency table"), origin=str(path))

    def save(self, path: str | Path) -> Path:
        """Write the table atomically (a temporary file in the same folder, then ``os.replace``)."""
        path = Path(path)
        write_json_atomic(path, self.to_dict())
        return path


def _check_key(key: Any, origin: str) -> None:
    if not isinstance(key, str) or not key:
        raise LatencyTableError(f"{origin}: entries: key {describe(key)} is not a layer signature")
    base, sep, n = key.partition(OCCURRENCE_SEP)
    if sep and not (base and n.isdigit()):
        raise LatencyTableError(
            f"{origin}: entries: key {describe(key)} is not allowed; use <signature> or <signature>#<n> with n >= 0"
        )


def _parse_header(data: Any, origin: str) -> TableHeader:
    if not isinstance(data, Mapping):
        raise LatencyTableError(f"{origin}: header: {describe(data)} is not an object")
    names = [f.name for f in fields(TableHeader)]
    for key in data:
        if key not in names:
            raise LatencyTableError(f"{origin}: {keypath('header', str(key))}: unknown key; allowed keys: {', '.join(names)}")
    for key in ("device", "units"):
        if not isinstance(data.get(key), str) or not data.get(key):
            raise LatencyTableError(f"{origin}: header.{key}: {describe(data.get(key))} is not a non-empty string")
    for key in names:
        value = data.get(key)
        if key == "threads":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise LatencyTableError(f"{origin}: header.threads: {describe(value)} is not an integer >= 1 or null")
        elif key in data and not isinstance(value, str):
            raise LatencyTableError(f"{origin}: header.{key}: {describe(value)} is not a string")
    return TableHeader(**dict(data))


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file is a one-line error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LatencyTableError(f"{path}: no such {what} file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LatencyTableError(f"{path}: cannot read {what} file ({exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise LatencyTableError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON so that readers see the old file or the new one, never half of one."""
    from spnas.core.runs import atomic_write_text

    atomic_write_text(Path(path), json.dumps(data, indent=1, sort_keys=True, allow_nan=False) + "\n")
