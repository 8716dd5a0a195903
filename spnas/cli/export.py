"""``spnas export``: write the standalone child network of an architecture as ONNX or TFLite.

    spnas export 'k3e6 skip ... | ...' --checkpoint runs/x/supernet.pt --format onnx
    spnas export --checkpoint child.pt --format tflite --out child.tflite

See :mod:`spnas.exporting.exporter` for what the files hold (inputs: NCHW for ONNX, NHWC for TFLite).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from spnas.space import DEFAULT_SPACE


def add_export_parser(sub) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to an argparse subparsers object (``spnas.cli.main.build_parser``)."""
    from spnas.exporting.exporter import FORMATS, ONNX_OPSET

    p = sub.add_parser(
        "export", help="write a child network with its weights as ONNX or TFLite",
        description="Write the standalone child network of ARCH, with the weights of --checkpoint (a supernet.pt, "
                    "a single-path search checkpoint.pt, a run directory, or a child-network checkpoint) or a fresh "
                    "untrained initialization, as ONNX (input NCHW) or TFLite (input NHWC).")
    p.add_argument("arch", nargs="?", metavar="ARCH",
                   help="architecture string, e.g. 'k3e3 k5e6 | skip k3e6 ...' (not needed with a child-network "
                        "checkpoint, which holds its own, nor with a search's run directory: its result.yaml names it)")
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
    p.add_argument("--quantize", choices=["float32", "int8"], default="float32",
                   help="TFLite only: int8 is full-integer post-training quantization (int8 weights, activations, "
                        "input and output), calibrated on --calibration-images training images of --data; the "
                        "command then prints top-1 on the validation split before and after (default: %(default)s)")
    p.add_argument("--data", default="digits", help="int8: the data set to calibrate and check on (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.2, help="int8: the validation split checked (default: %(default)s)")
    p.add_argument("--calibration-images", type=int, default=128, metavar="N",
                   help="int8: training images that calibrate the activation ranges (default: %(default)s)")
    p.set_defaults(func=cmd_export)
    return p


def cmd_export(args: argparse.Namespace) -> int:
    from spnas.api import export

    outcome = export(args.arch, args.out, format=args.format, space=args.space, checkpoint=args.checkpoint,
                     num_classes=args.num_classes, opset=args.opset, dynamic_batch=args.dynamic_batch,
                     quantize=args.quantize, data=args.data, val_fraction=args.val_fraction,
                     calibration_images=args.calibration_images)
    dims = "x".join(str(d) for d in outcome.input_shape)
    if outcome.format == "onnx":
        what = f"ONNX opset {args.opset}"
        layout = "NCHW" + (", batch dynamic" if args.dynamic_batch else "")
        batch = "N" if args.dynamic_batch else "1"
    else:
        what = f"TFLite {outcome.quantize}"
        layout = "NHWC: transpose NCHW images with x.permute(0, 2, 3, 1)"
        batch = "1"
    path = outcome.path
    print(f"wrote {path} ({what}, {path.stat().st_size / 1024:.1f} KiB)")
    print(f"architecture: {outcome.arch}")
    print(f"space: {outcome.space}, {outcome.num_classes} classes")
    print(f"weights: {outcome.weights}")
    if (args.num_classes is not None and outcome.checkpoint_classes is not None
            and args.num_classes != outcome.checkpoint_classes):
        print(f"note: --num-classes {args.num_classes} ignored: the checkpoint has {outcome.checkpoint_classes} classes")
    print(f"params: {outcome.params} ({outcome.params / 1e6:.3f} M)")
    kind = "int8 (scale and zero point in the model's tensor details)" if outcome.quantize == "int8" else "float32"
    print(f"input: 'input' {kind} {dims} ({layout}); output: 'logits' {kind.split()[0]} {batch}x{outcome.num_classes}")
    if outcome.int8_top1 is not None:
        print(f"validation top-1 ({args.data}): float32 {outcome.float_top1:.4f}, int8 {outcome.int8_top1:.4f} "
              f"({100 * (outcome.int8_top1 - outcome.float_top1):+.2f} points from quantizing)")
    elif outcome.note:
        print(f"note: {outcome.note}")
    return 0
