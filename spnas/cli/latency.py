"""``spnas profile`` and ``spnas latency``: measured tables, predictions, measurements, validation.

Thin wrappers over :func:`spnas.profile`, :mod:`spnas.latency.device` and :mod:`spnas.latency.validate`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from spnas.cli.common import device_args, parse_device_options
from spnas.core.errors import SpnasError


def add_latency_parsers(sub, space_arg) -> None:
    p = sub.add_parser("profile", help="measure a device's latency table for a space and write it",
                       description="Time every candidate op of every layer of a space on a device (isolated "
                                   "layers, as the paper's Eq. 10) and write a self-describing table.")
    space_arg(p)
    device_args(p, "tflite")
    p.add_argument("--out", type=Path, help="write the table here too (it is always cached)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("latency", help="predicted (and measured) latency of an architecture; "
                                       "'latency validate' checks the table against measured networks",
                       description="'spnas latency ARCH' predicts ARCH's latency from the device's table "
                                   "(--measure also measures the whole network). 'spnas latency validate' "
                                   "samples random networks and compares predicted with measured latency "
                                   "(the paper's Fig. 7).")
    p.add_argument("arch", metavar="ARCH|validate", help="an architecture string, or 'validate'")
    space_arg(p)
    device_args(p, "tflite")
    p.add_argument("--measure", action="store_true", help="also measure the whole network on the device")
    p.add_argument("--samples", type=int, default=100, help="validate: random networks (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="validate: sampling seed")
    p.add_argument("--plot", type=Path, help="validate: write the scatter plot (PNG) here")
    p.add_argument("--json", type=Path, help="validate: write every network's numbers here")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_latency)


def cmd_profile(args: argparse.Namespace) -> int:
    from spnas.api import profile

    outcome = profile(args.space, args.device, args.out, progress=not args.quiet,
                      **parse_device_options(args.device_option))
    table = outcome.table
    if outcome.cached is not None:
        print(f"cached: {outcome.cached}")
    print(f"{args.device} table for {outcome.space}: {outcome.entries} entries ({table.units}), "
          f"overhead {table.overhead:.4g}")
    print(f"runtime: {table.header.runtime} {table.header.runtime_version}; threads {table.header.threads}")
    if outcome.written is not None:
        print(f"wrote {outcome.written}")
    return 0


def cmd_latency(args: argparse.Namespace) -> int:
    from spnas.latency.device import make_device
    from spnas.pipeline.search import load_space, resolve_runtime

    space = load_space(args.space)
    options = parse_device_options(args.device_option)
    runtime = resolve_runtime(space, args.device, args.device_table, options)
    if args.arch == "validate":
        return _validate(args, space, runtime, options)
    arch = space.parse(args.arch)
    print(f"architecture: {arch}")
    print(f"predicted latency: {runtime.predict(arch):.4f} {runtime.units} ({args.device})")
    if args.measure:
        device = make_device(args.device, **options)
        if not hasattr(device, "measure_network"):
            raise SpnasError(f"device {args.device} cannot measure a network; leave out --measure")
        t = device.measure_network(space, arch)
        print(f"measured latency: {t.median:.4f} {runtime.units} (median of {t.runs} runs, std {t.std:.3g})")
    return 0


def _validate(args, space, runtime, options) -> int:
    from spnas.latency.device import make_device
    from spnas.latency.validate import scatter_plot, summary_lines, validate

    device = make_device(args.device, **options)
    if not hasattr(device, "measure_network"):
        raise SpnasError(f"device {args.device} cannot measure networks, so it cannot be validated here")
    result = validate(space, runtime, device, args.samples, seed=args.seed, progress=not args.quiet,
                      device_name=args.device)
    for line in summary_lines(result, ["  (paper, Pixel 1: 1.76 % mean absolute error, RMSE 1.32 ms, 100 networks)"]):
        print(line)
    if args.plot:
        print(f"plot: {scatter_plot(result, args.plot)}")
    if args.json:
        from spnas.core.runs import atomic_write_text

        atomic_write_text(args.json, json.dumps(result.to_dict(), indent=1) + "\n")
        print(f"numbers: {args.json}")
    return 0
