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
  runtime (:mod:`spnas.timing_worker`; timing in this process, which holds TensorFlow, PyTorch and
  every converted model, gave bimodal results). Warm-up runs, then runs until both ``runs`` and
  ``min_time`` are reached; the entry is the median. Entries are measured in ``rounds``
  interleaved passes over all layers, and the median of a layer's round medians is kept, so that
  a slow spell of the machine does not bias the layers measured during it. With one thread the
  worker is pinned to one core;
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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

from spnas.arch import Architecture, Op
from spnas.device import Device
from spnas.errors import SpnasError
from spnas.graph import LayerNode, SpaceGraph
from spnas.latency import LatencyTable, LatencyTableError, TableHeader



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


from spnas.timing_worker import Timing, pinned, time_runner  # noqa: E402,F401 (re-exported)


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

    Subclasses set :attr:`worker_runtime` (what :func:`spnas.timing_worker.make_runner` runs) and
    implement :meth:`layer_bytes`, :meth:`network_bytes`, :meth:`empty_bytes` and :meth:`versions`.
    """

    units: ClassVar[str] = "ms"
    runtime: ClassVar[str] = ""
    worker_runtime: ClassVar[str] = ""
    option_names: ClassVar[tuple[str, ...]] = ("threads", "runs", "warmup", "min_time", "rounds", "cache")
    defaults: ClassVar[dict[str, Any]] = {"threads": 1, "runs": 30, "warmup": 10, "min_time": 0.05, "rounds": 3,
                                          "cache": True}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.settings = {**self.defaults, **options}
        checks = {"threads": lambda v: isinstance(v, int) and v >= 1, "runs": lambda v: isinstance(v, int) and v >= 1,
                  "warmup": lambda v: isinstance(v, int) and v >= 0, "rounds": lambda v: isinstance(v, int) and v >= 1,
                  "min_time": lambda v: isinstance(v, (int, float)) and v >= 0,
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
        """Time ``models`` in a clean worker process (see :mod:`spnas.timing_worker`)."""
        import subprocess
        import sys
        import tempfile

        from spnas import timing_worker

        with tempfile.TemporaryDirectory(prefix="spnas-timing-") as tmp:
            paths = []
            for i, content in enumerate(models):
                path = Path(tmp) / f"m{i}.bin"
                path.write_bytes(content)
                paths.append(str(path))
            job, out = Path(tmp) / "job.json", Path(tmp) / "result.json"
            settings = {k: v for k, v in self.settings.items() if k != "cache"}
            job.write_text(json.dumps({"runtime": self.worker_runtime, "models": paths, "settings": settings}))
            proc = subprocess.run([sys.executable, timing_worker.__file__, str(job), str(out)],
                                  capture_output=True, text=True)
            if proc.returncode != 0 or not out.is_file():
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise SpnasError(f"device {self.name}: the timing process failed ({last[:200]})")
            return [Timing(**t) for t in json.loads(out.read_text())]

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
        from spnas import __version__

        key = {"device": self.name, "settings": {k: v for k, v in self.settings.items() if k != "cache"},
               "space": space.signature(), "classes": space.spec.num_classes, "versions": self.versions(),
               "spnas": __version__, "cpu": processor(), "timing": "worker-v1"}
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
        models = [self.empty_bytes()]
        for layer, op, _ in tqdm(todo, desc=f"profiling {space.name} on {self.name}", unit="model",
                                 disable=None if progress else True, leave=False, dynamic_ncols=True):
            models.append(self.layer_bytes(space, layer, op))
        timings = self.measure_models(models)
        overhead = timings[0].median
        entries: dict[str, dict[str, float]] = {}
        for (layer, _, choice), t in zip(todo, timings[1:]):
            entries.setdefault(layer.signature, {})[choice] = max(t.median - overhead, 0.0)
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
            source=f"isolated layers timed on this machine in a clean process ({settings}); median of round "
                   f"medians, per-inference overhead subtracted and kept once")
