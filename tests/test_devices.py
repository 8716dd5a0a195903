"""Measured devices: timing, overhead, cache, the tflite and onnxruntime devices, the CLI."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spnas.core.errors import SpnasError
from spnas.space.graph import SpaceGraph
from spnas.latency.table import LatencyTable, LatencyTableError, TableHeader
from spnas.latency.profiling import MeasuredDevice, Timing, calibration_archs, median_timing, table_entries, time_runner
from spnas.latency.runtime import RuntimeModel
from spnas.testing import DeviceContract

HAVE_TFLITE = all(importlib.util.find_spec(m) for m in ("tensorflow", "keras", "ai_edge_litert"))
HAVE_ORT = all(importlib.util.find_spec(m) for m in ("onnx", "onnxruntime"))
FAST = {"runs": 3, "warmup": 1, "min_time": 0.0, "rounds": 1, "processes": 1, "calibrate": 1}
#: the TFLite tests' space: 11 models to convert (tiny: 30), at about a second a conversion
ONE_STAGE = Path(__file__).parent / "data" / "one_stage.yaml"


@pytest.fixture
def tiny():
    return SpaceGraph.load("tiny")


def test_time_runner_counts_warmup_and_runs():
    calls = []
    t = time_runner(lambda: calls.append(1), warmup=4, runs=7, min_time=0.0)
    assert len(calls) == 11 and t.runs == 7 and 0 <= t.min <= t.median


def test_table_entries_are_the_distinct_signature_choices(tiny):
    todo = table_entries(tiny)
    keys = {(l.signature, c) for l, _, c in todo}
    assert len(keys) == len(todo) == 30
    for layer in tiny.layers:
        assert {(layer.signature, c) for c in layer.choices} <= keys


class _Synthetic(MeasuredDevice):
    """Every model 'takes' a known time: layer cost (MACs/1e6) + the runtime's overhead 0.5.
    A model's bytes are its time, which the 'timing process' reads back."""

    name = "synthetic"
    OVERHEAD = 0.5
    profiled = 0

    def layer_bytes(self, space, layer, op):
        type(self).profiled += 1
        return str(layer.cost(op)[1] / 1e6 + self.OVERHEAD).encode()

    def network_bytes(self, space, arch):
        return str(space.cost(arch)[1] / 1e6 + self.OVERHEAD).encode()

    def empty_bytes(self):
        return str(self.OVERHEAD).encode()

    def versions(self):
        return {"synthetic": "1"}

    def measure_models(self, models):
        return [Timing(float(m), float(m), 0.0, float(m), 1) for m in models]


def test_overhead_is_subtracted_per_layer_and_paid_once(tiny):
    table = _Synthetic(cache=False).latency_table(tiny, progress=False)
    assert table.overhead == 0.5
    runtime = RuntimeModel(tiny, table)
    for arch in (tiny.largest(), tiny.smallest(), tiny.parse("k5e4 skip | k3e6 k5e3")):
        # two routes: the table's sum, and the whole network 'measured' as one model
        assert runtime.predict(arch) == pytest.approx(_Synthetic().measure_network(tiny, arch).median)


class _Crowded(_Synthetic):
    """Inside a network every layer costs 1.2 times what it costs alone (the overhead does not)."""

    name = "crowded"

    def network_bytes(self, space, arch):
        return str(1.2 * space.cost(arch)[1] / 1e6 + self.OVERHEAD).encode()


def test_calibration_fits_the_in_network_factor(tiny):
    plain = _Crowded(cache=False, calibrate=0).latency_table(tiny, progress=False)
    table = _Crowded(cache=False).latency_table(tiny, progress=False)
    assert plain.scale == 1.0 and table.scale == pytest.approx(1.2, rel=1e-9)
    assert re.search(r"scaled by 1\.2000, fitted on 3 whole networks \(mean error -\d+\.\d\d % before, "
                     r"worst [+-]0\.00 % after\)", table.header.source)
    runtime = RuntimeModel(tiny, table)
    rng = random.Random(5)
    for arch in [tiny.random(rng) for _ in range(5)]:  # networks the fit did not see
        assert runtime.predict(arch) == pytest.approx(_Crowded().measure_network(tiny, arch).median, rel=1e-9)
    lo, hi = runtime.bounds()
    assert lo == pytest.approx(runtime.predict(tiny.smallest())) and hi == pytest.approx(runtime.predict(tiny.largest()))
    assert LatencyTable.from_dict(table.to_dict()).scale == table.scale


def test_calibration_networks_are_distinct_fixed_and_not_validations_default(tiny):
    archs = calibration_archs(tiny, 5)
    assert len(set(map(str, archs))) == 5
    assert calibration_archs(tiny, 0) == [] and calibration_archs(tiny, 5) == archs  # fixed seed
    rng = random.Random(0)  # spnas latency validate's default seed
    assert not set(map(str, archs)) & {str(tiny.random(rng)) for _ in range(5)}


def test_the_median_process_is_kept():
    ts = [Timing(m, m, 0.0, m, 3) for m in (3.0, 1.0, 2.0, 9.0, 2.5)]
    assert median_timing(ts).median == 2.5 and median_timing(ts[:1]).median == 3.0


def test_scale_is_validated():
    for bad in (0, -1.5, float("nan"), True, "2"):
        with pytest.raises(LatencyTableError, match="scale: .* is not allowed; the scale must be a finite number > 0"):
            LatencyTable(TableHeader("toy", "ms"), {}, scale=bad)


def test_measured_tables_are_cached_by_settings(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("SPNAS_CACHE_DIR", str(tmp_path))
    _Synthetic.profiled = 0
    a = _Synthetic().latency_table(tiny, progress=False)
    assert _Synthetic.profiled == 30 and len(list((tmp_path / "tables").iterdir())) == 1
    b = _Synthetic().latency_table(tiny, progress=False)
    assert _Synthetic.profiled == 30 and a.entries == b.entries  # read back, not measured
    _Synthetic(threads=2).latency_table(tiny, progress=False)
    assert _Synthetic.profiled == 60  # other settings, another table
    assert _Synthetic().cache_path(tiny) != _Synthetic(threads=2).cache_path(tiny)


def test_overhead_round_trips_and_is_validated():
    t = LatencyTable(TableHeader("toy", "ms"), {"mbconv_i8_o8_s1_r8": {"k3e3": 1.0}}, overhead=0.25)
    assert LatencyTable.from_dict(t.to_dict()).overhead == 0.25
    with pytest.raises(LatencyTableError, match="overhead: -1 is not allowed"):
        LatencyTable(TableHeader("toy", "ms"), {}, overhead=-1)


def test_bad_device_options_are_refused():
    with pytest.raises(SpnasError, match="option threads=0 is not allowed"):
        _Synthetic(threads=0)
    with pytest.raises(SpnasError, match="unknown option 'thread'"):
        _Synthetic(thread=1)


# The tests of one device share its measured table through the cache (tests/conftest.py): one
# xdist_group each, so that they run in one process, one after another, and measure it once.
@pytest.mark.slow
@pytest.mark.xdist_group("tflite-table")
@pytest.mark.skipif(not HAVE_TFLITE, reason="tensorflow / ai-edge-litert not installed")
class TestTFLiteDevice(DeviceContract):
    device = "tflite"
    options = FAST
    space = str(ONE_STAGE)


@pytest.mark.xdist_group("onnxruntime-table")
@pytest.mark.skipif(not HAVE_ORT, reason="onnx / onnxruntime not installed")
class TestOnnxRuntimeDevice(DeviceContract):
    device = "onnxruntime"
    options = FAST


@pytest.mark.slow
@pytest.mark.xdist_group("tflite-table")
@pytest.mark.skipif(not HAVE_TFLITE, reason="tensorflow / ai-edge-litert not installed")
def test_tflite_measures_a_network_and_the_table_records_its_runtime():
    from spnas.core.registry import get_registry

    space = SpaceGraph.load(ONE_STAGE)
    device = get_registry().get("device", "tflite")(**FAST)
    table = device.latency_table(space, progress=False)
    assert "ai-edge-litert" in table.header.runtime_version and table.header.threads == 1
    assert 0 < table.overhead < min(v for row in table.entries.values() for v in row.values() if v > 0) * 100
    t = device.measure_network(space, space.largest())
    assert t.median > 0 and t.runs >= 3
    several = device.measure_networks(space, [space.largest(), space.smallest()], progress=False)
    assert len(several) == 2 and all(x.median > 0 for x in several)


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "spnas", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.xdist_group("onnxruntime-table")
@pytest.mark.skipif(not HAVE_ORT, reason="onnx / onnxruntime not installed")
def test_profile_then_use_the_table_file(tmp_path):
    out = tmp_path / "tiny-ort.json"
    opts = [f"--device-option={k}={v}" for k, v in FAST.items()]
    proc = _cli("profile", "--space", "tiny", "--device", "onnxruntime", *opts, "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    table = LatencyTable.load(out)
    assert table.header.device == "onnxruntime" and "onnxruntime" in table.header.runtime_version
    arch = "k3e2 skip | k5e6 k3e3"
    expected = RuntimeModel(SpaceGraph.load("tiny"), table).predict(SpaceGraph.load("tiny").parse(arch))
    proc = _cli("latency", arch, "--space", "tiny", "--device", "onnxruntime", "--device-table", str(out),
                "--measure", *opts)
    assert proc.returncode == 0, proc.stderr
    assert f"predicted latency: {expected:.4f} ms (onnxruntime)" in proc.stdout
    assert "measured latency:" in proc.stdout


@pytest.mark.xdist_group("onnxruntime-table")
@pytest.mark.skipif(not HAVE_ORT, reason="onnx / onnxruntime not installed")
def test_validate_reports_errors_and_writes_plot_and_numbers(tmp_path):
    opts = [f"--device-option={k}={v}" for k, v in FAST.items()]
    proc = _cli("latency", "validate", "--space", "tiny", "--device", "onnxruntime", "--samples", "3", *opts,
                "--plot", str(tmp_path / "v.png"), "--json", str(tmp_path / "v.json"), "--quiet")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["samples"] == 3 and len(data["networks"]) == 3
    errors = [abs(n["predicted"] - n["measured"]) / n["measured"] * 100 for n in data["networks"]]
    assert data["mean_abs_error_pct"] == pytest.approx(sum(errors) / 3, abs=1e-3)  # the statistic, recomputed
    assert "mean absolute error" in proc.stdout
    assert (tmp_path / "v.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,message", [
    (["latency", "validate", "--space", "tiny", "--device", "flops"], "device flops cannot measure networks"),
    (["latency", "k3e2 skip | k5e6 k3e3", "--space", "tiny", "--device", "flops", "--measure"],
     "device flops cannot measure a network"),
    (["profile", "--space", "tiny", "--device", "tflite", "--device-option", "threads=0"],
     "option threads=0 is not allowed"),
    (["profile", "--space", "tiny", "--device", "tflite", "--device-option", "threads"], "use KEY=VALUE"),
])
def test_latency_cli_user_errors(args, message):
    proc = _cli(*args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
