"""Device ``android``: latency measured on an Android phone with TFLite's ``benchmark_model``.

Each (layer signature, choice) that a space needs, fixed layers included, is built as an isolated
``.tflite`` model with that layer's input shape, copied to the phone with ``adb push`` and timed
there by TFLite's native benchmark tool::

    adb -s SERIAL shell /data/local/tmp/benchmark_model --graph=/data/local/tmp/spnas/M.tflite \\
        --num_threads=1 --num_runs=50 --warmup_runs=1 --use_xnnpack=true

The entry is the median of the timed runs where the tool prints one (newer builds), else their
mean; :class:`Measurement` records which. One thread by default, as the paper's Pixel 1 table.
Nothing is subtracted: each entry contains one inference's fixed overhead, as the paper's did.

The models are built by an injectable ``make_tflite(space, layer, op) -> bytes`` (and
``make_network_tflite(space, arch) -> bytes`` for :meth:`AndroidDevice.measure_network`); the
defaults build Keras models (:mod:`spnas.exporting.keras_model`) and convert them, importing TensorFlow on
first use. The adb side needs no TensorFlow and is tested with a stand-in ``adb``
(``tests/data/android/fake_adb.py``) that replays recorded output.

``benchmark_model`` output formats read by :func:`parse_benchmark_output` (``output_format``):

* ``tf1``: TensorFlow 1.x era tools, ``Average inference timings in us: Warmup: W, Init: I,
  no stats: A`` after the ``count=... avg=... std=...`` line of the timed runs;
* ``tf2``: ``Inference timings in us: Init: I, First inference: F, Warmup (avg): W,
  Inference (avg): A``, lines with or without a ``INFO:`` prefix;
* ``tf2-percentiles``: as ``tf2``, and the runs' line also has ``p5=... median=... p95=...``
  (LiteRT's ``StatWithPercentiles``).
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from spnas.space.arch import Architecture, Op
from spnas.latency.device import Device
from spnas.core.errors import SpnasError, describe
from spnas.space.graph import LayerNode, SpaceGraph
from spnas.core.hookspecs import hookimpl
from spnas.latency.table import LatencyTable, TableHeader
from spnas.latency.profiling import table_entries  # noqa: F401 (shared; tests import it from here too)

MakeTflite = Callable[[SpaceGraph, LayerNode, "Op | None"], bytes]
MakeNetworkTflite = Callable[[SpaceGraph, Architecture], bytes]

RUNTIME = "tflite benchmark_model"
_REMOTE_PATH_RE = re.compile(r"/[A-Za-z0-9_.+/-]*")
_SERIAL_RE = re.compile(r"\S+")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


# --- parsing benchmark_model's output ---------------------------------------------------------
class UnparseableOutput(SpnasError):
    """benchmark_model's output has no timings that this module can read."""


@dataclass(frozen=True)
class Measurement:
    """One model timed by ``benchmark_model``; times in milliseconds.

    Its ``median``, ``mean``, ``std`` and ``runs`` read as :class:`spnas.latency.profiling.Timing`'s, so
    that code written for the measured devices (``spnas latency --measure``, validation) takes it.

    Attributes:
        median: the timed runs' median where the tool prints percentiles (newer builds); else
            their mean. ``statistic`` says which: ``"median"`` or ``"mean"``.
        mean: the timed runs' mean.
        std, min, max: of the timed runs; NaN where the output has no statistics line.
        runs: how many runs were timed (at least ``num_runs``: the tool also runs for at least
            ``min_secs``), ``None`` where not printed.
        output_format: ``tf1``, ``tf2`` or ``tf2-percentiles`` (see the module docstring).
        runtime_version: the TFLite version where the output names one, else ``"unknown"``.
        fields: the raw values as printed: the runs' line (``count``, ``avg``, ``median``, ... in
            microseconds), the summary line (``Init``, ``Inference (avg)``, ... in microseconds)
            under ``summary``, and the echoed parameters (``Num threads``, ``Graph``, ...) under
            ``params``.
        output: the whole output.
    """

    median: float
    statistic: str
    mean: float
    std: float
    min: float
    max: float
    runs: int | None
    output_format: str
    runtime_version: str = "unknown"
    fields: dict[str, Any] = field(default_factory=dict, compare=False)
    output: str = field(default="", repr=False, compare=False)

    @property
    def value(self) -> float:
        """What a latency table takes: :attr:`median` (the median, or the mean where none is printed)."""
        return self.median


_PREFIX = r"^\s*(?:[A-Z]+:\s*)?"  # TFLITE_LOG's "INFO: " / "VERBOSE: " in newer builds
_STATS_RE = re.compile(_PREFIX + r"count=\d+")
_PAIR_RE = re.compile(r"([A-Za-z0-9_]+)=([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|-?inf)")
_SUMMARY_RE = re.compile(r"\b(Average inference timings|Inference timings) in us:\s*(.*)$")
_SUMMARY_ITEM_RE = re.compile(r"^\s*(?:([^:]+?)\s*:\s*)?([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|-?inf)\s*$")
_PARAM_RE = re.compile(_PREFIX + r"([A-Za-z#][^:\[\]]*?)\s*:\s*\[(.*)\]\s*$")
_VERSION_RE = re.compile(r"\b(?:TensorFlow Lite|TFLite|LiteRT)(?: runtime)? version\s*[:=]?\s*\[?v?(\d[\w.+-]*)",
                         re.IGNORECASE)
#: summary-line names of the mean of the timed runs, newest first
_SUMMARY_MEAN_KEYS = ("Inference (avg)", "no stats", "Inference", "")


def _number(text: str) -> float:
    return float(text)


def parse_benchmark_output(text: str) -> Measurement:
    """Read the timings of the timed runs from ``benchmark_model``'s output (any format above).

    The runs' statistics come from the last ``count=...`` line before the summary line
    (``... timings in us: ...``), which every format prints once the benchmark has finished;
    the warm-up runs' line comes before it.

    Example:
        >>> m = parse_benchmark_output("count=50 first=4100 curr=3990 min=3950 max=4100 avg=4000 std=20\\n"
        ...     "Inference timings in us: Init: 900, First inference: 4300, Warmup (avg): 4300, Inference (avg): 4000")
        >>> m.median, m.statistic, m.std, m.output_format
        (4.0, 'mean', 0.02, 'tf2')

    Raises:
        UnparseableOutput: no summary line, or no mean of the timed runs in it or before it.
    """
    lines = text.splitlines()
    summary_at, summary_kind, summary = None, "", {}
    for i, line in enumerate(lines):
        match = _SUMMARY_RE.search(line)
        if match:
            summary_at, summary_kind = i, match.group(1)
            summary = _summary_items(match.group(2))
    if summary_at is None:
        raise UnparseableOutput("no 'Inference timings in us' line (the benchmark did not finish)")
    stats: dict[str, float] = {}
    all_same = False
    for line in reversed(lines[:summary_at]):
        if _STATS_RE.match(line):
            stats = {k: _number(v) for k, v in _PAIR_RE.findall(line)}
            all_same = "(all same)" in line
            break
    params = {}
    for line in lines:
        match = _PARAM_RE.match(line)
        if match:
            params.setdefault(match.group(1), match.group(2))

    runs = int(stats["count"]) if "count" in stats else None
    if runs == 0:
        raise UnparseableOutput("the timed runs' line says count=0 (no run was timed)")
    if "avg" in stats:
        mean, std = stats["avg"], stats.get("std")
    elif "curr" in stats and (all_same or runs == 1):  # "count=N curr=X(all same)": every run took X
        mean, std = stats["curr"], 0.0
    else:
        mean = next((summary[k] for k in _SUMMARY_MEAN_KEYS if k in summary), None)
        std = None
    if mean is None or not math.isfinite(mean):
        raise UnparseableOutput("no mean inference time in the output")
    low = stats.get("min", stats.get("curr") if (all_same or runs == 1) else None)
    high = stats.get("max", stats.get("curr") if (all_same or runs == 1) else None)
    median = stats.get("median")
    if summary_kind.startswith("Average"):
        output_format = "tf1"
    else:
        output_format = "tf2-percentiles" if median is not None else "tf2"
    version = _VERSION_RE.search(text)

    def ms(us: float | None) -> float:
        return math.nan if us is None else us / 1000.0

    return Measurement(
        median=ms(median if median is not None else mean), statistic="median" if median is not None else "mean",
        mean=ms(mean), std=ms(std), min=ms(low), max=ms(high), runs=runs,
        output_format=output_format, runtime_version=version.group(1) if version else "unknown",
        fields={**stats, "summary": summary, "params": params}, output=text,
    )


def _summary_items(rest: str) -> dict[str, float]:
    """``"Init: 9, First inference: 5, ..."`` -> {"Init": 9.0, ...}; an unnamed number gets key ``""``."""
    out = {}
    for item in rest.split(","):
        match = _SUMMARY_ITEM_RE.match(item)
        if match:
            out[match.group(1) or ""] = _number(match.group(2))
    return out


_ERROR_WORDS = re.compile(r"error|fail|not found|denied|cannot|can't|unable|no such|unauthorized|offline|abort",
                          re.IGNORECASE)


def first_relevant_line(output: str) -> str:
    """The first line of ``output`` that reads as an error, else its last non-empty line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if _ERROR_WORDS.search(line):
            return line
    return lines[-1] if lines else "(no output)"


# --- option values -----------------------------------------------------------------------------
def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SpnasError(f"device android: option {name}={describe(value)} is not allowed; use an integer >= {minimum}")
    return value


def _bool_or_none(name: str, value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE + ("default", "none"):
        text = value.strip().lower()
        return None if text in ("default", "none") else text in _TRUE
    raise SpnasError(f"device android: option {name}={describe(value)} is not allowed; use true, false, "
                     f"or default (the flag is not passed, for builds that do not know it)")


def _seconds(name: str, value: Any) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise SpnasError(f"device android: option {name}={describe(value)} is not allowed; use a number of seconds > 0")
    return float(value)


def _remote_path(name: str, value: Any) -> str:
    if not isinstance(value, str) or not _REMOTE_PATH_RE.fullmatch(value) or value.rstrip("/") == "":
        raise SpnasError(f"device android: option {name}={describe(value)} is not allowed; use an absolute path "
                         f"on the phone of letters, digits and _ . + - / (e.g. /data/local/tmp/...)")
    return value.rstrip("/")


def _safe_name(name: str) -> str:
    """A file name that needs no quoting in the phone's shell."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name) or "model.tflite"


def default_make_tflite(space: SpaceGraph, layer: LayerNode, op: Op | None) -> bytes:
    """The isolated layer as a float32 ``.tflite`` (Keras model, then TFLite's converter)."""
    from spnas.exporting.keras_model import layer_model

    return _keras_to_tflite()(layer_model(space, layer, op))


def default_make_network_tflite(space: SpaceGraph, arch: Architecture) -> bytes:
    """The child network of ``arch`` as a float32 ``.tflite``."""
    from spnas.exporting.keras_model import child_model

    return _keras_to_tflite()(child_model(space, arch))


def _keras_to_tflite() -> Callable[[Any], bytes]:
    try:
        from spnas.exporting.exporter import keras_to_tflite
    except ImportError:  # spnas.exporting.exporter not there: the tflite device's converter is the same one
        from spnas.devices.tflite import keras_to_tflite
    return keras_to_tflite


# --- the device ----------------------------------------------------------------------------------
class AndroidDevice(Device):
    """An Android phone through adb, isolated layers timed by TFLite's benchmark_model.

    Options (strings such as ``"4"`` or ``"false"`` are accepted too):

    * ``adb``: the adb executable, a path or a name on ``PATH`` (default ``adb``);
    * ``serial``: the device, passed as ``adb -s SERIAL`` (default: the only attached one);
    * ``benchmark_model``: the tool's path on the phone (default ``/data/local/tmp/benchmark_model``);
    * ``remote_dir``: where models are pushed (default ``/data/local/tmp/spnas``);
    * ``threads``, ``runs``, ``warmup_runs``: ``--num_threads`` (1), ``--num_runs`` (50),
      ``--warmup_runs`` (1);
    * ``use_xnnpack``: ``--use_xnnpack=true|false`` (default true); ``default`` passes no flag;
    * ``timeout``: seconds for each adb command (default 300).
    """

    name = "android"
    units = "ms"
    option_names: ClassVar[tuple[str, ...]] = ("adb", "serial", "benchmark_model", "remote_dir", "threads", "runs",
                                               "warmup_runs", "use_xnnpack", "timeout")
    defaults: ClassVar[dict[str, Any]] = {
        "adb": "adb", "serial": None, "benchmark_model": "/data/local/tmp/benchmark_model",
        "remote_dir": "/data/local/tmp/spnas", "threads": 1, "runs": 50, "warmup_runs": 1, "use_xnnpack": True,
        "timeout": 300.0,
    }

    def __init__(self, *, make_tflite: MakeTflite | None = None,
                 make_network_tflite: MakeNetworkTflite | None = None, **options: Any):
        super().__init__(**options)
        s = {**self.defaults, **options}
        if not isinstance(s["adb"], (str, os.PathLike)) or not str(s["adb"]).strip():
            raise SpnasError(f"device android: option adb={describe(s['adb'])} is not allowed; "
                             f"use the path of the adb executable, or its name on PATH")
        s["adb"] = os.fspath(s["adb"])
        if isinstance(s["serial"], int) and not isinstance(s["serial"], bool):
            s["serial"] = str(s["serial"])  # an all-digit serial read as a number (--device-option serial=...)
        if s["serial"] is not None and (not isinstance(s["serial"], str) or not _SERIAL_RE.fullmatch(s["serial"])):
            raise SpnasError(f"device android: option serial={describe(s['serial'])} is not allowed; "
                             f"use a serial as 'adb devices' lists it")
        s["benchmark_model"] = _remote_path("benchmark_model", s["benchmark_model"])
        s["remote_dir"] = _remote_path("remote_dir", s["remote_dir"])
        s["threads"] = _int("threads", s["threads"], 1)
        s["runs"] = _int("runs", s["runs"], 1)
        s["warmup_runs"] = _int("warmup_runs", s["warmup_runs"], 0)
        s["use_xnnpack"] = _bool_or_none("use_xnnpack", s["use_xnnpack"])
        s["timeout"] = _seconds("timeout", s["timeout"])
        self.settings = s
        self.make_tflite = make_tflite or default_make_tflite
        self.make_network_tflite = make_network_tflite or default_make_network_tflite
        self._adb_path: str | None = None
        self._serial: str | None = None
        self._remote_dir_made = False

    # --- adb ----------------------------------------------------------------------------------
    def adb_path(self) -> str:
        """The adb executable (option ``adb``: a path, or a name looked up on ``PATH``)."""
        if self._adb_path is None:
            adb = self.settings["adb"]
            if os.sep in adb or (os.altsep and os.altsep in adb):
                path = Path(adb).expanduser()
                if not path.is_file():
                    raise SpnasError(f"android: adb executable {adb} does not exist (option adb)")
                if not os.access(path, os.X_OK):
                    raise SpnasError(f"android: {adb} is not executable (option adb); chmod +x it or pass another adb")
                self._adb_path = str(path)
            else:
                found = shutil.which(adb)
                if found is None:
                    raise SpnasError(f"android: {adb!r} is not on PATH; install Android SDK platform-tools "
                                     f"(apt install adb, or developer.android.com/tools/releases/platform-tools) "
                                     f"or pass the option adb=/path/to/adb")
                self._adb_path = found
        return self._adb_path

    def _run(self, args: list[str], *, device: bool = True) -> tuple[list[str], int, str]:
        """Run adb with ``args`` (after ``-s SERIAL`` when ``device``); (command, exit status, output)."""
        cmd = [self.adb_path(), *(("-s", self.serial) if device else ()), *args]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  timeout=self.settings["timeout"], check=False)
        except subprocess.TimeoutExpired:
            raise SpnasError(f"android: '{shlex.join(cmd)}' did not finish in {self.settings['timeout']:g} s "
                             f"(option timeout); is the phone still connected and awake?") from None
        except OSError as exc:
            raise SpnasError(f"android: cannot run '{shlex.join(cmd)}': {exc.strerror or exc}") from None
        return cmd, proc.returncode, proc.stdout.decode("utf-8", errors="replace")

    def _check(self, args: list[str], what: str, *, device: bool = True) -> str:
        """Run adb; a non-zero exit status is a one-line error naming ``what``, the command and the
        first relevant line of its output."""
        cmd, status, out = self._run(args, device=device)
        if status != 0:
            raise SpnasError(f"android: {what} failed: '{shlex.join(cmd)}' exited with status {status}: "
                             f"{first_relevant_line(out)}")
        return out

    def devices(self) -> list[tuple[str, str]]:
        """(serial, state) of every device ``adb devices`` lists (state ``device`` is usable)."""
        out = self._check(["devices"], "listing devices", device=False)
        listed = []
        for line in out.splitlines():
            line = line.strip()
            if not line or line.startswith("*") or line.startswith("List of devices"):
                continue
            serial, _, state = line.partition("\t") if "\t" in line else line.partition(" ")
            listed.append((serial.strip(), state.strip()))
        return listed

    @property
    def serial(self) -> str:
        """The device to use: option ``serial``, checked to be attached and usable, else the only one."""
        if self._serial is None:
            listed = self.devices()
            shown = ", ".join(f"{s} ({st})" for s, st in listed)
            wanted = self.settings["serial"]
            if wanted is not None:
                states = dict(listed)
                if wanted not in states:
                    raise SpnasError(f"android: device {wanted} is not attached (option serial); 'adb devices' "
                                     f"lists {shown or 'none'}")
                serial, state = wanted, states[wanted]
            elif not listed:
                raise SpnasError("android: no device attached ('adb devices' lists none); connect the phone with "
                                 "USB debugging enabled (Settings > Developer options)")
            elif len(listed) > 1:
                raise SpnasError(f"android: {len(listed)} devices attached ({shown}); choose one with the option "
                                 f"serial=SERIAL")
            else:
                serial, state = listed[0]
            if state == "unauthorized":
                raise SpnasError(f"android: device {serial} is unauthorized; unlock the phone and accept its "
                                 f"'Allow USB debugging?' prompt, then retry")
            if state == "offline":
                raise SpnasError(f"android: device {serial} is offline; reconnect it (or 'adb kill-server') and retry")
            if state != "device":
                raise SpnasError(f"android: device {serial} is in state {describe(state)}, not 'device'; "
                                 f"it cannot run commands (see 'adb devices')")
            self._serial = serial
        return self._serial

    def shell(self, *words: str, what: str) -> str:
        """``adb -s SERIAL shell WORDS...`` (words need no quoting: every remote path is checked)."""
        return self._check(["shell", *words], what)

    def phone_properties(self) -> dict[str, str]:
        """The phone's system properties (``adb shell getprop``)."""
        out = self.shell("getprop", what="reading the phone's properties")
        props = {}
        for line in out.splitlines():
            match = re.match(r"^\[(.+?)\]: \[(.*)\]\s*$", line.strip())
            if match:
                props[match.group(1)] = match.group(2)
        return props

    def adb_version(self) -> str:
        """``adb version``'s first line without its prefix (e.g. ``1.0.41``), or ``unknown``."""
        _, status, out = self._run(["version"], device=False)
        match = re.search(r"Android Debug Bridge version (\S+)", out)
        return match.group(1) if status == 0 and match else "unknown"

    # --- measuring ----------------------------------------------------------------------------
    def benchmark_command(self, remote_model: str) -> list[str]:
        """The words of the ``adb shell`` command that times ``remote_model``."""
        s = self.settings
        words = [s["benchmark_model"], f"--graph={remote_model}", f"--num_threads={s['threads']}",
                 f"--num_runs={s['runs']}", f"--warmup_runs={s['warmup_runs']}"]
        if s["use_xnnpack"] is not None:
            words.append(f"--use_xnnpack={'true' if s['use_xnnpack'] else 'false'}")
        return words

    def _push(self, local: Path) -> str:
        remote_dir = self.settings["remote_dir"]
        if not self._remote_dir_made:
            self.shell("mkdir", "-p", remote_dir, what=f"creating {remote_dir} on the phone")
            self._remote_dir_made = True
        remote = f"{remote_dir}/{_safe_name(local.name)}"
        self._check(["push", str(local), remote], f"copying {local.name} to the phone")
        return remote

    def _benchmark(self, remote: str) -> Measurement:
        words = self.benchmark_command(remote)
        cmd, status, out = self._run(["shell", *words])
        tool = self.settings["benchmark_model"]
        # shells print "<path>: not found" / "inaccessible or not found" / "can't execute: Permission denied"
        for line in out.splitlines()[:3]:
            if tool in line and re.search(r"not found|No such file", line):
                raise SpnasError(f"android: benchmark_model is not on the phone at {tool} (option benchmark_model): "
                                 f"'{shlex.join(cmd)}' says: {line.strip()}; build it for the phone's ABI and adb "
                                 f"push it there (see docs/android.md)")
            if tool in line and "Permission denied" in line:
                raise SpnasError(f"android: {tool} on the phone is not executable: '{shlex.join(cmd)}' says: "
                                 f"{line.strip()}; run 'adb shell chmod 755 {tool}'")
        if status != 0:
            raise SpnasError(f"android: benchmark_model failed: '{shlex.join(cmd)}' exited with status {status}: "
                             f"{first_relevant_line(out)}")
        try:
            measured = parse_benchmark_output(out)
        except UnparseableOutput as exc:
            raise SpnasError(f"android: cannot read benchmark_model's output ({exc}): '{shlex.join(cmd)}'; "
                             f"its first relevant line: {first_relevant_line(out)}") from None
        threads = measured.fields["params"].get("Num threads")
        if threads is not None and threads.strip() != str(self.settings["threads"]):
            raise SpnasError(f"android: benchmark_model ran with {threads} threads, not {self.settings['threads']}: "
                             f"'{shlex.join(cmd)}'")
        return measured

    def _remove(self, remote_files: list[str]) -> None:
        """Best effort: delete what was pushed, and the remote folder if that leaves it empty."""
        try:
            if remote_files:
                self.shell("rm", "-f", *remote_files, what="removing the models from the phone")
            if self._remote_dir_made:
                self._run(["shell", "rmdir", self.settings["remote_dir"]])
                self._remote_dir_made = False
        except SpnasError:
            pass

    def measure_tflite(self, path: str | Path) -> Measurement:
        """Push the ``.tflite`` at ``path`` to the phone, time it there, and remove it again."""
        path = Path(path)
        if not path.is_file():
            raise SpnasError(f"{path}: no such .tflite file")
        remote = self._push(path)
        try:
            return self._benchmark(remote)
        finally:
            self._remove([remote])

    def measure_network(self, space: SpaceGraph, arch: Architecture) -> Measurement:
        """The whole child network of ``arch`` (built by ``make_network_tflite``), timed as one model."""
        arch = space.validate(arch)
        with tempfile.TemporaryDirectory(prefix="spnas-android-") as tmp:
            path = Path(tmp) / _safe_name(f"spnas_net_{space.name}.tflite")
            path.write_bytes(self.make_network_tflite(space, arch))
            return self.measure_tflite(path)

    def latency_table(self, space: SpaceGraph, progress: bool = True) -> LatencyTable:
        """Time every (signature, choice) ``space`` needs, fixed layers included, on the phone."""
        from tqdm.auto import tqdm

        todo = table_entries(space)
        props = self.phone_properties()  # also resolves and checks the device
        entries: dict[str, dict[str, float]] = {}
        measured: list[Measurement] = []
        pushed: list[str] = []
        bar = tqdm(total=len(todo), desc=f"measuring {space.name} on {self.serial}", unit="model",
                   disable=not progress, leave=False, dynamic_ncols=True)
        try:
            with tempfile.TemporaryDirectory(prefix="spnas-android-") as tmp:
                for i, (layer, op, choice) in enumerate(todo):
                    path = Path(tmp) / f"spnas_{i:03d}_{layer.signature}_{choice}.tflite"
                    path.write_bytes(self.make_tflite(space, layer, op))
                    pushed.append(self._push(path))
                    m = self._benchmark(pushed[-1])
                    entries.setdefault(layer.signature, {})[choice] = m.value
                    measured.append(m)
                    bar.update(1)
        finally:
            bar.close()
            self._remove(pushed)
        return LatencyTable(self.header(props, measured), entries, fixed_cost=None, origin=f"device {self.name}")

    def header(self, props: dict[str, str], measured: list[Measurement]) -> TableHeader:
        s = self.settings
        model = props.get("ro.product.model", "") or "unknown phone"
        maker = props.get("ro.product.manufacturer", "")
        host = model if not maker or model.lower().startswith(maker.lower()) else f"{maker} {model}"
        details = [f"Android {props['ro.build.version.release']}" if props.get("ro.build.version.release") else "",
                   props.get("ro.product.cpu.abi", "")]
        if any(details):
            host += f" ({', '.join(d for d in details if d)})"
        statistics = sorted({m.statistic for m in measured}) or ["median"]
        formats = sorted({m.output_format for m in measured}) or ["none"]
        versions = sorted({m.runtime_version for m in measured} - {"unknown"})
        flags = " ".join(self.benchmark_command("M.tflite")[2:])
        return TableHeader(
            device=self.name, units=self.units, runtime=RUNTIME, runtime_version=", ".join(versions) or "unknown",
            threads=s["threads"], host=host, date=time.strftime("%Y-%m-%d %H:%M:%S"),
            source=(f"isolated layers timed on the phone with adb serial {self.serial} (adb {self.adb_version()}): "
                    f"{s['benchmark_model']} {flags}; entry = {' or '.join(statistics)} of the timed runs "
                    f"(benchmark_model output format {', '.join(formats)}); no overhead subtracted"),
        )


@hookimpl
def spnas_register_devices(register):
    register(AndroidDevice.name, AndroidDevice)
