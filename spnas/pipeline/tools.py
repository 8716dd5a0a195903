"""Export and profiling: the pipelines under ``spnas export`` / :func:`spnas.export` and
``spnas profile`` / :func:`spnas.profile`."""

from __future__ import annotations

import dataclasses
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
    quantize: str = "float32"
    #: int8: validation top-1 of the network before (PyTorch, float32) and after quantization (the
    #: TFLite file), on the data it was calibrated with; None when not measured
    float_top1: float | None = None
    int8_top1: float | None = None
    #: why the accuracies were not measured (e.g. the data has another class count)
    note: str | None = None


def run_export(model: Any = None, out: str | Path | None = None, *, format: str = "onnx", arch: Any = None,
               space: SpaceGraph | str | Path | None = None, checkpoint: str | Path | None = None,
               num_classes: int | None = None, opset: int | None = None, dynamic_batch: bool = False,
               quantize: str | None = None, data: Any = "digits", val_fraction: float = 0.2,
               calibration_images: int = 128, measure_accuracy: bool = True) -> ExportOutcome:
    """Write a network as ONNX or TFLite; see :func:`spnas.export`."""
    from spnas.exporting.exporter import FORMATS, ONNX_OPSET, check_quantize, export_child, input_shape
    from spnas.supernet.builder import ChildNet
    from spnas.supernet.loading import read_child

    if format not in FORMATS:
        raise SpnasError(f"--format {format!r} is not known; allowed: {', '.join(FORMATS)}")
    quantize = check_quantize(quantize)
    if quantize != "float32" and format != "tflite":
        raise SpnasError(f"--quantize {quantize}: only TFLite models are quantized; use --format tflite")
    if isinstance(calibration_images, bool) or not isinstance(calibration_images, int) or calibration_images < 1:
        raise SpnasError(f"--calibration-images {calibration_images!r} is not allowed; use an integer >= 1")
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
    options: dict[str, Any] = {"opset": opset, "dynamic_batch": dynamic_batch} if format == "onnx" else {}
    split = None
    if quantize == "int8":  # calibrated on the data's training images, checked on its validation split
        from spnas.exporting.exporter import representative_images
        from spnas.pipeline.search import prepare_data

        _, split = prepare_data(child.space, data, val_fraction)
        options.update(quantize=quantize, representative=representative_images(split, calibration_images))
    path = export_child(child, path, format, **options)
    shape: tuple[int | str, ...] = input_shape(child, format)
    if format == "onnx" and dynamic_batch:
        shape = ("N", *shape[1:])
    outcome = ExportOutcome(path, format, str(child.arch), child.space.name, child.space.spec.num_classes,
                            sum(p.numel() for p in child.parameters()), shape, source, classes, quantize)
    if split is not None and measure_accuracy:
        if split.num_classes != child.space.spec.num_classes:
            return dataclasses.replace(outcome, note=f"accuracy not measured: the network has "
                                       f"{child.space.spec.num_classes} outputs, data {split.name} "
                                       f"{split.num_classes} classes")
        from spnas.exporting.exporter import evaluate_tflite
        from spnas.training.train import evaluate_child

        return dataclasses.replace(outcome, float_top1=evaluate_child(child, split)["val_top1"],
                                   int8_top1=evaluate_tflite(path.read_bytes(), split)["val_top1"])
    return outcome


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
