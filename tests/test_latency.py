"""Latency tables, their file format and validation, and the flops and pixel1 devices."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from spnas.latency.device import Device, resolve_table, user_data_dir
from spnas.devices import pixel1
from spnas.devices.flops import FlopsDevice
from spnas.core.errors import LatencyTableError, SpnasError
from spnas.space.graph import FIXED_KEY, SpaceGraph
from spnas.latency.table import FORMAT, LatencyTable, TableHeader

SPACES = Path(__file__).resolve().parents[1] / "search_spaces"


@pytest.fixture(scope="module")
def imagenet() -> SpaceGraph:
    return SpaceGraph.load(SPACES / "spnas-imagenet.yaml")


@pytest.fixture(scope="module")
def tiny() -> SpaceGraph:
    return SpaceGraph.load(SPACES / "tiny.yaml")


@pytest.fixture
def no_user_table(monkeypatch, tmp_path) -> Path:
    """An empty SPNAS_HOME and no SPNAS_PIXEL1_TABLE, whatever the machine has."""
    monkeypatch.setenv("SPNAS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(pixel1.ENV_VAR, raising=False)
    return tmp_path / "home"


def _table_dict(**changes) -> dict:
    data = {
        "format": FORMAT, "version": 1,
        "header": {"device": "toy", "units": "ms", "runtime": "tflite", "runtime_version": "2.16",
                   "threads": 1, "host": "pixel", "date": "2024-01-01", "source": "test"},
        "fixed_cost": 1.5,
        "entries": {"mbconv_i16_o24_s2_r112": {"k3e3": 1.0, "k5e6": 2.5}},
    }
    data.update(changes)
    return data


def _write(tmp_path: Path, data, name: str = "table.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


# --- the table and its file format --------------------------------------------------------
def test_save_load_round_trip(tmp_path, tiny):
    table = FlopsDevice().latency_table(tiny)
    path = table.save(tmp_path / "sub" / "flops.json")
    again = LatencyTable.load(path)
    assert again == table
    assert again.origin == str(path)
    assert [p.name for p in path.parent.iterdir()] == ["flops.json"]  # no temporary file left
    assert json.loads(path.read_text())["format"] == FORMAT


def test_save_replaces_atomically(tmp_path):
    path = tmp_path / "t.json"
    LatencyTable.from_dict(_table_dict()).save(path)
    LatencyTable.from_dict(_table_dict(fixed_cost=3.0)).save(path)
    assert LatencyTable.load(path).fixed_cost == 3.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.json"]


def test_load_rejects_nan(tmp_path):
    text = json.dumps(_table_dict()).replace("2.5", "NaN")
    path = _write(tmp_path, text)
    with pytest.raises(LatencyTableError) as err:
        LatencyTable.load(path)
    msg = str(err.value)
    assert str(path) in msg and "mbconv_i16_o24_s2_r112" in msg and "k5e6" in msg and "nan" in msg
    assert "finite" in msg and "\n" not in msg


@pytest.mark.parametrize("bad", [-0.5, "fast", True, math.inf])
def test_load_rejects_bad_costs(tmp_path, bad):
    data = _table_dict(entries={"mbconv_i16_o24_s2_r112": {"k3e3": 1.0, "k5e6": bad}})
    with pytest.raises(LatencyTableError, match=r"entries\.mbconv_i16_o24_s2_r112\.k5e6: .* finite numbers >= 0"):
        LatencyTable.from_dict(data, origin="x.json")


def test_load_rejects_negative_fixed_cost(tmp_path):
    path = _write(tmp_path, _table_dict(fixed_cost=-1))
    with pytest.raises(LatencyTableError, match=rf"{path}: fixed_cost: -1 is not allowed"):
        LatencyTable.load(path)


@pytest.mark.parametrize("changes, pattern", [
    ({"format": "other"}, r"format: 'other' is not allowed; use 'spnas-latency-table'"),
    ({"version": 2}, r"version: 2 is not supported; this spnas reads version 1"),
    ({"extra": 1}, r"extra: unknown key; allowed keys: format, version"),
    ({"entries": []}, r"entries: \[\] is not an object"),
    ({"header": {"device": "toy", "units": "milli seconds"}}, r"header.units: 'milli seconds' is not a unit name; use a short word such as ms or MMACs"),
    ({"header": {"device": "toy", "units": "ms", "threads": 0}}, r"header.threads: 0 is not an integer >= 1"),
    ({"header": {"device": "toy", "units": "ms", "host": 3}}, r"header.host: 3 is not a string"),
    ({"header": {"device": "", "units": "ms"}}, r"header.device: '' is not a non-empty string"),
    ({"header": {"device": "toy", "units": "ms", "cpu": "x"}}, r"header.cpu: unknown key"),
    ({"entries": {"sig#x": {"k3e3": 1.0}}}, r"key 'sig#x' is not allowed; use <signature> or <signature>#<n>"),
])
def test_load_rejects_malformed(tmp_path, changes, pattern):
    path = _write(tmp_path, _table_dict(**changes))
    with pytest.raises(LatencyTableError, match=pattern) as err:
        LatencyTable.load(path)
    assert str(err.value).startswith(f"{path}: ")


def test_load_rejects_non_json_and_missing_file(tmp_path):
    with pytest.raises(LatencyTableError, match=r"not valid JSON at line 1, column 2"):
        LatencyTable.load(_write(tmp_path, "{nope"))
    with pytest.raises(LatencyTableError, match=r"no such latency table file"):
        LatencyTable.load(tmp_path / "absent.json")


def test_check_covers_lists_every_missing_entry(imagenet):
    sig = imagenet.searchable[0].signature
    table = LatencyTable(TableHeader("toy", "ms"), {sig: {"k3e3": 1.0, "k3e6": 1.0, "k5e3": 1.0}}, 10.0)
    with pytest.raises(LatencyTableError) as err:
        table.check_covers(imagenet)
    msg = str(err.value)
    # 1 missing op in the first layer, 4 in each of the other 9 signatures of searchable layers
    assert "lacks 37 entries" in msg and f"{sig}:k5e6" in msg and "and 27 more" in msg
    assert "spnas-imagenet" in msg and "\n" not in msg


def test_check_covers_needs_fixed_layers_without_fixed_cost(tiny):
    full = FlopsDevice().latency_table(tiny)
    full.check_covers(tiny)
    entries = {s: r for s, r in full.entries.items() if not s.startswith("conv_")}
    with pytest.raises(LatencyTableError) as err:
        LatencyTable(full.header, entries).check_covers(tiny)
    assert "lacks 2 entries" in str(err.value)
    stem, head = tiny.layers[0], tiny.layers[-2]
    assert f"{stem.signature}:{FIXED_KEY}" in str(err.value) and f"{head.signature}:{FIXED_KEY}" in str(err.value)
    # with a lumped fixed cost, the fixed layers need no entries
    LatencyTable(full.header, entries, fixed_cost=0.0).check_covers(tiny)


def test_occurrence_entries_override_the_signature():
    table = LatencyTable(TableHeader("toy", "ms"), {"s": {"k3e3": 1.0}, "s#1": {"k3e3": 2.0}})
    assert table.find("s", "k3e3", 0) == 1.0
    assert table.find("s", "k3e3", 1) == 2.0
    assert table.find("s", "k3e3", 2) == 1.0
    assert table.find("s", "k5e6") is None
    with pytest.raises(LatencyTableError, match="no entry for layer s choice k5e6"):
        table.entry("s", "k5e6")


def test_table_copies_its_entries():
    entries = {"s": {"k3e3": 1}}
    table = LatencyTable(TableHeader("toy", "ms"), entries)
    entries["s"]["k3e3"] = 99.0
    assert table.entry("s", "k3e3") == 1.0 and isinstance(table.entry("s", "k3e3"), float)


# --- flops ---------------------------------------------------------------------------------
def test_flops_entries_are_layer_macs(tiny):
    table = FlopsDevice().latency_table(tiny)
    assert table.units == "MMACs" and table.fixed_cost is None and table.header.device == "flops"
    for layer in tiny.layers:
        if layer.kind != "mbconv":
            assert table.entry(layer.signature, FIXED_KEY) == layer.macs[0] / 1e6
            continue
        for op, macs in zip(layer.ops, layer.macs):
            if not op.is_skip:
                assert table.entry(layer.signature, str(op)) == macs / 1e6
    assert FlopsDevice().describe().startswith("flops: ") and "MMACs" in FlopsDevice().describe()


def test_device_rejects_unknown_options():
    with pytest.raises(SpnasError, match=r"device flops: unknown option 'path'; allowed: none"):
        FlopsDevice(path="x")
    with pytest.raises(NotImplementedError):
        Device().latency_table(None)


# --- pixel1 --------------------------------------------------------------------------------
def test_pixel1_defaults_to_the_shipped_table(no_user_table, imagenet, pixel1_json):
    """Without a file, env var or user copy the device reads the authors' file shipped with spnas:
    the same table as importing that file explicitly."""
    device = pixel1.Pixel1Device()
    assert device.locate() == (pixel1.SHIPPED_TABLE, "shipped with spnas")
    assert device.latency_table(imagenet).entries == pixel1.read_table(pixel1_json).entries
    assert "shipped with spnas" in device.describe()


def test_pixel1_without_the_shipped_table_says_what_to_do(no_user_table, imagenet, monkeypatch, tmp_path):
    monkeypatch.setattr(pixel1, "SHIPPED_TABLE", tmp_path / "pixel1_runtime_model.json")
    with pytest.raises(SpnasError) as err:
        pixel1.Pixel1Device().latency_table(imagenet)
    assert str(err.value).startswith("pixel1: no runtime table: the shipped pixel1_runtime_model.json is missing")
    assert "--device-table" in str(err.value) and "spnas device import pixel1 PATH" in str(err.value)
    assert "no table yet" in pixel1.Pixel1Device().describe()


def test_pixel1_from_env_var(no_user_table, monkeypatch, pixel1_json, imagenet):
    monkeypatch.setenv(pixel1.ENV_VAR, str(pixel1_json))
    table = pixel1.Pixel1Device().latency_table(imagenet)
    table.check_covers(imagenet)
    assert table.fixed_cost == 19.5999 and table.units == "ms" and table.header.threads == 1
    assert "measured k3e3" in table.header.source
    first = imagenet.searchable[0].signature
    assert table.entry(first, "k5e6") == json.loads(pixel1_json.read_text())["1"]["3"]


def test_pixel1_env_var_to_missing_file(no_user_table, monkeypatch, tmp_path, imagenet):
    monkeypatch.setenv(pixel1.ENV_VAR, str(tmp_path / "gone.json"))
    with pytest.raises(SpnasError, match=r"gone.json: no such file \(pixel1 runtime table from SPNAS_PIXEL1_TABLE\)"):
        pixel1.Pixel1Device().latency_table(imagenet)


def test_import_pixel1_to_user_dir(no_user_table, pixel1_json, imagenet):
    assert user_data_dir() == no_user_table
    path = pixel1.import_pixel1(pixel1_json)
    assert path == no_user_table / "devices" / "pixel1.json"
    saved = LatencyTable.load(path)
    assert saved == pixel1.read_table(pixel1_json)
    assert pixel1.Pixel1Device().latency_table(imagenet) == saved
    assert "user copy" in pixel1.Pixel1Device().describe()


def test_user_data_dir_fallbacks(monkeypatch, tmp_path):
    monkeypatch.delenv("SPNAS_HOME", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert user_data_dir() == tmp_path / "spnas"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert user_data_dir() == Path.home() / ".local" / "share" / "spnas"


def test_pixel1_keeps_identical_layers_apart(pixel1_json, imagenet):
    raw = json.loads(pixel1_json.read_text())
    table = pixel1.read_table(pixel1_json)
    sig = imagenet.searchable[1].signature  # layers "2", "3", "4" share this shape
    assert [table.entry(sig, "k3e3", n) for n in range(3)] == [raw[k]["0"] for k in ("2", "3", "4")]
    assert table.entries[sig]["k3e3"] == pytest.approx(sum(raw[k]["0"] for k in ("2", "3", "4")) / 3)


@pytest.mark.parametrize("edit, pattern", [
    (lambda d: d.pop("21"), r"layer keys: missing \['21'\], unexpected none"),
    (lambda d: d.update({"22": d["0"]}), r"unexpected \['22'\]"),
    (lambda d: d["5"].pop("3"), r"layer '5': op keys \['0', '1', '2'\] are not allowed"),
    (lambda d: d["7"].update({"2": -1.0}), r"layer '7' op '2' \(k5e3\): -1.0 is not allowed"),
    (lambda d: d["7"].update({"1": "x"}), r"layer '7' op '1' \(k3e6\): 'x' is not allowed"),
])
def test_pixel1_validates_authors_file(tmp_path, pixel1_json, edit, pattern):
    data = json.loads(pixel1_json.read_text())
    edit(data)
    path = _write(tmp_path, data, "bad.json")
    with pytest.raises(LatencyTableError, match=pattern) as err:
        pixel1.read_table(path)
    assert str(err.value).startswith(f"{path}: ")


def test_pixel1_table_does_not_cover_other_spaces(pixel1_json):
    cifar = SpaceGraph.load(SPACES / "spnas-cifar.yaml")
    with pytest.raises(LatencyTableError, match=r"lacks 32 entries .* space 'spnas-cifar' needs: .* and 22 more"):
        pixel1.read_table(pixel1_json).check_covers(cifar)


# --- resolve_table -------------------------------------------------------------------------
def test_resolve_table_loads_spnas_files(tmp_path, tiny):
    path = FlopsDevice().latency_table(tiny).save(tmp_path / "flops.json")
    assert resolve_table("flops", tiny, path) == LatencyTable.load(path)
    with pytest.raises(LatencyTableError, match=r"header.device: 'flops' is not the requested device 'pixel1'"):
        resolve_table("pixel1", tiny, path)
    with pytest.raises(SpnasError, match=r"no such latency table file \(--device-table\)"):
        resolve_table("flops", tiny, tmp_path / "absent.json")


def test_resolve_table_through_the_registry(no_user_table, pixel1_json, imagenet, tiny):
    try:
        from spnas.core.registry import get_registry

        get_registry()
    except ImportError as exc:  # another built-in plugin is not written yet
        pytest.skip(f"registry cannot load: {exc}")
    assert resolve_table("flops", tiny) == FlopsDevice().latency_table(tiny)
    table = resolve_table("pixel1", imagenet, pixel1_json)  # the authors' format, handed to pixel1
    assert table == pixel1.read_table(pixel1_json)
    with pytest.raises(LatencyTableError, match="space 'tiny' needs"):
        resolve_table("pixel1", tiny, pixel1_json)
    with pytest.raises(LatencyTableError, match=r"not an spnas latency table .* device flops reads no other"):
        resolve_table("flops", tiny, pixel1_json)
    with pytest.raises(SpnasError, match=r"unknown device 'nope'; available: .*flops.*pixel1"):
        resolve_table("nope", tiny)
