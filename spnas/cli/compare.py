"""``spnas compare``: several strategies on one supernet and one latency table, every found network
trained from scratch (the command line of :func:`spnas.compare`; see :mod:`spnas.pipeline.compare`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from spnas.cli.common import add_recipe_args, data_args, device_args, parse_device_options, recipe_options
from spnas.core.errors import SpnasError


def add_compare_parser(sub) -> None:
    c = sub.add_parser("compare", help="several strategies on one supernet and one table, trained from scratch",
                       description="The bake-off of spnas/pipeline/compare.py: one latency table, one shared uniform supernet "
                                   "for the sampling strategies (single-path trains its own for the same epochs), "
                                   "equal budgets and --target, then every found architecture trained from scratch "
                                   "with the same recipe. Writes report.md, compare.yaml and plots/compare.png.")
    c.add_argument("--strategies", default="single-path,random,evolution,rl,random-arch",
                   help="comma-separated registered strategies, and random-arch: --random-archs architectures "
                        "drawn uniformly at random in the same window, trained from scratch, no supernet "
                        "(default: %(default)s)")
    c.add_argument("--space", default="spnas-cifar", help="registered search space or YAML path (default: %(default)s)")

    device_args(c, "tflite")
    data_args(c)
    c.add_argument("--target", metavar="T", help="latency window [0.95T, T] for every strategy: T in the device's "
                   "units, or a fraction of the space's range on the device, e.g. 40%% (lo + 0.4 (hi - lo))")
    c.add_argument("--targets", metavar="T1,T2,...",
                   help="compare at several targets (costs or %% of the range, e.g. 30%%,50%%,70%%): one comparison per "
                        "target in OUT/target-*/, each seed's uniform supernet and single-path's warm-up trained once "
                        "and shared; the report shows each strategy's front")
    c.add_argument("--supernet-epochs", type=int, default=8,
                   help="supernet epochs, shared uniform or single-path's own (default: %(default)s)")
    c.add_argument("--evaluations", type=int, default=100,
                   help="candidates each sampling strategy evaluates (default: %(default)s)")
    add_recipe_args(c, epochs_flag="--train-epochs")
    c.add_argument("--no-measure", dest="measure", action="store_false",
                   help="do not measure the found networks on the device")
    c.add_argument("--random-archs", type=int, default=3, metavar="N",
                   help="architectures random-arch draws and trains per seed (default: %(default)s)")
    c.add_argument("--seed", type=int, default=None, help="run one seed (default: 0)")
    c.add_argument("--seeds", metavar="N|LIST",
                   help="run every stage once per seed: N (seeds 0..N-1) or a list such as 0,3,7; compare.yaml "
                        "and the report add the mean and std over seeds (stages in OUT/seed-<seed>/)")
    c.add_argument("--out", type=Path, help="output directory (default: runs/compare-<space>-<time>)")
    c.add_argument("--resume", action="store_true", help="skip finished stages, resume the unfinished one")
    c.add_argument("--accelerator", choices=["cpu", "cuda"], help="default: cuda if available")
    c.add_argument("--quiet", action="store_true", help="no progress bars")
    c.set_defaults(func=cmd_compare)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``--seeds``: a count N (seeds 0..N-1) or a comma-separated list of seeds (``0,3,7``).

    Example:
        >>> parse_seeds("3"), parse_seeds("0,3,7")
        ((0, 1, 2), (0, 3, 7))
    """
    from spnas.core.errors import describe

    allowed = "give a count N >= 1 (seeds 0..N-1) or distinct seeds >= 0 such as 0,3,7"
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(int(p) for p in parts if p)
    except ValueError:
        values = ()
    if not values or (len(parts) > 1 and "" in parts[:-1]):  # not numbers, or an empty item inside a list
        raise SpnasError(f"--seeds {describe(text, 40)}: not a count or a list of seeds; {allowed}")
    if len(parts) == 1 and values[0] < 1:
        raise SpnasError(f"--seeds {text.strip()}: a count must be >= 1; {allowed}")
    return tuple(range(values[0])) if len(parts) == 1 else values  # CompareOptions refuses < 0 or twice


def cmd_compare(args: argparse.Namespace) -> int:
    from spnas.api import compare

    names = tuple(n.strip() for n in args.strategies.split(",") if n.strip())
    if args.seed is not None and args.seeds is not None:
        raise SpnasError("--seed and --seeds: give one (--seed S runs one seed; --seeds N or a list such as "
                         "0,3,7 runs several)")
    if args.seed is not None and args.seed < 0:
        raise SpnasError(f"--seed {args.seed} is not allowed; use a seed >= 0")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else (args.seed or 0,)
    if args.out is None:
        from spnas.pipeline.search import load_space

        args.out = Path("runs") / f"compare-{load_space(args.space).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = args.out
    outcome = compare(names, args.space, args.device, args.data, args.target, out, seeds=seeds,
                      supernet_epochs=args.supernet_epochs, evaluations=args.evaluations,
                      random_archs=args.random_archs, measure=args.measure, recipe=args.recipe,
                      table=args.device_table, device_options=parse_device_options(args.device_option),
                      val_fraction=args.val_fraction, accelerator=args.accelerator, resume=args.resume,
                      progress=not args.quiet, targets=args.targets, **recipe_options(args))
    result = outcome.record
    if args.targets is not None:
        print(f"{'target':>8} {'strategy':<16} {'n':>3} {'top-1 mean':>10} {'predicted':>10}")
        for a in result["aggregate"]:
            print(f"{a['target_spec']:>8} {a['strategy']:<16} {a['n']:>3} {a['top1_mean']:>10.4f} "
                  f"{a['predicted_latency_mean']:>10.4f}")
        print(f"latency in {result['units']}; report: {outcome.report}")
        return 0
    u = result["units"]
    print(f"{'seed':>4} {'strategy':<16} {'predicted':>10} {'measured':>10} {'top-1':>7} {'search s':>9}  architecture")
    for r in result["results"]:
        m = "n/a" if r["measured_latency"] is None else f"{r['measured_latency']:.4f}"
        name = r["strategy"] + (f" #{r['draw']}" if "draw" in r else "")
        print(f"{r['seed']:>4} {name:<16} {r['predicted_latency']:>10.4f} {m:>10} {r['top1']:>7.4f} "
              f"{r['search_seconds']:>9.1f}  {r['arch']}")
    if len(seeds) > 1 or any(a["n"] > 1 for a in result["aggregate"]):
        print(f"\n{'strategy':<16} {'n':>3} {'top-1 mean':>10} {'std':>7} {'predicted':>10} {'search s':>9}")
        for a in result["aggregate"]:
            std = "n/a" if a["top1_std"] is None else f"{a['top1_std']:.4f}"
            print(f"{a['strategy']:<16} {a['n']:>3} {a['top1_mean']:>10.4f} {std:>7} "
                  f"{a['predicted_latency_mean']:>10.4f} {a['search_seconds_mean']:>9.1f}")
    print(f"latency in {u}; report: {outcome.report}")
    return 0
