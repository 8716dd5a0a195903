"""``spnas profile`` and ``spnas latency``: measured tables, predictions, measurements, validation.

Thin wrappers over :mod:`spnas.latency.profiling`, :mod:`spnas.latency.device` and :mod:`spnas.latency.validate`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from spnas.core.errors import SpnasError


def parse_device_options(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs, values read as YAML scalars (``threads=2``, ``xnnpack=false``)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpnasError(f"--device-option {item!r}: use KEY=VALUE, e.g. threads=2")
        try:
            out[key] = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def device_args(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--device", default=default, required=default is None,
                   help="latency device: tflite, onnxruntime, android, flops, pixel1, ... (see 'spnas plugins')"
                        + (" (default: %(default)s)" if default else ""))
    p.add_argument("--device-table", metavar="FILE",
                   help="use this latency table file (spnas format, e.g. from 'spnas profile'; for pixel1 also "
                        "the authors' JSON) instead of the device's own")
    p.add_argument("--device-option", action="append", metavar="KEY=VALUE",
                   help="a device option, repeatable: threads=1, xnnpack=false, runs=30, rounds=1, processes=3, "
                        "calibrate=3, cache=false")


def make_device(name: str, options: dict[str, Any]):
    from spnas.core.registry import get_registry

    return get_registry().get("device", name)(**options)


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


def table_from_args(args: argparse.Namespace, space):
    """The latency table that ``--device``, ``--device-table`` and ``--device-option`` name."""
    from spnas.latency.device import resolve_table

    return resolve_table(args.device, space, args.device_table, **parse_device_options(args.device_option))


def cmd_profile(args: argparse.Namespace) -> int:
    from spnas.space.graph import SpaceGraph
    from spnas.latency.profiling import MeasuredDevice

    space = SpaceGraph.load(args.space)
    device = make_device(args.device, parse_device_options(args.device_option))
    if isinstance(device, MeasuredDevice):
        table = device.latency_table(space, progress=not args.quiet)
        print(f"cached: {device.cache_path(space)}")
    else:
        table = device.latency_table(space)
    table.check_covers(space)
    n = sum(len(row) for row in table.entries.values())
    print(f"{args.device} table for {space.name}: {n} entries ({table.units}), overhead {table.overhead:.4g}")
    print(f"runtime: {table.header.runtime} {table.header.runtime_version}; threads {table.header.threads}")
    if args.out:
        print(f"wrote {table.save(args.out)}")
    return 0


def cmd_latency(args: argparse.Namespace) -> int:
    from spnas.space.graph import SpaceGraph
    from spnas.latency.runtime import RuntimeModel

    space = SpaceGraph.load(args.space)
    options = parse_device_options(args.device_option)
    runtime = RuntimeModel(space, table_from_args(args, space))
    if args.arch == "validate":
        return _validate(args, space, runtime, options)
    arch = space.parse(args.arch)
    print(f"architecture: {arch}")
    print(f"predicted latency: {runtime.predict(arch):.4f} {runtime.units} ({args.device})")
    if args.measure:
        device = make_device(args.device, options)
        if not hasattr(device, "measure_network"):
            raise SpnasError(f"device {args.device} cannot measure a network; leave out --measure")
        t = device.measure_network(space, arch)
        print(f"measured latency: {t.median:.4f} {runtime.units} (median of {t.runs} runs, std {t.std:.3g})")
    return 0


def _validate(args, space, runtime, options) -> int:
    from spnas.latency.validate import scatter_plot, summary_lines, validate

    device = make_device(args.device, options)
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
