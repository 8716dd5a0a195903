"""Device ``android``: benchmark_model's output formats, the adb commands, errors, a whole table.

No phone and no TensorFlow here: ``tests/data/android/fake_adb`` stands in for adb and the phone
and replays recorded output (see its docstring), and the ``.tflite`` files are dummy bytes whose
size the fake turns into timings (``FAKE_ADB_SCALE=size``: recorded time x bytes / 1000).
"""

from __future__ import annotations

import ast
import math
import os
import re
import sys
from pathlib import Path

import pytest

from spnas.devices.android import (AndroidDevice, Measurement, UnparseableOutput, first_relevant_line,
                                   parse_benchmark_output, spnas_register_devices, table_entries)
from spnas.core.errors import SpaceError, SpnasError
from spnas.space.graph import SpaceGraph
from spnas.latency.table import LatencyTable
from spnas.latency.runtime import RuntimeModel

DATA = Path(__file__).parent / "data" / "android"
FAKE_ADB = DATA / "fake_adb"
SERIAL = "FA79V1A04321"  # the phone in devices_one.txt
BM = "/data/local/tmp/benchmark_model"
REMOTE = "/data/local/tmp/spnas"


def recorded(name: str) -> str:
    return (DATA / name).read_text()


# --- parsing ---------------------------------------------------------------------------------
def test_parse_tf1_format():
    """TF 1.x: 'Average inference timings in us: Warmup, Init, no stats'; the runs' mean is used."""
    m = parse_benchmark_output(recorded("benchmark_tf1.txt"))
    assert (m.output_format, m.statistic) == ("tf1", "mean")
    # the timed runs' line: count=227 first=4410 curr=4380 min=4301 max=5127 avg=4415.37 std=96
    assert m.value == m.median == m.mean == pytest.approx(4.41537)  # no median printed: the mean
    assert (m.std, m.min, m.max, m.runs) == (pytest.approx(0.096), pytest.approx(4.301), pytest.approx(5.127), 227)
    assert m.fields["summary"] == {"Warmup": 4468.52, "Init": 3120.0, "no stats": 4415.37}
    assert m.fields["params"]["Num threads"] == "1" and m.fields["params"]["Use nnapi"] == "0"
    assert m.runtime_version == "unknown"


def test_parse_tf2_format():
    """TF 2.x: 'Inference timings in us: Init, First inference, Warmup (avg), Inference (avg)'."""
    m = parse_benchmark_output(recorded("benchmark_tf2.txt"))
    assert (m.output_format, m.statistic) == ("tf2", "mean") and m.median == m.mean
    # the timed runs, not the warm-up line before them (count=303 ... avg=1650.84)
    assert m.value == pytest.approx(1.6284) and m.runs == 615
    assert (m.std, m.min, m.max) == (pytest.approx(0.052), pytest.approx(1.569), pytest.approx(2.034))
    assert m.fields["summary"] == {"Init": 21487.0, "First inference": 2710.0, "Warmup (avg)": 1650.84,
                                   "Inference (avg)": 1628.4}
    assert m.fields["params"]["Use xnnpack"] == "1"


def test_parse_percentiles_format_prefers_the_median():
    """Newer builds (LiteRT): 'INFO: ' prefixes and p5/median/p95 on the runs' line."""
    m = parse_benchmark_output(recorded("benchmark_tf2_percentiles.txt"))
    assert (m.output_format, m.statistic) == ("tf2-percentiles", "median")
    assert m.value == m.median == pytest.approx(1.268)  # median=1268 us
    assert m.mean == pytest.approx(1.27993) and m.std == pytest.approx(0.038) and m.runs == 782
    assert (m.fields["p5"], m.fields["median"], m.fields["p95"]) == (1244.0, 1268.0, 1335.0)
    assert m.fields["summary"]["Inference (avg)"] == 1279.93
    assert m.fields["params"]["Num threads"] == "1"


def test_parse_edge_cases():
    summary = "Inference timings in us: Init: 900, First inference: 5000, Warmup (avg): 5000, Inference (avg): {}"
    # every run took the same time: no avg/std/min/max printed
    m = parse_benchmark_output("count=50 curr=4000(all same)\n" + summary.format(4000))
    assert (m.value, m.std, m.min, m.max, m.runs) == (4.0, 0.0, 4.0, 4.0, 50)
    # one timed run, with percentiles
    m = parse_benchmark_output("INFO: count=1 curr=670083 p5=670083 median=670083 p95=670083\n"
                               + summary.format(670083))
    assert (m.value, m.statistic, m.mean, m.runs) == (670.083, "median", 670.083, 1)
    # C++ prints large doubles in scientific notation
    m = parse_benchmark_output("count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 "
                               "std=109798\n" + summary.format("2.95034e+06"))
    assert m.value == pytest.approx(2950.34) and m.max == pytest.approx(3189.954)
    # only the summary line: its mean, no spread
    m = parse_benchmark_output("Average inference timings in us: Warmup: 91471, Init: 4108, Inference: 80660.1")
    assert (m.value, m.runs, m.output_format) == (pytest.approx(80.6601), None, "tf1")
    assert math.isnan(m.std) and math.isnan(m.min) and math.isnan(m.max)
    # a build that names its version
    m = parse_benchmark_output("INFO: TensorFlow Lite version: 2.16.1\ncount=5 first=9 curr=9 min=8 max=9 avg=8.8 std=0"
                               "\n" + summary.format(8.8))
    assert m.runtime_version == "2.16.1"


@pytest.mark.parametrize("text, why", [
    (recorded("benchmark_truncated.txt"), "no 'Inference timings in us' line"),
    (recorded("benchmark_failed.txt"), "no 'Inference timings in us' line"),
    ("count=0\nInference timings in us: Init: 5, First inference: nan, Warmup (avg): nan, Inference (avg): nan",
     "count=0"),
    ("Inference timings in us: Init: 5, First inference: 7", "no mean inference time"),
    ("", "no 'Inference timings in us' line"),
])
def test_parse_refuses_output_without_timings(text, why):
    with pytest.raises(UnparseableOutput, match=re.escape(why)):
        parse_benchmark_output(text)


def test_first_relevant_line():
    assert first_relevant_line(recorded("benchmark_failed.txt")) == \
        "ERROR: Node number 7 (TfLiteXNNPackDelegate) failed to prepare."
    assert first_relevant_line("a\n\nlast line\n") == "last line"
    assert first_relevant_line("") == "(no output)"


# --- the fake phone ----------------------------------------------------------------------------
class FakePhone:
    """The environment of ``fake_adb``: its call log and the folder that stands for the phone."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root, self.monkeypatch = root, monkeypatch
        self.log_path = root.parent / "adb-calls.log"
        for key in [k for k in os.environ if k.startswith("FAKE_ADB_")]:
            monkeypatch.delenv(key)
        monkeypatch.setenv("FAKE_ADB_PYTHON", sys.executable)
        monkeypatch.setenv("FAKE_ADB_LOG", str(self.log_path))
        monkeypatch.setenv("FAKE_ADB_PHONE", str(root))
        self.install(BM)

    def set(self, **env: str) -> None:
        for key, value in env.items():
            self.monkeypatch.setenv(f"FAKE_ADB_{key.upper()}", value)

    def install(self, remote: str, mode: int = 0o755) -> None:
        path = self.root / remote.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/system/bin/sh\n")
        path.chmod(mode)

    def calls(self) -> list[list[str]]:
        if not self.log_path.is_file():
            return []
        return [ast.literal_eval(line) for line in self.log_path.read_text().splitlines()]

    def files(self, remote_dir: str = REMOTE) -> list[str]:
        folder = self.root / remote_dir.lstrip("/")
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def device(self, **options) -> AndroidDevice:
        return AndroidDevice(adb=str(FAKE_ADB), **options)


@pytest.fixture
def phone(tmp_path, monkeypatch) -> FakePhone:
    return FakePhone(tmp_path / "phone", monkeypatch)


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "m.tflite"
    path.write_bytes(b"TFL3" + bytes(996))  # 1000 bytes
    return path


def one_line_error(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and text
    return text


# --- commands ----------------------------------------------------------------------------------
def test_measure_tflite_sends_these_commands(phone, model):
    device = phone.device(threads=4, runs=20, warmup_runs=3, use_xnnpack=False)
    m = device.measure_tflite(model)
    assert isinstance(m, Measurement) and m.value == pytest.approx(1.268) and m.statistic == "median"
    remote = f"{REMOTE}/m.tflite"
    assert phone.calls() == [
        ["devices"],
        ["-s", SERIAL, "shell", "mkdir", "-p", REMOTE],
        ["-s", SERIAL, "push", str(model), remote],
        ["-s", SERIAL, "shell", BM, f"--graph={remote}", "--num_threads=4", "--num_runs=20", "--warmup_runs=3",
         "--use_xnnpack=false"],
        ["-s", SERIAL, "shell", "rm", "-f", remote],
        ["-s", SERIAL, "shell", "rmdir", REMOTE],
    ]
    # the fake echoes the flags it got, as benchmark_model does
    assert m.fields["params"]["Num threads"] == "4" and m.fields["params"]["Use xnnpack"] == "0"
    assert m.fields["params"]["Graph"] == remote
    assert phone.files() == [] and not (phone.root / REMOTE.lstrip("/")).exists()


def test_serial_paths_and_default_xnnpack(phone, model):
    """Option serial picks one of two phones; custom paths; use_xnnpack=default passes no flag."""
    phone.set(devices="devices_two.txt", bench="benchmark_tf1.txt")
    tool, folder = "/data/local/tmp/tools/benchmark_model_v1", "/data/local/tmp/x"
    phone.install(tool)
    device = phone.device(serial="emulator-5554", benchmark_model=tool, remote_dir=folder + "/",
                          use_xnnpack="default")
    m = device.measure_tflite(model)
    assert (m.value, m.statistic, m.output_format) == (pytest.approx(4.41537), "mean", "tf1")
    calls = phone.calls()
    assert calls[0] == ["devices"] and all(c[:2] == ["-s", "emulator-5554"] for c in calls[1:])
    assert ["-s", "emulator-5554", "shell", tool, f"--graph={folder}/m.tflite", "--num_threads=1", "--num_runs=50",
            "--warmup_runs=1"] in calls


def test_options_accept_strings(phone):
    device = phone.device(threads="2", runs="10", warmup_runs="0", use_xnnpack="true", timeout="5")
    s = device.settings
    assert (s["threads"], s["runs"], s["warmup_runs"], s["use_xnnpack"], s["timeout"]) == (2, 10, 0, True, 5.0)
    assert AndroidDevice().settings["use_xnnpack"] is True and AndroidDevice().settings["threads"] == 1
    assert AndroidDevice(serial=98765432).settings["serial"] == "98765432"  # as YAML reads serial=98765432


@pytest.mark.parametrize("options, named", [
    ({"threads": 0}, "threads=0"),
    ({"threads": True}, "threads=True"),
    ({"runs": "many"}, "runs='many'"),
    ({"warmup_runs": -1}, "warmup_runs=-1"),
    ({"use_xnnpack": "maybe"}, "use_xnnpack='maybe'"),
    ({"timeout": 0}, "timeout=0"),
    ({"remote_dir": "tmp/spnas"}, "remote_dir='tmp/spnas'"),
    ({"remote_dir": "/"}, "remote_dir='/'"),
    ({"benchmark_model": "/data/local/tmp/bm; reboot"}, "benchmark_model="),
    ({"serial": "two words"}, "serial='two words'"),
    ({"adb": ""}, "adb=''"),
    ({"num_threads": 2}, "unknown option 'num_threads'"),
])
def test_bad_options_are_one_line_errors(options, named):
    with pytest.raises(SpnasError) as excinfo:
        AndroidDevice(**options)
    assert named in one_line_error(excinfo) and "android" in str(excinfo.value)


# --- errors --------------------------------------------------------------------------------------
@pytest.mark.parametrize("devices, options, expected", [
    ("devices_none.txt", {}, "android: no device attached ('adb devices' lists none)"),
    ("devices_two.txt", {}, "android: 2 devices attached (FA79V1A04321 (device), emulator-5554 (device)); "
                            "choose one with the option serial=SERIAL"),
    ("devices_one.txt", {"serial": "R58M123"}, "android: device R58M123 is not attached (option serial); "
                                               "'adb devices' lists FA79V1A04321 (device)"),
    ("devices_unauthorized.txt", {}, "android: device FA79V1A04321 is unauthorized; unlock the phone"),
    ("devices_offline.txt", {}, "android: device FA79V1A04321 is offline"),
])
def test_device_selection_errors(phone, model, devices, options, expected):
    phone.set(devices=devices)
    with pytest.raises(SpnasError) as excinfo:
        phone.device(**options).measure_tflite(model)
    assert one_line_error(excinfo).startswith(expected)
    assert phone.calls() == [["devices"]]  # nothing is sent to a device that is not usable


def test_device_lost_after_listing(phone, model):
    phone.set(state="unauthorized")
    with pytest.raises(SpnasError) as excinfo:
        phone.device().measure_tflite(model)
    text = one_line_error(excinfo)
    assert text.startswith(f"android: creating {REMOTE} on the phone failed: '")
    assert f"-s {SERIAL} shell mkdir -p {REMOTE}' exited with status 1: adb: device unauthorized." in text


def test_benchmark_model_missing_or_not_executable(phone, model):
    (phone.root / BM.lstrip("/")).unlink()
    with pytest.raises(SpnasError) as excinfo:
        phone.device().measure_tflite(model)
    text = one_line_error(excinfo)
    assert text.startswith(f"android: benchmark_model is not on the phone at {BM} (option benchmark_model): '")
    assert f"says: /system/bin/sh: {BM}: inaccessible or not found; build it" in text
    assert phone.files() == []  # the pushed model was removed all the same

    phone.install(BM, mode=0o644)
    with pytest.raises(SpnasError) as excinfo:
        phone.device().measure_tflite(model)
    text = one_line_error(excinfo)
    assert text.startswith(f"android: {BM} on the phone is not executable: '")
    assert text.endswith(f"can't execute: Permission denied; run 'adb shell chmod 755 {BM}'")


def test_benchmark_failure_and_unparseable_output(phone, model):
    phone.set(bench="benchmark_failed.txt", bench_status="1")
    with pytest.raises(SpnasError) as excinfo:
        phone.device().measure_tflite(model)
    text = one_line_error(excinfo)
    assert text.startswith(f"android: benchmark_model failed: '{FAKE_ADB} -s {SERIAL} shell {BM} "
                           f"--graph={REMOTE}/m.tflite --num_threads=1")
    assert text.endswith("exited with status 1: ERROR: Node number 7 (TfLiteXNNPackDelegate) failed to prepare.")

    # exit status 0 (old adb does not pass it on) but no timings: the output is read and refused
    phone.set(bench="benchmark_truncated.txt", bench_status="0")
    with pytest.raises(SpnasError) as excinfo:
        phone.device().measure_tflite(model)
    text = one_line_error(excinfo)
    assert text.startswith("android: cannot read benchmark_model's output (no 'Inference timings in us' line "
                           "(the benchmark did not finish)): '")
    assert text.endswith("its first relevant line: INFO: Running benchmark for at least 50 iterations and at "
                         "least 1 seconds but terminate if exceeding 150 seconds.")
    assert phone.files() == []


def test_adb_missing(phone, model, tmp_path):
    with pytest.raises(SpnasError) as excinfo:
        AndroidDevice(adb="spnas-no-such-adb").measure_tflite(model)
    assert one_line_error(excinfo).startswith("android: 'spnas-no-such-adb' is not on PATH; install Android SDK "
                                              "platform-tools")
    with pytest.raises(SpnasError) as excinfo:
        AndroidDevice(adb=str(tmp_path / "sdk" / "adb")).measure_tflite(model)
    assert one_line_error(excinfo) == f"android: adb executable {tmp_path / 'sdk' / 'adb'} does not exist (option adb)"
    plain = tmp_path / "adb"
    plain.write_text("not a program")
    with pytest.raises(SpnasError) as excinfo:
        AndroidDevice(adb=str(plain)).measure_tflite(model)
    assert one_line_error(excinfo).startswith(f"android: {plain} is not executable (option adb)")
    with pytest.raises(SpnasError, match="no such .tflite file"):
        phone.device().measure_tflite(tmp_path / "missing.tflite")


def test_timeout(phone, model):
    phone.set(sleep="6")  # benchmark_model hangs; the other calls take ~30 ms each (margin for a busy machine)
    with pytest.raises(SpnasError) as excinfo:
        phone.device(timeout=1.5).measure_tflite(model)
    text = one_line_error(excinfo)
    assert text.startswith(f"android: '{FAKE_ADB} -s {SERIAL} shell {BM} --graph=")
    assert text.endswith("did not finish in 1.5 s (option timeout); is the phone still connected and awake?")


# --- a whole table, a whole network ------------------------------------------------------------
def op_macs(layer, op) -> int:
    return layer.macs[0] if op is None else layer.macs[layer.ops.index(op)]


def dummy_size(macs: int) -> int:
    """Bytes of the dummy model of a layer: 100 + MACs / 1000 (the fake times 1000 bytes as recorded)."""
    return 100 + macs // 1000


def test_latency_table_of_tiny(phone):
    phone.set(scale="size")
    space = SpaceGraph.load("tiny")
    built = []

    def make_tflite(space_, layer, op):
        built.append((layer.signature, op))
        return b"TFL3".ljust(dummy_size(op_macs(layer, op)), b"\0")

    table = phone.device(make_tflite=make_tflite).latency_table(space, progress=False)
    table.check_covers(space)

    # one model per (signature, choice), fixed layers with op None, no skip
    wanted = table_entries(space)
    assert len(built) == len(wanted) == 30 == sum(len(row) for row in table.entries.values())
    assert all(op is None or not op.is_skip for _, op in built)
    assert [op for _, op in built[:2]] == [None, None]  # stem conv, fixed MBConv
    # recorded median 1268 us for 1000 bytes; hand-computed: stem 55296 MACs -> 155 bytes -> 196.54 us
    assert table.entries["conv_k3_i3_o8_s1_r16"] == {"op": 0.19654}
    # blocks.1.0 k7e6: 297984 MACs -> 397 bytes -> 503.396 us; classifier: 320 MACs -> 100 bytes -> 126.8 us
    assert table.entries["mbconv_i8_o16_s2_r16"]["k7e6"] == pytest.approx(0.503396, abs=1e-12)
    assert table.entries["pool_fc_i32_o10_r4"] == {"op": 0.1268}
    for layer, op, choice in wanted:  # (the fake prints 6 significant digits, as C++ does)
        expected = 1.268 * dummy_size(op_macs(layer, op)) / 1000
        assert table.entries[layer.signature][choice] == pytest.approx(expected, rel=1e-5)
    assert len(set(table.entries["mbconv_i16_o16_s1_r8"].values())) == 9  # every op its own cost

    h = table.header
    assert (h.device, h.units, h.runtime, h.runtime_version, h.threads) == ("android", "ms", "tflite benchmark_model",
                                                                              "unknown", 1)
    assert h.host == "Google Pixel (Android 10, arm64-v8a)"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", h.date)
    assert (f"adb serial {SERIAL} (adb 1.0.41): {BM} --num_threads=1 --num_runs=50 --warmup_runs=1 "
            f"--use_xnnpack=true; entry = median of the timed runs (benchmark_model output format "
            f"tf2-percentiles)") in h.source

    calls = phone.calls()
    assert calls[:2] == [["devices"], ["-s", SERIAL, "shell", "getprop"]]
    runs = [c for c in calls if c[3:4] == [BM]]
    assert len(runs) == 30 and len([c for c in calls if c[2:3] == ["push"]]) == 30
    assert runs[0][4] == f"--graph={REMOTE}/spnas_000_conv_k3_i3_o8_s1_r16_op.tflite"
    assert calls[-3][:5] == ["-s", SERIAL, "shell", "rm", "-f"] and len(calls[-3]) == 35
    assert not (phone.root / REMOTE.lstrip("/")).exists()  # the phone is left as it was

    # the table works as any other: a runtime model, and a file round trip
    runtime = RuntimeModel(space, table)
    lo, hi = runtime.bounds()
    assert 0 < lo < hi and math.isfinite(hi)
    arch = space.largest()
    by_layer = sum(table.entry(layer.signature, str(arch.ops[layer.search_index]) if layer.searchable
                               else layer.choices[0]) for layer in space.layers)
    assert runtime.predict(arch) == pytest.approx(by_layer)
    assert LatencyTable.load(table.save(phone.root.parent / "android.json")).entries == table.entries


def test_measure_network(phone):
    phone.set(scale="size")
    space = SpaceGraph.load("tiny")
    arch = space.parse("k3e2 k7e6 | k5e6 skip")
    seen = []

    def make_network_tflite(space_, arch_):
        seen.append(arch_)
        return bytes(dummy_size(space_.cost(arch_)[1]))

    device = phone.device(make_network_tflite=make_network_tflite)
    m = device.measure_network(space, arch)
    assert seen == [arch]
    # 832320 MACs -> 932 bytes -> 1268 us x 0.932 = 1181.776 us, printed as C++ does: 1181.78
    assert space.cost(arch)[1] == 832320
    assert m.value == pytest.approx(1.18178, abs=1e-12) and m.statistic == "median"
    assert any(c[3:5] == [BM, f"--graph={REMOTE}/spnas_net_tiny.tflite"] for c in phone.calls())
    with pytest.raises(SpaceError):
        device.measure_network(space, space.parse("k3e2 k3e2 | k3e2"))  # checked before anything is built
    assert seen == [arch]


def test_plugin_registers_android():
    registered = {}
    spnas_register_devices(lambda name, obj: registered.setdefault(name, obj))
    assert registered == {"android": AndroidDevice}
    assert AndroidDevice().describe() == ("android: An Android phone through adb, isolated layers timed by TFLite's "
                                          "benchmark_model; units ms")
