"""Measured latency tables: time every candidate op of every layer in isolation (Eq. 10).

Single-Path NAS profiles each candidate op of each layer on the target device, alone, with that
layer's input shape, and sums per-layer costs into a network's runtime (Sec. 3.2, Eq. 10; their
model was off by 1.76 % on average over 100 networks, Fig. 7). :class:`MeasuredDevice` does the
same for any runtime that can run a model on this machine: a subclass says how to build a
runnable model of one layer (``layer_runner``) and of a whole network (``network_runner``); this
module owns the rest, the same way for every runtime:

* **what is measured**: one entry per (layer signature, choice) that the space needs, the fixed
  layers (stem, fixed MBConvs, head, pooling and classifier) included;
* **how**: models are converted here, then timed in a clean worker process that loads only the
  runtime (:mod:`spnas.latency.timing_worker`; timing in this process, which holds TensorFlow, PyTorch and
  every converted model, gave bimodal results). Warm-up runs, then runs until both ``runs`` and
  ``min_time`` are reached; the entry is the median. Entries are measured in ``rounds``
  interleaved passes over all layers, and the median of a layer's round medians is kept, so that
  a slow spell of the machine does not bias the layers measured during it. With one thread the
  worker is pinned to one core;
* **overhead**: every isolated measurement contains the runtime's per-inference overhead, which a
  network pays once. It is measured on a trivial model, subtracted from each entry and kept once
  in the table's ``overhead``;
* **processes**: timings of the same model differ from one process to the next by up to
  about 8 % on this virtual machine (all models of a process alike), more than within a process.
  The worker is run ``processes`` times, one after another, and each model keeps its median
  process's timing;
* **calibration**: a layer inside a network does not cost what it costs alone (on this machine
  224x224 networks took 14-18 % longer than the sum of their layers, with a spread of only 1-2 %
  around that bias). With ``calibrate`` = N > 0, N random whole networks (from a fixed seed, not the
  one ``spnas latency validate`` draws from by default) are timed in the same worker process as the layers, and one factor on the layer sum,
  the table's ``scale``, is fitted to them by least squares on the relative error;
* **cache**: a measured table is kept in the user's cache directory, keyed by the device's
  settings, the space's signature, the runtime versions and the processor, and is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Iterator

from spnas.space.arch import Architecture, Op
from spnas.latency.device import Device
from spnas.core.errors import SpnasError
from spnas.space.graph import LayerNode, SpaceGraph
from spnas.latency.table import LatencyTable, LatencyTableError, TableHeader
from spnas.latency.runtime import RuntimeModel



def user_cache_dir() -> Path:
    """``$SPNAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/spnas``, else ``~/.cache/spnas``."""
    if os.environ.get("SPNAS_CACHE_DIR"):
        return Path(os.environ["SPNAS_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "spnas"
    return Path.home() / ".cache" / "spnas"


def processor() -> str:
    """The CPU model (for cache keys and table headers)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


from spnas.latency.timing_worker import Timing, pinned, time_runner  # noqa: E402,F401 (re-exported)


@contextlib.contextmanager
def quiet_fds() -> Iterator[None]:
    """Silence file descriptors 1 and 2 (C++ libraries that print on every conversion)."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


def table_entries(space: SpaceGraph) -> list[tuple[LayerNode, Op | None, str]]:
    """(layer, op, choice key) for each distinct (signature, choice) the space needs, in order."""
    seen: set[tuple[str, str]] = set()
    out = []
    for layer in space.layers:
        ops: list[Op | None] = [op for op in layer.ops if not op.is_skip] if layer.searchable else [None]
        for op, choice in zip(ops, layer.choices):
            if (layer.signature, choice) not in seen:
                seen.add((layer.signature, choice))
                out.append((layer, op, choice))
    return out


def median_timing(timings: list[Timing]) -> Timing:
    """The timing whose median is the median (the upper one of an even count)."""
    return sorted(timings, key=lambda t: t.median)[len(timings) // 2]


CALIBRATION_SEED = 20190406  # arXiv 1904.02877's date; any seed other than validation's default 0


def calibration_archs(space: SpaceGraph, n: int) -> list[Architecture]:
    """The ``n`` distinct random networks a table is calibrated on (a fixed seed).

    Random, like the networks a search compares, rather than the extremes: the smallest network
    (nearly every layer skipped) fitted the common factor worst (-11 % on spnas-imagenet).
    """
    import random

    rng = random.Random(CALIBRATION_SEED)
    out: list[Architecture] = []
    for _ in range(100 * n):
        if len(out) >= n:
            break
        arch = space.random(rng)
        if arch not in out:
            out.append(arch)
    return out


@dataclass(frozen=True)
class ScaleFit:
    """One factor on a table's layer sum, fitted against measured whole networks."""

    scale: float
    networks: int
    #: relative errors (predicted / measured - 1) before and after scaling, in %
    errors_before: tuple[float, ...]
    errors_after: tuple[float, ...]

    def describe(self) -> str:
        before = sum(self.errors_before) / len(self.errors_before)
        worst = max(self.errors_after, key=abs)
        return (f"layer sum scaled by {self.scale:.4f}, fitted on {self.networks} whole networks (mean error "
                f"{before:+.2f} % before, worst {worst:+.2f} % after)")


def fit_scale(runtime: RuntimeModel, archs: list[Architecture], measured: list[float]) -> ScaleFit:
    """The scale ``s`` minimising the sum of ((overhead + s * S_i) / M_i - 1)^2, in closed form,
    where ``S_i`` is network i's layer sum under ``runtime`` (an unscaled table) and ``M_i`` its
    measured time."""
    if runtime.table.scale != 1.0:
        raise ValueError("fit_scale needs an unscaled table")
    o = runtime.table.overhead
    sums = [runtime.predict(a) - o for a in archs]
    num = sum(S * (M - o) / M**2 for S, M in zip(sums, measured))
    den = sum(S * S / M**2 for S, M in zip(sums, measured))
    if den <= 0 or num <= 0:
        raise SpnasError("calibration failed: the networks' layer sums or measured times are not positive")
    scale = num / den
    before = tuple(100 * ((o + S) / M - 1) for S, M in zip(sums, measured))
    after = tuple(100 * ((o + scale * S) / M - 1) for S, M in zip(sums, measured))
    return ScaleFit(scale, len(archs), before, after)


class MeasuredDevice(Device):
    """A device whose table is measured on this machine by timing isolated layers.

    Subclasses set :attr:`worker_runtime` (what :func:`spnas.latency.timing_worker.make_runner` runs) and
    implement :meth:`layer_bytes`, :meth:`network_bytes`, :meth:`empty_bytes` and :meth:`versions`.
    """

    units: ClassVar[str] = "ms"
    runtime: ClassVar[str] = ""
    worker_runtime: ClassVar[str] = ""
    option_names: ClassVar[tuple[str, ...]] = ("threads", "runs", "warmup", "min_time", "rounds", "processes",
                                               "calibrate", "cache")
    defaults: ClassVar[dict[str, Any]] = {"threads": 1, "runs": 30, "warmup": 10, "min_time": 0.05, "rounds": 1,
                                          "processes": 3, "calibrate": 3, "cache": True}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.settings = {**self.defaults, **options}
        checks = {"threads": lambda v: isinstance(v, int) and v >= 1, "runs": lambda v: isinstance(v, int) and v >= 1,
                  "warmup": lambda v: isinstance(v, int) and v >= 0, "rounds": lambda v: isinstance(v, int) and v >= 1,
                  "min_time": lambda v: isinstance(v, (int, float)) and v >= 0,
                  "processes": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                  "calibrate": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                  "cache": lambda v: isinstance(v, bool)}
        for key, ok in checks.items():
            if not ok(self.settings[key]):
                raise SpnasError(f"device {self.name}: option {key}={self.settings[key]!r} is not allowed")

    # --- what a runtime provides ----------------------------------------------------------------
    def layer_bytes(self, space: SpaceGraph, layer: LayerNode, op: Op | None) -> bytes:  # pragma: no cover
        raise NotImplementedError

    def network_bytes(self, space: SpaceGraph, arch: Architecture) -> bytes:  # pragma: no cover
        raise NotImplementedError

    def empty_bytes(self) -> bytes:  # pragma: no cover
        """A trivial model: what one inference costs whatever the model."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:  # pragma: no cover
        raise NotImplementedError

    # --- measuring ------------------------------------------------------------------------------
    def measure_models(self, models: list[bytes]) -> list[Timing]:
        """Time ``models`` in ``processes`` clean worker processes, one after another (see
        :mod:`spnas.latency.timing_worker`); each model keeps its median process's timing."""
        import subprocess
        import sys
        import tempfile

        from spnas.latency import timing_worker

        per_model: list[list[Timing]] = [[] for _ in models]
        with tempfile.TemporaryDirectory(prefix="spnas-timing-") as tmp:
            paths = []
            for i, content in enumerate(models):
                path = Path(tmp) / f"m{i}.bin"
                path.write_bytes(content)
                paths.append(str(path))
            job, out = Path(tmp) / "job.json", Path(tmp) / "result.json"
            settings = {k: v for k, v in self.settings.items() if k not in ("cache", "calibrate", "processes")}
            job.write_text(json.dumps({"runtime": self.worker_runtime, "models": paths, "settings": settings}))
            for _ in range(self.settings["processes"]):
                out.unlink(missing_ok=True)
                proc = subprocess.run([sys.executable, timing_worker.__file__, str(job), str(out)],
                                      capture_output=True, text=True)
                if proc.returncode != 0 or not out.is_file():
                    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    raise SpnasError(f"device {self.name}: the timing process failed ({last[:200]})")
                for timings, t in zip(per_model, json.loads(out.read_text())):
                    timings.append(Timing(**t))
        return [median_timing(ts) for ts in per_model]

    def measure_network(self, space: SpaceGraph, arch: Architecture) -> Timing:
        """The whole child network of ``arch``, measured as one model."""
        return self.measure_models([self.network_bytes(space, arch)])[0]

    def measure_networks(self, space: SpaceGraph, archs: list[Architecture], progress: bool = True) -> list[Timing]:
        """Several networks: all converted first, then timed together in interleaved rounds."""
        from tqdm.auto import tqdm

        models = [self.network_bytes(space, a) for a in tqdm(archs, desc="building networks", unit="net",
                                                              disable=None if progress else True, leave=False)]
        return self.measure_models(models)

    def cache_key(self, space: SpaceGraph) -> str:
        from spnas._version import __version__

        key = {"device": self.name, "settings": {k: v for k, v in self.settings.items() if k != "cache"},
               "space": space.signature(), "classes": space.spec.num_classes, "versions": self.versions(),
               "spnas": __version__, "cpu": processor(), "timing": "worker-v3"}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]

    def cache_path(self, space: SpaceGraph) -> Path:
        return user_cache_dir() / "tables" / f"{self.name}-{space.name}-{self.cache_key(space)}.json"

    def latency_table(self, space: SpaceGraph, progress: bool = True) -> LatencyTable:
        """The cached table for these settings, space and runtime, or a newly measured one."""
        path = self.cache_path(space)
        if self.settings["cache"] and path.is_file():
            try:
                return LatencyTable.load(path)
            except LatencyTableError:
                pass  # a damaged cache file is measured again
        table = self.profile(space, progress=progress)
        if self.settings["cache"]:
            table.save(path)
        return table

    def profile(self, space: SpaceGraph, progress: bool = True) -> LatencyTable:
        """Measure every entry the space needs, and calibrate (see the module docstring)."""
        from tqdm.auto import tqdm

        todo = table_entries(space)
        calibration = calibration_archs(space, self.settings["calibrate"])
        bar = dict(unit="model", disable=None if progress else True, leave=False, dynamic_ncols=True)
        models = [self.empty_bytes()]
        for layer, op, _ in tqdm(todo, desc=f"profiling {space.name} on {self.name}", **bar):
            models.append(self.layer_bytes(space, layer, op))
        for arch in tqdm(calibration, desc="calibration networks", **bar):
            models.append(self.network_bytes(space, arch))
        timings = self.measure_models(models)
        overhead = timings[0].median
        entries: dict[str, dict[str, float]] = {}
        for (layer, _, choice), t in zip(todo, timings[1:]):
            entries.setdefault(layer.signature, {})[choice] = max(t.median - overhead, 0.0)
        table = LatencyTable(self.header(), entries, fixed_cost=None, origin=f"device {self.name}",
                             overhead=overhead)
        if not calibration:
            return table
        measured = [t.median for t in timings[1 + len(todo):]]
        fit = fit_scale(RuntimeModel(space, table), calibration, measured)
        header = replace(table.header, source=table.header.source + f"; {fit.describe()}")
        return replace(table, header=header, scale=fit.scale)

    def header(self) -> TableHeader:
        s = self.settings
        versions = self.versions()
        settings = ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("cache", "threads"))
        return TableHeader(
            device=self.name, units=self.units, runtime=self.runtime,
            runtime_version=", ".join(f"{k} {v}" for k, v in versions.items()), threads=s["threads"],
            host=f"{platform.node()} ({processor()})", date=time.strftime("%Y-%m-%d %H:%M:%S"),
            source=f"isolated layers timed on this machine in a clean process ({settings}); median of round "
                   f"medians, per-inference overhead subtracted and kept once")
