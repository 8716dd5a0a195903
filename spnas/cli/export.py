"""``spnas export``: write the standalone child network of an architecture as ONNX or TFLite.

    spnas export 'k3e6 skip ... | ...' --checkpoint runs/x/supernet.pt --format onnx
    spnas export --checkpoint child.pt --format tflite --out child.tflite

See :mod:`spnas.export.exporter` for what the files hold (inputs: NCHW for ONNX, NHWC for TFLite).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

from spnas.core.errors import SpnasError

DEFAULT_SPACE = "spnas-cifar"


def add_export_parser(sub) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to an argparse subparsers object (``spnas.cli.main.build_parser``)."""
    from spnas.export.exporter import FORMATS, ONNX_OPSET

    p = sub.add_parser(
        "export", help="write a child network with its weights as ONNX or TFLite",
        description="Write the standalone child network of ARCH, with the weights of --checkpoint (a supernet.pt, "
                    "a single-path search checkpoint.pt, a run directory, or a child-network checkpoint) or a fresh "
                    "untrained initialization, as ONNX (input NCHW) or TFLite (input NHWC).")
    p.add_argument("arch", nargs="?", metavar="ARCH",
                   help="architecture string, e.g. 'k3e3 k5e6 | skip k3e6 ...' (not needed with a child-network "
                        "checkpoint, which holds its own)")
    p.add_argument("--space", default=None,
                   help=f"registered search space name or path to a YAML file (default: the checkpoint's space, "
                        f"else {DEFAULT_SPACE})")
    p.add_argument("--checkpoint", type=Path, metavar="PATH",
                   help="weights: supernet.pt, a run's checkpoint.pt, a run directory, or a child checkpoint "
                        "(default: fresh initialization)")
    p.add_argument("--format", required=True, choices=FORMATS, dest="format")
    p.add_argument("--out", type=Path, metavar="PATH",
                   help="output file (default: <space>-<arch hash>.onnx or .tflite in the current directory)")
    p.add_argument("--num-classes", type=int, metavar="N",
                   help="classifier outputs without a checkpoint (default: the space's; a checkpoint's own count "
                        "always wins, e.g. 10 for a supernet trained on digits)")
    p.add_argument("--opset", type=int, default=ONNX_OPSET, metavar="N", help="ONNX opset (default: %(default)s)")
    p.add_argument("--dynamic-batch", action="store_true", help="ONNX only: a symbolic batch dimension")
    p.set_defaults(func=cmd_export)
    return p


def default_out(space_name: str, arch, fmt: str) -> Path:
    """``<space>-<8 hex digits of the architecture string>.<fmt>`` in the current directory."""
    digest = hashlib.sha256(str(arch).encode()).hexdigest()[:8]
    return Path(f"{space_name}-{digest}.{fmt}")


def cmd_export(args: argparse.Namespace) -> int:
    from spnas.export.exporter import export_child, input_shape, read_child

    if args.format != "onnx" and args.dynamic_batch:
        raise SpnasError("--dynamic-batch: the TFLite model has batch 1; use it with --format onnx")
    space = args.space or (None if args.checkpoint is not None else DEFAULT_SPACE)
    loaded = read_child(space, args.arch, args.checkpoint, args.num_classes)
    child = loaded.child
    out = args.out or default_out(child.space.name, child.arch, args.format)
    options = {"opset": args.opset, "dynamic_batch": args.dynamic_batch} if args.format == "onnx" else {}
    path = export_child(child, out, args.format, **options)

    spec = child.space.spec
    params = sum(p.numel() for p in child.parameters())
    dims = [str(d) for d in input_shape(child, args.format)]
    if args.format == "onnx":
        what = f"ONNX opset {args.opset}"
        layout = "NCHW" + (", batch dynamic" if args.dynamic_batch else "")
        batch = "N" if args.dynamic_batch else "1"
        dims[0] = batch
    else:
        what = "TFLite float32"
        layout = "NHWC: transpose NCHW images with x.permute(0, 2, 3, 1)"
        batch = "1"
    print(f"wrote {path} ({what}, {path.stat().st_size / 1024:.1f} KiB)")
    print(f"architecture: {child.arch}")
    print(f"space: {child.space.name}, {spec.num_classes} classes")
    print(f"weights: {loaded.source}")
    if (args.num_classes is not None and loaded.checkpoint_classes is not None
            and args.num_classes != loaded.checkpoint_classes):
        print(f"note: --num-classes {args.num_classes} ignored: the checkpoint has {loaded.checkpoint_classes} classes")
    print(f"params: {params} ({params / 1e6:.3f} M)")
    print(f"input: 'input' float32 {'x'.join(dims)} ({layout}); output: 'logits' float32 {batch}x{spec.num_classes}")
    return 0
