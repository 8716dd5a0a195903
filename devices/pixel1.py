"""Device ``pixel1``: the Single-Path NAS authors' per-layer runtime model of the Google Pixel 1.

The authors publish it in their repository (dstamoulis/single-path-nas,
``nas-search/pixel1_runtime_model.json``, Apache-2.0). spnas ships that file unchanged as package
data (``devices/data/pixel1_runtime_model.json``, source and licence in ``devices/data/NOTICE.md``),
so ``--device pixel1`` works out of the box; ``--device-table``, ``SPNAS_PIXEL1_TABLE`` or a user
copy made with ``spnas device import pixel1 PATH`` take precedence (another phone's table in the
same format, for example).
Their format: keys ``"0"`` .. ``"21"`` are the 22 MBConv layers of the paper's ImageNet space
(``spnas-imagenet``) in network order, each with ``"0"`` = k3e3, ``"1"`` = k3e6, ``"2"`` = k5e3,
``"3"`` = k5e6, in milliseconds (TFLite float32, one thread). Layers ``"0"`` and ``"21"`` are the
fixed first and last MBConvs; they are checked but not imported, because the authors' constant of
19.5999 ms already covers every non-searchable layer.

Two choices, both stated in the table header: the measured k3e3 column is used (the authors'
search code estimates it as R(k5,e3) R(k3,e6) / R(k5,e6) instead), and the three identical
layers of a stage keep their own measurements as ``<signature>#<n>`` entries, with the mean of
the stage's identical layers under the plain signature.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from statistics import fmean
from typing import Any, Mapping

from spnas.latency.device import Device, is_spnas_table, user_data_dir
from spnas.core.errors import SpnasError, describe
from spnas.space.graph import SpaceGraph
from spnas.core.hookspecs import hookimpl
from spnas.latency.table import OCCURRENCE_SEP, LatencyTable, LatencyTableError, TableHeader, read_json

#: the authors' inner keys -> ops (their parsing scripts swap e3 and e6 for "1" and "2"; issue #8)
AUTHORS_OPS = {"0": "k3e3", "1": "k3e6", "2": "k5e3", "3": "k5e6"}
#: the authors' constant for the stem, MBConvs "0" and "21", the head conv, pooling and classifier
FIXED_MS = 19.5999
ENV_VAR = "SPNAS_PIXEL1_TABLE"
#: the authors' file, shipped with spnas (devices/data/NOTICE.md)
SHIPPED_TABLE = Path(__file__).resolve().parent / "data" / "pixel1_runtime_model.json"
SOURCE = ("dstamoulis/single-path-nas nas-search/pixel1_runtime_model.json (commit 21c1f3e, Apache-2.0); "
          "measured k3e3 column (not the authors' R(k5,e3)*R(k3,e6)/R(k5,e6) estimate); "
          "identical layers of a stage kept per position as <signature>#<n>, their mean under <signature>")
NO_TABLE = (
    f"pixel1: no runtime table: the shipped {SHIPPED_TABLE.name} is missing from this installation "
    f"({SHIPPED_TABLE.parent}); reinstall spnas, or pass --device-table PATH/TO/pixel1_runtime_model.json, "
    f"set {ENV_VAR}=PATH, or run 'spnas device import pixel1 PATH' once (the file is in the authors' "
    "repository dstamoulis/single-path-nas, nas-search/pixel1_runtime_model.json)"
)


def user_table_path() -> Path:
    """Where :func:`import_pixel1` keeps the converted table."""
    return user_data_dir() / "devices" / "pixel1.json"


def paper_space() -> SpaceGraph:
    """The space the authors' table describes: spnas's built-in ``spnas-imagenet.yaml``."""
    from spnas.search_spaces import HERE

    return SpaceGraph.load(HERE / "spnas-imagenet.yaml")


def _check_authors(data: Any, origin: str, num_layers: int) -> dict[str, dict[str, float]]:
    """Validate the authors' format: layer keys "0".."N-1", op keys "0".."3", costs finite >= 0."""
    if not isinstance(data, Mapping):
        raise LatencyTableError(f"{origin}: {describe(data)} is not the authors' runtime model; expected a JSON object")
    want = [str(i) for i in range(num_layers)]
    missing = [k for k in want if k not in data]
    extra = [k for k in data if k not in want]
    if missing or extra:
        raise LatencyTableError(
            f"{origin}: layer keys: missing {missing or 'none'}, unexpected {extra or 'none'}; "
            f"the authors' model has keys \"0\"..\"{num_layers - 1}\" (one per MBConv layer)"
        )
    for key in want:
        row = data[key]
        if not isinstance(row, Mapping) or sorted(row) != sorted(AUTHORS_OPS):
            got = sorted(row) if isinstance(row, Mapping) else describe(row)
            raise LatencyTableError(f"{origin}: layer {key!r}: op keys {got} are not allowed; "
                                    f"use \"0\"..\"3\" (k3e3, k3e6, k5e3, k5e6)")
        for op_key, value in row.items():
            number = not isinstance(value, bool) and isinstance(value, (int, float))
            if not number or not math.isfinite(value) or value < 0:
                raise LatencyTableError(f"{origin}: layer {key!r} op {op_key!r} ({AUTHORS_OPS[op_key]}): "
                                        f"{describe(value)} is not allowed; costs must be finite numbers >= 0")
    return {k: {AUTHORS_OPS[o]: float(v) for o, v in data[k].items()} for k in want}


def convert_authors(data: Any, origin: str = "<memory>") -> LatencyTable:
    """The authors' runtime model (parsed JSON) as an spnas table for ``spnas-imagenet``."""
    space = paper_space()
    mbconvs = [layer for layer in space.layers if layer.kind == "mbconv"]
    rows = _check_authors(data, origin, len(mbconvs))
    occurrence = dict(zip((l.name for l in space.layers), LatencyTable.occurrences(space)))
    by_sig: dict[str, list[tuple[int, dict[str, float]]]] = {}
    for key, layer in enumerate(mbconvs):
        if layer.searchable:
            by_sig.setdefault(layer.signature, []).append((occurrence[layer.name], rows[str(key)]))
    entries: dict[str, dict[str, float]] = {}
    for sig, positions in by_sig.items():
        if len(positions) == 1:
            entries[sig] = positions[0][1]
            continue
        entries[sig] = {op: fmean(row[op] for _, row in positions) for op in AUTHORS_OPS.values()}
        for n, row in positions:
            entries[f"{sig}{OCCURRENCE_SEP}{n}"] = row
    header = TableHeader(device="pixel1", units="ms", runtime="tflite (FAI-PEP benchmark_model), float32",
                         runtime_version="unknown (2019)", threads=1, host="Google Pixel 1", date="2019",
                         source=f"{SOURCE}; imported from {origin}")
    return LatencyTable(header, entries, fixed_cost=FIXED_MS, origin=origin)


def read_table(path: str | Path) -> LatencyTable:
    """A pixel1 table from a file in either format: spnas's own, or the authors'."""
    data = read_json(path, "pixel1 runtime table")
    if is_spnas_table(data):
        table = LatencyTable.from_dict(data, origin=str(path))
        if table.header.device != "pixel1":
            raise LatencyTableError(f"{path}: header.device: {describe(table.header.device)} is not 'pixel1'")
        return table
    return convert_authors(data, origin=str(path))


def import_pixel1(src: str | Path) -> Path:
    """Convert the authors' file once into the user-level copy that ``--device pixel1`` reads.

    Example:
        >>> import_pixel1("single-path-nas/nas-search/pixel1_runtime_model.json")  # doctest: +SKIP
        PosixPath('/home/me/.local/share/spnas/devices/pixel1.json')
    """
    return read_table(src).save(user_table_path())


class Pixel1Device(Device):
    """Google Pixel 1, TFLite float32, one thread: the Single-Path NAS authors' runtime model."""

    name = "pixel1"
    units = "ms"
    option_names = ("path",)

    def locate(self) -> tuple[Path, str]:
        """The table file and how it was found: option ``path``, the env var, the user copy, or the
        table shipped with spnas."""
        if self.options.get("path") is not None:
            path, how = Path(self.options["path"]), "--device-table"
        elif os.environ.get(ENV_VAR):
            path, how = Path(os.environ[ENV_VAR]).expanduser(), ENV_VAR
        elif user_table_path().is_file():
            return user_table_path(), "user copy"
        elif SHIPPED_TABLE.is_file():
            return SHIPPED_TABLE, "shipped with spnas"
        else:
            raise SpnasError(NO_TABLE)
        if not path.is_file():
            raise SpnasError(f"{path}: no such file (pixel1 runtime table from {how})")
        return path, how

    def latency_table(self, space: SpaceGraph) -> LatencyTable:
        """The table of ``spnas-imagenet``'s shapes; :func:`spnas.latency.device.resolve_table` checks ``space``."""
        return read_table(self.locate()[0])

    def describe(self) -> str:
        try:
            path, how = self.locate()
            where = f"table {path} ({how})"
        except SpnasError:
            where = "no table yet (see 'spnas device import pixel1')"
        return f"{self.name}: Google Pixel 1, TFLite float32, 1 thread (Single-Path NAS authors' model); units ms; {where}"


@hookimpl
def spnas_register_devices(register):
    register("pixel1", Pixel1Device)
