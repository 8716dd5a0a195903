"""Profiling cost: the full latency table of a space measured on this machine, timed.

The issue's bar: spnas-imagenet's table (every candidate op of every layer at 224x224, the fixed
layers included) profiled with TFLite in <= 60 s. Writes ``bench/results/profile_<device>_<space>.json``
and prints a Markdown row for docs/performance.md.

    python bench/profile_table.py [--space spnas-imagenet] [--device tflite] [--option calibrate=0]

The default settings include calibration (3 whole networks converted and timed with the layers);
``--option calibrate=0`` measures the layer table alone. The result file's name carries the options.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="spnas-imagenet")
    ap.add_argument("--device", default="tflite")
    ap.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="a device option (int values)")
    args = ap.parse_args()
    options = {k: int(v) for k, _, v in (o.partition("=") for o in args.option)}
    os.environ["SPNAS_CACHE_DIR"] = tempfile.mkdtemp(prefix="spnas-bench-")  # never a cached table
    start = time.perf_counter()
    from spnas.space.graph import SpaceGraph
    from spnas.latency.profiling import table_entries
    from spnas.core.registry import get_registry

    space = SpaceGraph.load(args.space)
    device = get_registry().get("device", args.device)(cache=False, **options)
    imported = time.perf_counter()
    table = device.latency_table(space, progress=False)
    done = time.perf_counter()
    result = {
        "space": space.name, "device": args.device, "entries": len(table_entries(space)),
        "searchable_layers": space.num_searchable, "seconds_total": round(done - start, 2),
        "seconds_profiling": round(done - imported, 2), "overhead_ms": table.overhead, "scale": table.scale,
        "settings": device.settings, "header": table.to_dict()["header"],
    }
    suffix = "".join(f"_{k}{v}" for k, v in sorted(options.items()))
    out = Path(__file__).parent / "results" / f"profile_{args.device}_{space.name}{suffix}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    settings = ", ".join(f"{k}={v}" for k, v in device.settings.items() if k in ("processes", "calibrate"))
    print(f"| {space.name} | {args.device} | {settings} | {result['entries']} | {result['seconds_profiling']} s | "
          f"{result['seconds_total']} s |")


if __name__ == "__main__":
    main()
