"""One single-path search, summarised in one JSON line: where the result and the raw read-out sit.

The probe behind docs/quality.md's "What was tried": it runs the search with any options and
prints the architecture, its place in the space's range (0 = cheapest, 1 = dearest), the raw
read-out against the target, the layers the projection changed, the supernet's validation
accuracy and the range position after every epoch. Nothing is trained from scratch.

    python bench/search_probe.py data=npz:runs/search-quality/data/fashion-mnist-train4000-test.npz \\
        epochs=4 tfrac=0.3 seed=1                 # target mode at 30 % of the flops range
    python bench/search_probe.py data=digits dev=tflite lambda_=0.001   # lambda mode, tflite table

``key=value`` pairs: ``data`` (default digits), ``dev`` (flops), ``space`` (spnas-cifar), ``seed``,
``tfrac`` (a target as a fraction of the range), ``threads`` (1), and any single-path option.
Appends the line to ``bench/results/search_probe.jsonl``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import warnings
from pathlib import Path


def main(argv: list[str]) -> None:
    warnings.filterwarnings("ignore")
    import torch

    from spnas.data.datasets import load_data
    from spnas.latency.device import resolve_table
    from spnas.space.graph import SpaceGraph
    from spnas.core.registry import get_registry
    from spnas.core.runs import RunDir
    from spnas.latency.runtime import RuntimeModel
    from spnas.searching.strategy import SearchContext

    kw = dict(a.split("=", 1) for a in argv)
    data_arg, dev, space_name = kw.pop("data", "digits"), kw.pop("dev", "flops"), kw.pop("space", "spnas-cifar")
    seed, tfrac = int(kw.pop("seed", 0)), kw.pop("tfrac", None)
    torch.set_num_threads(int(kw.pop("threads", 1)))
    opts = {}
    for k, v in kw.items():
        for conv in (int, float):
            try:
                v = conv(v)
                break
            except ValueError:
                pass
        opts[k] = {"True": True, "False": False}.get(v, v) if isinstance(v, str) else v
    space = SpaceGraph.load(space_name)
    data = load_data(data_arg, space.spec.resolution, space.spec.in_chs, seed=0)
    runtime = RuntimeModel(space, resolve_table(dev, space, None))
    lo, hi = runtime.bounds()
    if tfrac is not None:
        opts["target"] = lo + float(tfrac) * (hi - lo)
    strategy = get_registry().get("strategy", "single-path").from_options(opts)
    run = RunDir(tempfile.mkdtemp(prefix="spnas-probe-"))
    start = time.perf_counter()
    result = strategy.search(SearchContext(space, data, runtime, run, seed=seed, progress=False))
    run.close()
    frac = lambda v: (v - lo) / (hi - lo)  # noqa: E731
    out = {"data": data_arg, "device": dev, "space": space_name, "seed": seed, "options": opts,
           "arch": str(result.arch), "range_fraction": frac(result.latency), "supernet_val_accuracy": result.accuracy,
           "seconds": round(time.perf_counter() - start, 1)}
    if "readout_latency" in result.details:
        out.update(readout_over_target=result.details["readout_latency"] / opts["target"],
                   layers_changed_by_projection=result.details["layers_changed_by_projection"])
    epochs = [json.loads(line) for line in (run.path / "log.jsonl").read_text().splitlines() if '"epoch"' in line]
    out["range_fraction_per_epoch"] = [round(frac(e["R"]), 3) for e in epochs]
    line = json.dumps(out)
    print(line)
    with open(Path(__file__).parent / "results" / "search_probe.jsonl", "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
