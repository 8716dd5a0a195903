"""Argument helpers shared by the ``spnas`` commands (parsing only: every command then calls the library)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import yaml

from spnas.core.errors import SpnasError


def space_arg(p: argparse.ArgumentParser, default: str | None = "spnas-cifar") -> None:
    p.add_argument("--space", default=default, required=default is None,
                   help="registered search space name or path to a YAML file (default: %(default)s)")


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


def data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits",
                   help="data set: digits (embedded), cifar10:DIR, idx:DIR (MNIST format), npz:FILE or "
                        "imagefolder:DIR; spnas never downloads (see docs/data.md) (default: %(default)s)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="part of the training data held out for validation (default: %(default)s; the split is "
                        "the one a search with the same value used)")


def add_recipe_args(p: argparse.ArgumentParser, epochs_flag: str = "--epochs") -> None:
    """The training recipe's flags (``spnas train``; ``spnas compare`` names the epochs ``--train-epochs``)."""
    from spnas.training.train import OPTIMIZERS, RECIPES, SCHEDULES

    p.add_argument("--recipe", default="default", choices=list(RECIPES), help="training preset (default: %(default)s)")
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


def recipe_options(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields given on the command line (None: the preset's)."""
    from spnas.training.train import TrainRecipe

    return {f.name: getattr(args, f.name, None) for f in dataclasses.fields(TrainRecipe)
            if getattr(args, f.name, None) is not None}
