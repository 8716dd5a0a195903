"""Measured latency tables: time every candidate op of every layer in isolation (Eq. 10).

Single-Path NAS profiles each candidate op of each layer on the target device, alone, with that
layer's input shape, and sums per-layer costs into a network's runtime (Sec. 3.2, Eq. 10; their
model was off by 1.76 % on average over 100 networks, Fig. 7). :class:`MeasuredDevice` does the
same for any runtime that can run a model on this machine: a subclass says how to build a
runnable model of one layer (``layer_runner``) and of a whole network (``network_runner``); this
module owns the rest, the same way for every runtime:

* **what is measured**: one entry per (layer signature, choice) that the space needs, the fixed
  layers (stem, fixed MBConvs, head, pooling and classifier) included;
* **how**: warm-up runs, then runs until both ``runs`` and ``min_time`` are reached; the entry is
  the median. Entries are measured in ``rounds`` interleaved passes over all layers, and the
  median of a layer's round medians is kept, so that a slow spell of the machine does not bias
  the layers measured during it. With one thread the process is pinned to one core while it
  measures;
* **overhead**: every isolated measurement contains the runtime's per-inference overhead, which a
  network pays once. It is measured on a trivial model, subtracted from each entry and kept once
  in the table's ``overhead``;
* **cache**: a measured table is kept in the user's cache directory, keyed by the device's
  settings, the space's signature, the runtime versions and the processor, and is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

from spnas.arch import Architecture, Op
from spnas.device import Device
from spnas.errors import SpnasError
from spnas.graph import LayerNode, SpaceGraph
from spnas.latency import LatencyTable, LatencyTableError, TableHeader

Runner = Callable[[], Any]


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


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of repeated runs of one model, in milliseconds."""

    median: float
    mean: float
    std: float
    min: float
    runs: int


def time_runner(run: Runner, *, warmup: int = 10, runs: int = 30, min_time: float = 0.05,
                max_runs: int = 100_000, between: Runner | None = None) -> Timing:
    """Warm up, then run until ``runs`` runs and ``min_time`` seconds (of timed runs) are both
    reached; ``between`` runs untimed before each timed run (e.g. to evict the caches)."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    clock = time.perf_counter
    total = 0.0
    while len(times) < max_runs and (len(times) < runs or total < min_time):
        if between is not None:
            between()
        t = clock()
        run()
        dt = clock() - t
        total += dt
        times.append(dt * 1e3)
    return Timing(statistics.median(times), statistics.fmean(times),
                  statistics.pstdev(times), min(times), len(times))


@contextlib.contextmanager
def pinned(threads: int) -> Iterator[None]:
    """Pin the process to one core while a single-threaded runtime is timed (less jitter)."""
    if threads != 1 or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


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


class MeasuredDevice(Device):
    """A device whose table is measured on this machine by timing isolated layers.

    Subclasses implement :meth:`layer_runner`, :meth:`network_runner`, :meth:`empty_runner` and
    :meth:`versions`.
    """

    units: ClassVar[str] = "ms"
    runtime: ClassVar[str] = ""
    option_names: ClassVar[tuple[str, ...]] = ("threads", "runs", "warmup", "min_time", "rounds", "cache",
                                               "flush_mb")
    defaults: ClassVar[dict[str, Any]] = {"threads": 1, "runs": 30, "warmup": 10, "min_time": 0.05, "rounds": 3,
                                          "cache": True, "flush_mb": 0}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.settings = {**self.defaults, **options}
        checks = {"threads": lambda v: isinstance(v, int) and v >= 1, "runs": lambda v: isinstance(v, int) and v >= 1,
                  "warmup": lambda v: isinstance(v, int) and v >= 0, "rounds": lambda v: isinstance(v, int) and v >= 1,
                  "min_time": lambda v: isinstance(v, (int, float)) and v >= 0}
        for key, ok in checks.items():
            if not ok(self.settings[key]):
                raise SpnasError(f"device {self.name}: option {key}={self.settings[key]!r} is not allowed")

    # --- what a runtime provides ----------------------------------------------------------------
    def layer_runner(self, space: SpaceGraph, layer: LayerNode, op: Op | None) -> Runner:  # pragma: no cover
        raise NotImplementedError

    def network_runner(self, space: SpaceGraph, arch: Architecture) -> Runner:  # pragma: no cover
        raise NotImplementedError

    def empty_runner(self) -> Runner:  # pragma: no cover
        """A trivial model: what one inference costs whatever the model."""
        raise NotImplementedError

    def versions(self) -> dict[str, str]:  # pragma: no cover
        raise NotImplementedError

    # --- measuring ------------------------------------------------------------------------------
    def time(self, run: Runner) -> Timing:
        s = self.settings
        between = None
        if s["flush_mb"]:
            import numpy as np

            junk = np.ones(int(s["flush_mb"] * 2**20) // 8)
            between = lambda: junk.sum()  # noqa: E731 - read a buffer larger than the caches
        with pinned(s["threads"]):
            return time_runner(run, warmup=s["warmup"], runs=s["runs"], min_time=s["min_time"], between=between)

    def measure_network(self, space: SpaceGraph, arch: Architecture) -> Timing:
        """The whole child network of ``arch``, measured as one model: the round whose median is
        the median of ``rounds`` rounds (a slow spell of the machine spoils one round, not all)."""
        run = self.network_runner(space, arch)
        timings = sorted((self.time(run) for _ in range(self.settings["rounds"])), key=lambda t: t.median)
        return timings[len(timings) // 2]

    def cache_key(self, space: SpaceGraph) -> str:
        from spnas import __version__

        key = {"device": self.name, "settings": {k: v for k, v in self.settings.items() if k != "cache"},
               "space": space.signature(), "classes": space.spec.num_classes, "versions": self.versions(),
               "spnas": __version__, "cpu": processor()}
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
        """Measure every entry the space needs (see the module docstring)."""
        from tqdm.auto import tqdm

        todo = table_entries(space)
        bar = tqdm(total=len(todo) * (self.settings["rounds"] + 1), desc=f"profiling {space.name} on {self.name}",
                   unit="model", disable=None if progress else True, leave=False, dynamic_ncols=True)
        runners = []
        for layer, op, _ in todo:
            runners.append(self.layer_runner(space, layer, op))
            bar.update(1)
        empty = self.empty_runner()
        medians: list[list[float]] = [[] for _ in todo]
        overheads = []
        for _ in range(self.settings["rounds"]):
            overheads.append(self.time(empty).median)
            for i, run in enumerate(runners):
                medians[i].append(self.time(run).median)
                bar.update(1)
        bar.close()
        overhead = statistics.median(overheads)
        entries: dict[str, dict[str, float]] = {}
        for (layer, _, choice), m in zip(todo, medians):
            entries.setdefault(layer.signature, {})[choice] = max(statistics.median(m) - overhead, 0.0)
        return LatencyTable(self.header(), entries, fixed_cost=None, origin=f"device {self.name}",
                            overhead=overhead)

    def header(self) -> TableHeader:
        s = self.settings
        versions = self.versions()
        settings = ", ".join(f"{k}={v}" for k, v in s.items() if k not in ("cache", "threads"))
        return TableHeader(
            device=self.name, units=self.units, runtime=self.runtime,
            runtime_version=", ".join(f"{k} {v}" for k, v in versions.items()), threads=s["threads"],
            host=f"{platform.node()} ({processor()})", date=time.strftime("%Y-%m-%d %H:%M:%S"),
            source=f"isolated layers timed on this machine ({settings}); median of round medians, "
                   f"per-inference overhead subtracted and kept once")
