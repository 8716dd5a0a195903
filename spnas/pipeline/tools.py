"""Export and profiling: the pipelines under ``spnas export`` / :func:`spnas.export` and
``spnas profile`` / :func:`spnas.profile`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from spnas.core.errors import SpnasError
from spnas.latency.table import LatencyTable
from spnas.pipeline.search import SearchOutcome, load_space
from spnas.pipeline.train import TrainOutcome
from spnas.space import DEFAULT_SPACE
from spnas.space.arch import Architecture
from spnas.space.graph import SpaceGraph


def default_out(space_name: str, arch: Any, fmt: str) -> Path:
    """``<space>-<8 hex digits of the architecture string>.<fmt>`` in the current directory."""
    digest = hashlib.sha256(str(arch).encode()).hexdigest()[:8]
    return Path(f"{space_name}-{digest}.{fmt}")


def _arch_of_run(path: Path) -> str | None:
    """The architecture in ``result.yaml`` of a search's run directory (None for anything else: a
    child checkpoint holds its own, a supernet needs one named)."""
    from spnas.core.runs import read_yaml

    result = path / "result.yaml" if path.is_dir() else None
    if result is None or not result.is_file() or (path / "model.pt").is_file():
        return None
    try:
        data = read_yaml(result)
    except SpnasError:
        return None
    return data.get("arch") if isinstance(data, dict) and isinstance(data.get("arch"), str) else None


@dataclass(frozen=True)
class ExportOutcome:
    """An exported network: the file, what it holds and how to feed it."""

    path: Path
    format: str
    arch: str
    space: str
    num_classes: int
    params: int
    input_shape: tuple[int | str, ...]  # NCHW for ONNX ("N" for a dynamic batch), NHWC for TFLite
    weights: str  # where the weights came from, one line
    checkpoint_classes: int | None = None  # the class count of the checkpoint (None without one)


def run_export(model: Any = None, out: str | Path | None = None, *, format: str = "onnx", arch: Any = None,
               space: SpaceGraph | str | Path | None = None, checkpoint: str | Path | None = None,
               num_classes: int | None = None, opset: int | None = None, dynamic_batch: bool = False) -> ExportOutcome:
    """Write a network as ONNX or TFLite; see :func:`spnas.export`."""
    from spnas.exporting.exporter import FORMATS, ONNX_OPSET, export_child, input_shape
    from spnas.supernet.builder import ChildNet
    from spnas.supernet.loading import read_child

    if format not in FORMATS:
        raise SpnasError(f"--format {format!r} is not known; allowed: {', '.join(FORMATS)}")
    if format != "onnx" and dynamic_batch:
        raise SpnasError("--dynamic-batch: the TFLite model has batch 1; use it with --format onnx")
    if isinstance(model, SearchOutcome):
        child, source, classes = model.child(), f"search {model.run_dir} (inherited weights)", None
    elif isinstance(model, TrainOutcome):
        child, source, classes = model.model(), f"training {model.run_dir}", None
    elif isinstance(model, ChildNet):
        child, source, classes = model, "the given network", None
    elif model is None or isinstance(model, (str, Path, Architecture)):
        if model is not None:  # an architecture given first: export(arch, checkpoint=...)
            if arch is not None:
                raise SpnasError("architecture given twice (as model and as arch); give one")
            arch = model
        if isinstance(arch, Architecture):
            arch = str(arch)
        if arch is None and checkpoint is not None:  # a search's run directory names its architecture
            arch = _arch_of_run(Path(checkpoint))
        where = space if space is not None else (None if checkpoint is not None else DEFAULT_SPACE)
        graph = load_space(where) if where is not None else None
        loaded = read_child(graph, arch, checkpoint, num_classes)
        child, source, classes = loaded.child, loaded.source, loaded.checkpoint_classes
    elif isinstance(model, nn.Module):
        raise SpnasError(f"model: a {type(model).__name__}, not a spnas ChildNet; only spnas networks export here")
    else:
        raise SpnasError(f"model: {type(model).__name__} is not a network, an outcome or an architecture")
    opset = ONNX_OPSET if opset is None else opset
    path = Path(out) if out is not None else default_out(child.space.name, child.arch, format)
    options = {"opset": opset, "dynamic_batch": dynamic_batch} if format == "onnx" else {}
    path = export_child(child, path, format, **options)
    shape: tuple[int | str, ...] = input_shape(child, format)
    if format == "onnx" and dynamic_batch:
        shape = ("N", *shape[1:])
    return ExportOutcome(path, format, str(child.arch), child.space.name, child.space.spec.num_classes,
                         sum(p.numel() for p in child.parameters()), shape, source, classes)


@dataclass(frozen=True)
class ProfileOutcome:
    """A device's latency table for a space; ``cached`` is where a measured one is kept, ``written``
    the copy asked for with ``out``."""

    table: LatencyTable
    space: str
    cached: Path | None = None
    written: Path | None = None

    @property
    def entries(self) -> int:
        return sum(len(row) for row in self.table.entries.values())


def run_profile(space: SpaceGraph | str | Path, device: str = "tflite", out: str | Path | None = None, *,
                progress: bool = False, device_options: Mapping[str, Any] | None = None) -> ProfileOutcome:
    """Measure (or compute) ``device``'s latency table for ``space``; see :func:`spnas.profile`."""
    from spnas.latency.device import make_device
    from spnas.latency.profiling import MeasuredDevice

    graph = load_space(space)
    dev = make_device(device, **dict(device_options or {}))
    cached = None
    if isinstance(dev, MeasuredDevice):
        table = dev.latency_table(graph, progress=progress)
        cached = dev.cache_path(graph)
    else:
        table = dev.latency_table(graph)
    table.check_covers(graph)
    written = table.save(out) if out is not None else None
    return ProfileOutcome(table, graph.name, cached, Path(written) if written is not None else None)
