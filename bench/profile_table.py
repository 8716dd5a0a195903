"""Profiling cost: the full latency table of a space measured on this machine, timed.

The issue's bar: spnas-imagenet's table (every candidate op of every layer at 224x224, the fixed
layers included) profiled with TFLite in <= 60 s. Writes ``bench/results/profile_<device>_<space>.json``
and prints a Markdown row for docs/performance.md.

    python bench/profile_table.py [--space spnas-imagenet] [--device tflite]
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
    args = ap.parse_args()
    os.environ["SPNAS_CACHE_DIR"] = tempfile.mkdtemp(prefix="spnas-bench-")  # never a cached table
    start = time.perf_counter()
    from spnas.graph import SpaceGraph
    from spnas.profiling import table_entries
    from spnas.registry import get_registry

    space = SpaceGraph.load(args.space)
    device = get_registry().get("device", args.device)(cache=False)
    imported = time.perf_counter()
    table = device.latency_table(space, progress=False)
    done = time.perf_counter()
    result = {
        "space": space.name, "device": args.device, "entries": len(table_entries(space)),
        "searchable_layers": space.num_searchable, "seconds_total": round(done - start, 2),
        "seconds_profiling": round(done - imported, 2), "overhead_ms": table.overhead,
        "settings": device.settings, "header": table.to_dict()["header"],
    }
    out = Path(__file__).parent / "results" / f"profile_{args.device}_{space.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| {space.name} | {args.device} | {result['entries']} | {result['seconds_profiling']} s | "
          f"{result['seconds_total']} s |")


if __name__ == "__main__":
    main()
