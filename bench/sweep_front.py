"""A front from one search (``spnas search --targets``) against one search per target.

For k targets the sweep trains single-path's warm-up once and forks every target's runtime phase
from it; the alternative is k separate ``--target`` searches with the same seed and options. This
script measures, on Fashion-MNIST (the data of docs/quality.md; validation split of the training
part only), over several seeds:

* the wall time of the sweep against the sum of the k separate searches, measured in the same
  process, the two arms alternating which runs first from seed to seed;
* the networks: the sweep's point for each target against the separate search's, and their top-1
  trained from scratch with one recipe (a network found by both arms is trained once: the same
  architecture, seed and recipe train to the same weights).

Writes ``bench/results/sweep_front.json``, ``docs/img/sweep_front.png`` and prints the Markdown
table of docs/quality.md.

    python bench/sweep_front.py                                   # the documented configuration
    python bench/sweep_front.py --seeds 0 --subset 1000 --epochs 3  # a quick look
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from search_quality import FASHION_MNIST, make_npz  # noqa: E402


def run_seed(args, data: str, seed: int, out: Path) -> dict:
    from spnas.pipeline.search import run_search
    from spnas.pipeline.sweep import run_sweep
    from spnas.pipeline.train import run_train

    targets = args.targets.split(",")
    options = {"epochs": args.epochs, "batch_size": args.batch_size}
    common = dict(device=args.device, data=data, seed=seed, val_fraction=args.val_fraction, report=False)

    def sweep():
        start = time.perf_counter()
        outcome = run_sweep(args.space, targets, "single-path", out=out / "sweep", options=options, **common)
        return time.perf_counter() - start, outcome.points

    def separate():
        start, points = time.perf_counter(), []
        for spec in targets:
            found = run_search(args.space, "single-path", out=out / f"target-{spec.replace('%', 'pct')}",
                               options={**options, "target": spec}, **common)
            points.append(found.record)
        return time.perf_counter() - start, points

    if seed % 2 == 0:  # alternate the order: a slow spell of the machine hits both arms alike
        sweep_s, sweep_pts = sweep()
        sep_s, sep_pts = separate()
    else:
        sep_s, sep_pts = separate()
        sweep_s, sweep_pts = sweep()
    trained: dict[str, dict] = {}
    rows = []
    for spec, a, b in zip(targets, sweep_pts, sep_pts):
        for arch in (a["arch"], b["arch"]):
            if arch not in trained:
                t = run_train(arch, args.space, data=data, out=out / f"train-{len(trained)}", seed=seed,
                              val_fraction=args.val_fraction, epochs=args.train_epochs, report=False)
                trained[arch] = t.record
        rows.append({"target": spec, "sweep_arch": a["arch"], "separate_arch": b["arch"], "same": a["arch"] == b["arch"],
                     "predicted_latency": a["predicted_latency"], "separate_predicted_latency": b["predicted_latency"],
                     "supernet_val_accuracy": a["supernet_val_accuracy"],
                     "separate_supernet_val_accuracy": b["supernet_val_accuracy"],
                     "sweep_top1": trained[a["arch"]]["top1"], "separate_top1": trained[b["arch"]]["top1"]})
    return {"seed": seed, "sweep_seconds": round(sweep_s, 2), "separate_seconds": round(sep_s, 2),
            "ratio": round(sweep_s / sep_s, 4), "points": rows}


def summarise(runs: list[dict], targets: list[str]) -> dict:
    ratios = [r["ratio"] for r in runs]
    per_target = []
    for i, spec in enumerate(targets):
        sw = [r["points"][i]["sweep_top1"] for r in runs]
        se = [r["points"][i]["separate_top1"] for r in runs]
        std = statistics.stdev(se) if len(se) > 1 else None
        per_target.append({"target": spec, "sweep_top1_mean": statistics.fmean(sw), "separate_top1_mean": statistics.fmean(se),
                           "separate_top1_std": std, "same_networks": sum(r["points"][i]["same"] for r in runs),
                           "within_one_std": (std is not None and abs(statistics.fmean(sw) - statistics.fmean(se)) <= std)})
    return {"ratio_mean": statistics.fmean(ratios), "ratio_max": max(ratios), "per_target": per_target}


def markdown(result: dict) -> str:
    s = result["summary"]
    lines = ["| seed | sweep (s) | separate searches, one per target (s) | ratio |", "|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['seed']} | {r['sweep_seconds']:.0f} | {r['separate_seconds']:.0f} | {r['ratio']:.3f} |")
    lines += ["", "| target | same network (seeds) | top-1 from scratch, sweep | separate searches (mean ± std) |",
              "|---|---|---|---|"]
    for t in s["per_target"]:
        std = "n/a" if t["separate_top1_std"] is None else f"{t['separate_top1_std']:.4f}"
        lines.append(f"| {t['target']} | {t['same_networks']} of {len(result['runs'])} | {t['sweep_top1_mean']:.4f} | "
                     f"{t['separate_top1_mean']:.4f} ± {std} |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    from spnas.report.plots import _figure, _save

    fig = _figure(6, 4)
    ax = fig.subplots()
    for key, marker, label in (("sweep", "o", "sweep (one warm-up)"), ("separate", "x", "separate searches")):
        xs = [p["predicted_latency" if key == "sweep" else "separate_predicted_latency"] for r in result["runs"]
              for p in r["points"]]
        ys = [p[f"{key}_top1"] for r in result["runs"] for p in r["points"]]
        ax.scatter(xs, ys, marker=marker, s=40 if key == "sweep" else 60, label=label, alpha=0.8)
    ax.set_xlabel(f"predicted latency ({result['config']['device']})")
    ax.set_ylabel("top-1 (validation), trained from scratch")
    ax.set_title(f"fronts over {len(result['runs'])} seeds; sweep time {result['summary']['ratio_mean']:.2f}x", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=FASHION_MNIST)
    ap.add_argument("--subset", type=int, default=3000)
    ap.add_argument("--val-fraction", type=float, default=0.25)
    ap.add_argument("--space", default="spnas-cifar")
    ap.add_argument("--device", default="flops")
    ap.add_argument("--targets", default="30%,50%,70%")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=8, help="single-path epochs (default warm-up: 5 of 8)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--train-epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/sweep-front"))
    ap.add_argument("--results", type=Path, default=HERE / "results" / "sweep_front.json")
    ap.add_argument("--plot", type=Path, default=HERE.parent / "docs" / "img" / "sweep_front.png")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    npz = make_npz(args.data, args.subset, args.out / "data", with_test=False)
    runs = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        out = args.out / f"seed-{seed}"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        runs.append(run_seed(args, f"npz:{npz}", seed, out))
        print(json.dumps(runs[-1]), flush=True)
    result = {"config": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
              "summary": summarise(runs, args.targets.split(","))}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.plot)
    print(markdown(result))


if __name__ == "__main__":
    main()
