"""Search quality: does single-path find better networks than random sampling at the same latency?

The protocol of docs/quality.md, on Fashion-MNIST (real 28x28 grey images of 10 kinds of clothing;
``apt-get install dataset-fashion-mnist`` puts its IDX files in /usr/share/datasets/fashion-mnist):

* the space ``spnas-cifar`` (20 searchable layers, 32x32 inputs: images are resized, grey repeated);
* a subset of the *training* part (``--subset`` images, class-balanced by a seeded permutation),
  split into train and validation by spnas's own split (``--val-fraction``). Every number used to
  judge or tune is validation top-1; the t10k files are read only with ``--report-test``, and then
  only reported (``test_top1``), never used to choose anything;
* for each device (``flops``: MACs; ``tflite``: a table measured on this machine once, and shared)
  and each target (fractions of the space's range on that device), ``spnas compare`` over several
  seeds: single-path, random search, evolution and rl on one shared uniform supernet per seed,
  and the ``random-arch`` arm (architectures drawn uniformly inside the same window, trained from
  scratch: no search at all). Every found network is trained from scratch with one recipe;
* the shared supernet does not depend on the target, so it is trained once per seed and device
  and reused by the other targets (its seconds are still counted in each sampling strategy's
  search time).

Writes ``bench/results/search_quality.json`` and prints the Markdown table of docs/quality.md.

    python bench/search_quality.py                       # the documented configuration
    python bench/search_quality.py --devices flops --seeds 0 --targets 50%   # a quick look
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import struct
import sys
import time
from pathlib import Path

import numpy as np

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
HERE = Path(__file__).parent


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def idx_file(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (root / name).is_file():
            return root / name
    sys.exit(f"{root}: no {stem}[.gz]; install Fashion-MNIST with 'apt-get install dataset-fashion-mnist' "
             f"(its files: dpkg -L dataset-fashion-mnist) or pass --data DIR")


def make_npz(root: Path, subset: int, out: Path, with_test: bool) -> Path:
    """A class-balanced subset of the training part as ``.npz`` (and the t10k part only if asked)."""
    path = out / f"fashion-mnist-train{subset}{'-test' if with_test else ''}.npz"
    if path.is_file():
        return path
    x = read_idx(idx_file(root, "train-images-idx3-ubyte"))
    y = read_idx(idx_file(root, "train-labels-idx1-ubyte")).astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    per_class = subset // 10
    keep = np.concatenate([order[y[order] == c][:per_class] for c in range(10)])
    arrays = {"x": x[np.sort(keep)], "y": y[np.sort(keep)]}
    if with_test:  # reported only (test_top1), never used to choose anything
        arrays["x_test"] = read_idx(idx_file(root, "t10k-images-idx3-ubyte"))
        arrays["y_test"] = read_idx(idx_file(root, "t10k-labels-idx1-ubyte")).astype(np.int64)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def share_supernets(first: Path, other: Path, seeds) -> None:
    """The uniform supernet of ``first``'s comparison, reused by ``other`` (it does not depend on the
    target): copied with its recorded training seconds, so search times still count it."""
    for seed in seeds:
        src = first / (f"seed-{seed}" if len(seeds) > 1 else "") / "supernet"
        dst = other / (f"seed-{seed}" if len(seeds) > 1 else "") / "supernet"
        if (src / "seconds.yaml").is_file() and not (dst / "seconds.yaml").is_file():
            dst.mkdir(parents=True, exist_ok=True)
            for name in ("supernet.pt", "seconds.yaml"):
                shutil.copy2(src / name, dst / name)


def readout_stats(cmp_dir: Path, seeds) -> list[dict]:
    """Single-path's raw read-out against the target, per seed (result.yaml of its search stage)."""
    from spnas.core.runs import read_yaml

    out = []
    for seed in seeds:
        res = cmp_dir / (f"seed-{seed}" if len(seeds) > 1 else "") / "search-single-path" / "result.yaml"
        if res.is_file():
            r = read_yaml(res)
            if "readout_latency" in r:
                out.append({"seed": seed, "readout_over_target": r["readout_latency"] / r["target"],
                            "layers_changed_by_projection": r["layers_changed_by_projection"]})
    return out


def run_device(args, device_name: str, data_arg: str, out: Path) -> dict:
    import torch

    from spnas.pipeline.compare import CompareOptions, Comparison
    from spnas.data.datasets import load_data
    from spnas.latency.device import resolve_table
    from spnas.space.graph import SpaceGraph
    from spnas.latency.table import LatencyTable
    from spnas.core.registry import get_registry
    from spnas.latency.runtime import RuntimeModel
    from spnas.searching.target import resolve_target
    from spnas.training.train import TrainRecipe

    torch.set_num_threads(args.threads)
    space = SpaceGraph.load(args.space)
    data = load_data(data_arg, space.spec.resolution, space.spec.in_chs, seed=0, val_fraction=args.val_fraction)
    table_path = out / device_name / "table.json"
    if table_path.is_file():  # one measured table for every target and seed (and for a rerun)
        table = LatencyTable.load(table_path)
    else:
        table = resolve_table(device_name, space, None)
        table_path.parent.mkdir(parents=True, exist_ok=True)
        table.save(table_path)
    runtime = RuntimeModel(space, table)
    lo, hi = runtime.bounds()
    device = get_registry().get("device", device_name)() if args.measure else None
    recipe = TrainRecipe(epochs=args.train_epochs)
    rows, first = [], None
    for spec in args.targets:
        target = resolve_target(spec, runtime)
        cmp_dir = out / device_name / f"target-{spec.rstrip('%')}"
        if first is not None:
            share_supernets(first, cmp_dir, args.seeds)
        opts = CompareOptions(strategies=tuple(args.strategies), target=target, supernet_epochs=args.supernet_epochs,
                              evaluations=args.evaluations, recipe=recipe, seeds=tuple(args.seeds),
                              random_archs=args.random_archs, measure=args.measure)
        resume = (cmp_dir / "compare-config.yaml").is_file()
        start = time.perf_counter()
        result = Comparison(space, data, runtime, device, cmp_dir, opts, resume=resume, progress=False).run()
        first = first or cmp_dir
        rows.append({"device": device_name, "units": runtime.units, "target_spec": spec, "target": target,
                     "range": [lo, hi], "seconds": round(time.perf_counter() - start, 1),
                     "aggregate": result["aggregate"], "results": result["results"],
                     "single_path_readout": readout_stats(cmp_dir, args.seeds)})
        print(f"{device_name} {spec}: done in {rows[-1]['seconds']} s", flush=True)
        write_results(args, [{"device": device_name, "targets": rows, "partial": True}])  # survives a stop
    return {"device": device_name, "table": table.header.__dict__ if hasattr(table.header, "__dict__") else None,
            "targets": rows}


def verdict(target_row: dict) -> dict:
    """The issue's bar at one target: single-path's mean top-1 >= random-arch's mean + 1 std and
    >= random search's mean, with no more search time than random search (its supernet included)."""
    agg = {a["strategy"]: a for a in target_row["aggregate"]}
    sp, ra, rs = agg.get("single-path"), agg.get("random-arch"), agg.get("random")
    out = {}
    if sp and ra:
        out["beats_random_arch_by_1std"] = sp["top1_mean"] >= ra["top1_mean"] + (ra["top1_std"] or 0.0)
    if sp and rs:
        out["beats_random_search"] = sp["top1_mean"] >= rs["top1_mean"]
        out["search_time_not_larger"] = sp["search_seconds_mean"] <= rs["search_seconds_mean"]
    ro = target_row["single_path_readout"]
    if ro:
        out["readout_in_0.9T_T"] = sum(0.9 <= r["readout_over_target"] <= 1.0 for r in ro)
        out["readout_runs"] = len(ro)
        out["max_layers_changed"] = max(r["layers_changed_by_projection"] for r in ro)
    return out


def markdown(results: list[dict]) -> str:
    lines = ["| device | target | strategy | n | top-1 (val) mean ± std | every value | predicted latency | "
             "search s |", "|---|---|---|---|---|---|---|---|"]
    for dev in results:
        for t in dev["targets"]:
            for a in t["aggregate"]:
                std = "n/a" if a["top1_std"] is None else f"{a['top1_std']:.4f}"
                vals = ", ".join(f"{v:.3f}" for v in a["top1_values"])
                lines.append(f"| {dev['device']} | {t['target_spec']} ({t['target']:.4g} {t['units']}) | "
                             f"{a['strategy']} | {a['n']} | {a['top1_mean']:.4f} ± {std} | {vals} | "
                             f"{a['predicted_latency_mean']:.4g} | {a['search_seconds_mean']:.0f} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(d, t) for d in results for t in d["targets"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    colours = {"single-path": "C3", "random": "C0", "evolution": "C2", "rl": "C4", "random-arch": "C7"}
    for ax, (d, t) in zip(axes[0], panels):
        for a in t["aggregate"]:
            c = colours.get(a["strategy"], "C1")
            pts = [r for r in t["results"] if r["strategy"] == a["strategy"]]
            ax.scatter([r["predicted_latency"] for r in pts], [r["top1"] for r in pts], color=c, alpha=0.25, s=12)
            ax.errorbar(a["predicted_latency_mean"], a["top1_mean"], yerr=a["top1_std"] or 0.0, fmt="o",
                        color=c, capsize=3, label=a["strategy"])
        ax.axvline(t["target"], color="k", lw=0.8, ls="--")
        ax.axvspan(0.95 * t["target"], t["target"], color="k", alpha=0.06)
        ax.set_title(f"{d['device']}, target {t['target_spec']}")
        ax.set_xlabel(f"predicted latency ({t['units']})")
        ax.set_ylabel("top-1 (validation), trained from scratch")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def write_results(args, results: list[dict]) -> None:
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps({"config": config, "results": results}, indent=1, default=str) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=FASHION_MNIST, help="folder of the Fashion-MNIST IDX files")
    ap.add_argument("--subset", type=int, default=4000, help="images of the training part used (train + val)")
    ap.add_argument("--val-fraction", type=float, default=0.25)
    ap.add_argument("--space", default="spnas-cifar")
    ap.add_argument("--devices", default="flops,tflite")
    ap.add_argument("--targets", default="30%,65%")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--strategies", default="single-path,random,evolution,random-arch")
    ap.add_argument("--supernet-epochs", type=int, default=4)
    ap.add_argument("--evaluations", type=int, default=30)
    ap.add_argument("--random-archs", type=int, default=2)
    ap.add_argument("--train-epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (run the two devices side by side)")
    ap.add_argument("--no-measure", dest="measure", action="store_false", help="do not time whole networks")
    ap.add_argument("--report-test", action="store_true", help="also report top-1 on t10k (never for tuning)")
    ap.add_argument("--out", type=Path, default=Path("runs/search-quality"))
    ap.add_argument("--results", type=Path, default=HERE / "results" / "search_quality.json")
    args = ap.parse_args()
    args.targets = [t.strip() for t in args.targets.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.strategies = [s.strip() for s in args.strategies.split(",")]
    data_arg = "npz:" + str(make_npz(args.data, args.subset, args.out / "data", args.report_test))
    os.environ.setdefault("SPNAS_TENSORBOARD", "0")
    results = []
    for device in args.devices.split(","):
        results.append(run_device(args, device.strip(), data_arg, args.out))
    for dev in results:
        for t in dev["targets"]:
            t["verdict"] = verdict(t)
    write_results(args, results)
    plot(results, HERE.parent / "docs" / "img" / f"{args.results.stem}.png")
    print(markdown(results))
    for dev in results:
        for t in dev["targets"]:
            print(dev["device"], t["target_spec"], t["verdict"])


if __name__ == "__main__":
    main()
