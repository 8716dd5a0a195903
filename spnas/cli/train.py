"""``spnas train`` and ``spnas eval``: a found architecture trained from scratch, and measured.

    spnas train runs/single-path-x/result.yaml --data digits --epochs 30
    spnas train 'k3e6 skip ... | ...' --space spnas-cifar --data cifar10:~/data/cifar-10-batches-py
    spnas eval runs/train-x --data digits

See :mod:`spnas.training.train` for the recipes and what a training run directory holds.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from spnas.cli.common import add_recipe_args, data_args, recipe_options


def add_train_parsers(sub) -> None:
    p = sub.add_parser("train", help="train an architecture's network from scratch",
                       description="Train the standalone network of ARCH (an architecture string, or the "
                                   "result.yaml / run directory of a search) from a fresh initialization. Writes a "
                                   "run directory with checkpoint.pt (every epoch), model.pt, result.yaml and a "
                                   "report. A --recipe sets every training option; explicit flags override it.")
    p.add_argument("arch", metavar="ARCH|RESULT", help="architecture string, or a search's result.yaml or run directory; "
                   "the directory of 'spnas search --targets' trains every point of its front")
    p.add_argument("--space", default=None,
                   help="registered search space name or YAML path (default: the result's space, else spnas-cifar)")
    data_args(p)
    add_recipe_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="run directory (default: runs/train-<space>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--accelerator", choices=["cpu", "cuda"], help="default: cuda if available")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="top-1 and top-5 of a trained network",
                       description="Evaluate a trained network (model.pt, a training run directory, or a supernet "
                                   "with ARCH) on the validation split of --data, and on its test part if it has "
                                   "one. Networks taken from a supernet get their BatchNorm statistics "
                                   "recalibrated on --bn-batches training batches first.")
    e.add_argument("checkpoint", type=Path, metavar="CHECKPOINT",
                   help="model.pt, a run directory, a supernet.pt, or a .tflite file (float32 or int8)")
    e.add_argument("arch", nargs="?", metavar="ARCH", help="the architecture, for a supernet checkpoint")
    e.add_argument("--space", default=None, help="default: the checkpoint's")
    data_args(e)
    e.add_argument("--bn-batches", type=int, default=20, help="for supernet weights (default: %(default)s)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--json", type=Path, metavar="FILE", help="also write the numbers as JSON")
    e.set_defaults(func=cmd_eval)
    from spnas.cli.compare import add_compare_parser

    add_compare_parser(sub)


def cmd_train(args: argparse.Namespace) -> int:
    from spnas.api import train
    from spnas.pipeline.sweep import is_sweep

    if is_sweep(args.arch):
        return _train_front(args)

    outcome = train(args.arch, args.space, data=args.data, out=args.out or _default_out(args),
                    recipe=args.recipe, seed=args.seed, val_fraction=args.val_fraction, accelerator=args.accelerator,
                    resume=args.resume, progress=not args.quiet, **recipe_options(args))
    result = outcome.record
    print(f"architecture: {result['arch']}")
    print(f"validation top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} after {outcome.recipe.epochs} epochs "
          f"({result['train_seconds']:.1f} s)")
    if "test_top1" in result:
        print(f"test top-1 {result['test_top1']:.4f}, top-5 {result['test_top5']:.4f}")
    print(f"model: {outcome.run_dir / 'model.pt'}")
    print(f"run directory: {outcome.run_dir}")
    return 0


def _train_front(args: argparse.Namespace) -> int:
    from spnas.api import train

    out = args.out or Path("runs") / f"train-front-{time.strftime('%Y%m%d-%H%M%S')}"
    outcome = train(args.arch, args.space, data=args.data, out=out, recipe=args.recipe, seed=args.seed,
                    val_fraction=args.val_fraction, accelerator=args.accelerator, resume=args.resume,
                    progress=not args.quiet, **recipe_options(args))
    print(f"{'target':>8} {'predicted':>10} {'top-1':>7}  architecture")
    for p in outcome.points:
        print(f"{p['target_spec']:>8} {p['predicted_latency']:>10.4f} {p['top1']:>7.4f}  {p['arch']}")
    print(f"run directory: {outcome.run_dir}")
    if outcome.report is not None:
        print(f"report: {outcome.report}")
    return 0


def _default_out(args: argparse.Namespace) -> Path:
    """``runs/train-<space>-<time>``, the space being the one the run will use."""
    from spnas.pipeline.search import load_space
    from spnas.pipeline.train import resolve_arch

    _, space = resolve_arch(args.arch, args.space)
    return Path("runs") / f"train-{load_space(space).name}-{time.strftime('%Y%m%d-%H%M%S')}"


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    from spnas.api import evaluate

    outcome = evaluate(args.checkpoint, args.arch, space=args.space, data=args.data, val_fraction=args.val_fraction,
                       bn_batches=args.bn_batches, batch_size=args.batch_size)
    print(f"{outcome.arch}  ({outcome.weights})" if outcome.arch else outcome.weights)
    print(f"validation top-1 {outcome.val_top1:.4f}, top-5 {outcome.val_top5:.4f}")
    if outcome.test_top1 is not None:
        print(f"test top-1 {outcome.test_top1:.4f}, top-5 {outcome.test_top5:.4f}")
    if args.json:
        from spnas.core.runs import atomic_write_text

        atomic_write_text(args.json, json.dumps(outcome.to_dict(), indent=2) + "\n")
    return 0
