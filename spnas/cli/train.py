"""``spnas train`` and ``spnas eval``: a found architecture trained from scratch, and measured.

    spnas train runs/single-path-x/result.yaml --data digits --epochs 30
    spnas train 'k3e6 skip ... | ...' --space spnas-cifar --data cifar10:~/data/cifar-10-batches-py
    spnas eval runs/train-x --data digits

See :mod:`spnas.training.train` for the recipes and what a training run directory holds.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any


from spnas.core.errors import SpnasError


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits",
                   help="data set: digits (embedded), cifar10:DIR, idx:DIR (MNIST format), npz:FILE or "
                        "imagefolder:DIR; spnas never downloads (see docs/data.md) (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="part of the training data held out for validation (default: %(default)s; the split is "
                        "the one a search with the same value used)")


def add_recipe_args(p: argparse.ArgumentParser, epochs_flag: str = "--epochs") -> None:
    """The training recipe's flags (``spnas train``; ``spnas compare`` names the epochs ``--train-epochs``)."""
    from spnas.training.train import OPTIMIZERS, RECIPES, SCHEDULES

    p.add_argument("--recipe", default="default", choices=sorted(RECIPES), help="training preset (default: %(default)s)")
    p.add_argument(epochs_flag, dest="epochs", type=int, help="training epochs (default: 30)")
    p.add_argument("--batch-size", type=int, help="batch size (default: 64)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="default: the recipe's (sgd; authors: rmsprop)")
    p.add_argument("--lr", type=float, help="learning rate for a batch of --lr-batch images (default: 0.1 per 64)")
    p.add_argument("--lr-batch", type=int, help="the batch size --lr is given for; the rate is scaled linearly")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float, help="on weights, not on BatchNorm parameters or biases")
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--warmup-epochs", type=float, help="linear learning-rate warm-up (default: 1)")
    p.add_argument("--schedule", choices=SCHEDULES, help="after the warm-up (default: cosine)")
    p.add_argument("--no-augment", dest="augment", action="store_const", const=False,
                   help="no random crops or flips")


def recipe_from_args(args: argparse.Namespace):
    from spnas.training.train import TrainRecipe, recipe

    names = [f.name for f in dataclasses.fields(TrainRecipe)]
    return recipe(args.recipe, **{n: getattr(args, n, None) for n in names})


def add_train_parsers(sub) -> None:
    p = sub.add_parser("train", help="train an architecture's network from scratch",
                       description="Train the standalone network of ARCH (an architecture string, or the "
                                   "result.yaml / run directory of a search) from a fresh initialization. Writes a "
                                   "run directory with checkpoint.pt (every epoch), model.pt, result.yaml and a "
                                   "report. A --recipe sets every training option; explicit flags override it.")
    p.add_argument("arch", metavar="ARCH|RESULT", help="architecture string, or a search's result.yaml or run directory")
    p.add_argument("--space", default=None,
                   help="registered search space name or YAML path (default: the result's space, else spnas-cifar)")
    _data_args(p)
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
    e.add_argument("checkpoint", type=Path, metavar="CHECKPOINT", help="model.pt, a run directory or a supernet.pt")
    e.add_argument("arch", nargs="?", metavar="ARCH", help="the architecture, for a supernet checkpoint")
    e.add_argument("--space", default=None, help="default: the checkpoint's")
    _data_args(e)
    e.add_argument("--bn-batches", type=int, default=20, help="for supernet weights (default: %(default)s)")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--json", type=Path, metavar="FILE", help="also write the numbers as JSON")
    e.set_defaults(func=cmd_eval)

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
    from spnas.cli.latency import device_args

    device_args(c, "tflite")
    _data_args(c)
    c.add_argument("--target", metavar="T", help="latency window [0.95T, T] for every strategy: T in the device's "
                   "units, or a fraction of the space's range on the device, e.g. 40%% (lo + 0.4 (hi - lo))")
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


def resolve_arch(text: str, space_flag: str | None) -> tuple[str, str]:
    """(architecture string, space) from an architecture string or a search's result.yaml / run dir.

    The space of a result is the one its run used (config.yaml's ``space``, which may be a YAML
    path), unless ``space_flag`` is given.
    """
    from spnas.core.runs import read_yaml

    path = Path(text)
    if path.is_dir():
        path = path / "result.yaml"
        if not path.is_file():
            raise SpnasError(f"{text}: a directory without result.yaml; pass a finished search's run directory")
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        if path.suffix in (".yaml", ".yml"):
            raise SpnasError(f"{text}: no such file")
        return text, space_flag or "spnas-cifar"
    result = read_yaml(path)
    if not isinstance(result, dict) or not isinstance(result.get("arch"), str):
        raise SpnasError(f"{path}: arch: missing; expected a search's result.yaml with an 'arch' string")
    space = space_flag
    if space is None:
        config = path.parent / "config.yaml"
        try:
            cfg = read_yaml(config) if config.is_file() else None
        except SpnasError:  # the result names its space too
            cfg = None
        space = (cfg or {}).get("space") if isinstance(cfg, dict) else None
        space = space or result.get("space")
    if not isinstance(space, str):
        raise SpnasError(f"{path}: names no search space; pass --space")
    return result["arch"], space


def _accelerator(name: str | None) -> str:
    import torch

    accel = name or ("cuda" if torch.cuda.is_available() else "cpu")
    if accel == "cuda" and not torch.cuda.is_available():
        raise SpnasError("--accelerator cuda: no CUDA device is available; use --accelerator cpu")
    return accel


def _load_data(text: str, space, val_fraction: float):
    from spnas.data.datasets import load_data
    from spnas.export.exporter import with_classes

    if not 0 < val_fraction < 1:
        raise SpnasError(f"--val-fraction {val_fraction} is not allowed; use a value in (0, 1)")
    data = load_data(text, space.spec.resolution, space.spec.in_chs, seed=0, val_fraction=val_fraction)
    return data, with_classes(space, data.num_classes)


def cmd_train(args: argparse.Namespace) -> int:
    from spnas.space.graph import SpaceGraph
    from spnas.core.runs import RunDir
    from spnas.training.train import train

    arch_text, space_name = resolve_arch(args.arch, args.space)
    r = recipe_from_args(args)
    space = SpaceGraph.load(space_name)
    arch = space.parse(arch_text)
    data, space = _load_data(args.data, space, args.val_fraction)
    arch = space.parse(str(arch))
    accel = _accelerator(args.accelerator)
    out = args.out or Path("runs") / f"train-{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    run = RunDir(out, resume=args.resume)
    run.write_config({"command": "train", "arch": str(arch), "space": space_name, "space_name": space.name,
                      "data": args.data, "val_fraction": args.val_fraction, "seed": args.seed,
                      "accelerator": accel, "recipe_name": args.recipe, "recipe": r})
    try:
        result = train(space, arch, data, r, run, seed=args.seed, device=accel, resume=args.resume,
                       progress=not args.quiet)
    finally:
        run.close()
    run.write_result(result)
    from spnas.report.writer import try_write_report

    try_write_report(run.path)
    print(f"architecture: {result['arch']}")
    print(f"validation top-1 {result['top1']:.4f}, top-5 {result['top5']:.4f} after {r.epochs} epochs "
          f"({result['train_seconds']:.1f} s)")
    if "test_top1" in result:
        print(f"test top-1 {result['test_top1']:.4f}, top-5 {result['test_top5']:.4f}")
    print(f"model: {run.path / 'model.pt'}")
    print(f"run directory: {run.path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import json

    import torch

    from spnas.supernet.builder import recalibrate_bn
    from spnas.export.exporter import read_child
    from spnas.space.graph import SpaceGraph
    from spnas.training.train import MODEL_FILE, evaluate_child

    path = args.checkpoint
    if not path.exists():
        raise SpnasError(f"{path}: no such file or directory; give a model.pt, a training run directory or a "
                         f"supernet.pt (with ARCH)")
    if path.is_dir() and (path / MODEL_FILE).is_file():
        path = path / MODEL_FILE
    if args.bn_batches < 1:
        raise SpnasError(f"--bn-batches {args.bn_batches} is not allowed; use >= 1")
    space = SpaceGraph.load(args.space) if args.space else None
    loaded = read_child(space, args.arch, path)
    child = loaded.child
    data, _ = _load_data(args.data, child.space, args.val_fraction)
    if data.num_classes != child.space.spec.num_classes:
        raise SpnasError(f"{path}: the network has {child.space.spec.num_classes} outputs; --data {args.data} has "
                         f"{data.num_classes} classes")
    if loaded.from_supernet:
        gen = torch.Generator().manual_seed(7)
        loader = torch.utils.data.DataLoader(data.train, batch_size=64, shuffle=True, generator=gen)
        recalibrate_bn(child, [(x,) for (x, _), _ in zip(loader, range(args.bn_batches))])
    numbers: dict[str, Any] = {"checkpoint": str(path), "arch": str(child.arch), "space": child.space.name,
                               "data": args.data, "weights": loaded.source,
                               **evaluate_child(child, data, batch_size=args.batch_size)}
    print(f"{child.arch}  ({loaded.source})")
    print(f"validation top-1 {numbers['val_top1']:.4f}, top-5 {numbers['val_top5']:.4f}")
    if "test_top1" in numbers:
        print(f"test top-1 {numbers['test_top1']:.4f}, top-5 {numbers['test_top5']:.4f}")
    if args.json:
        from spnas.core.runs import atomic_write_text

        atomic_write_text(args.json, json.dumps(numbers, indent=2) + "\n")
    return 0


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
    from spnas.cli.latency import make_device, parse_device_options, table_from_args
    from spnas.pipeline.compare import CompareOptions, Comparison
    from spnas.space.graph import SpaceGraph
    from spnas.latency.runtime import RuntimeModel

    names = tuple(n.strip() for n in args.strategies.split(",") if n.strip())
    if args.seed is not None and args.seeds is not None:
        raise SpnasError("--seed and --seeds: give one (--seed S runs one seed; --seeds N or a list such as "
                         "0,3,7 runs several)")
    if args.seed is not None and args.seed < 0:
        raise SpnasError(f"--seed {args.seed} is not allowed; use a seed >= 0")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else (args.seed or 0,)
    opts = CompareOptions(strategies=names, target=args.target, supernet_epochs=args.supernet_epochs,
                          evaluations=args.evaluations, recipe=recipe_from_args(args), seeds=seeds,
                          random_archs=args.random_archs, measure=args.measure)
    space = SpaceGraph.load(args.space)
    data, space = _load_data(args.data, space, args.val_fraction)
    runtime = RuntimeModel(space, table_from_args(args, space))
    device = make_device(args.device, parse_device_options(args.device_option)) if args.measure else None
    out = args.out or Path("runs") / f"compare-{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    comparison = Comparison(space, data, runtime, device, out, opts, accelerator=_accelerator(args.accelerator),
                            resume=args.resume, progress=not args.quiet)
    result = comparison.run()
    u = result["units"]
    print(f"{'seed':>4} {'strategy':<16} {'predicted':>10} {'measured':>10} {'top-1':>7} {'search s':>9}  architecture")
    for r in result["results"]:
        m = "n/a" if r["measured_latency"] is None else f"{r['measured_latency']:.4f}"
        name = r["strategy"] + (f" #{r['draw']}" if "draw" in r else "")
        print(f"{r['seed']:>4} {name:<16} {r['predicted_latency']:>10.4f} {m:>10} {r['top1']:>7.4f} "
              f"{r['search_seconds']:>9.1f}  {r['arch']}")
    if len(opts.seeds) > 1 or any(a["n"] > 1 for a in result["aggregate"]):
        print(f"\n{'strategy':<16} {'n':>3} {'top-1 mean':>10} {'std':>7} {'predicted':>10} {'search s':>9}")
        for a in result["aggregate"]:
            std = "n/a" if a["top1_std"] is None else f"{a['top1_std']:.4f}"
            print(f"{a['strategy']:<16} {a['n']:>3} {a['top1_mean']:>10.4f} {std:>7} "
                  f"{a['predicted_latency_mean']:>10.4f} {a['search_seconds_mean']:>9.1f}")
    print(f"latency in {u}; report: {out / 'report.md'}")
    return 0
