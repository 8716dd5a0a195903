"""Fingerprints of the three trainers, to show that a refactor of the training loop changes no bit.

Runs, on the ``tiny`` space with the ``digits`` data (16x16), batch 64, one thread:

* ``spnas.training.train.train`` (a child network from scratch; the default and the authors' recipe),
* ``spnas.training.oneshot.train_uniform`` (the uniform single-path supernet),
* the single-path search (lambda mode; target mode with warm-up; the authors' recipe),

and writes, per case, the sha256 of every tensor of the final network's state dict, of every
tensor and value of the final ``checkpoint.pt``, the log records and the result (timings left
out). Each case also runs interrupted twice and resumed (right after the first checkpoint, and in
the middle of a later epoch); its fingerprint must equal the uninterrupted one's.

    python bench/loop_equivalence.py /tmp/before.json            # on the old code
    python bench/loop_equivalence.py /tmp/after.json             # on the new code
    python bench/loop_equivalence.py --compare /tmp/before.json /tmp/after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch


def sha(t: torch.Tensor) -> str:
    t = t.detach().cpu().contiguous().reshape(-1)
    return hashlib.sha256(str((t.dtype, tuple(t.shape))).encode() + t.view(torch.uint8).numpy().tobytes()
                          if t.numel() else str((t.dtype, tuple(t.shape))).encode()).hexdigest()[:16]


def flatten(value, prefix: str = "") -> dict[str, str]:
    """Every leaf of a checkpoint: tensors as hashes, the rest as repr."""
    out: dict[str, str] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}/{k}" if prefix else str(k)))
    elif isinstance(value, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple, torch.Tensor)) for v in value):
            out[prefix] = repr(list(value))
        else:
            for i, v in enumerate(value):
                out.update(flatten(v, f"{prefix}/{i}"))
    elif isinstance(value, torch.Tensor):
        out[prefix] = sha(value)
    else:
        out[prefix] = repr(value)
    return out


TIMING = ("seconds", "train_seconds", "search_seconds")


def _run_dir(path: Path, resume: bool, stop_after_checkpoints: int | None, stop_after_logs: int | None):
    from spnas.core.runs import RunDir

    class Interrupting(RunDir):
        """Raises KeyboardInterrupt right after checkpoint number n, or at log record n + 1."""

        def __init__(self):
            super().__init__(path, resume=resume)
            self.saves = self.logs = 0

        def save_checkpoint(self, state):
            super().save_checkpoint(state)
            self.saves += 1
            if stop_after_checkpoints is not None and self.saves >= stop_after_checkpoints:
                raise KeyboardInterrupt

        def log(self, record):
            if stop_after_logs is not None and self.logs >= stop_after_logs:
                raise KeyboardInterrupt
            self.logs += 1
            super().log(record)

    return Interrupting()


def run_case(name: str, path: Path, resume: bool = False, stop_after_checkpoints: int | None = None,
             stop_after_logs: int | None = None):
    """Run one case in ``path``; returns (final network, result dict)."""
    from spnas.testing import tiny_setup

    space, runtime, data = tiny_setup()
    run = _run_dir(path, resume, stop_after_checkpoints, stop_after_logs)
    try:
        if name.startswith("train"):
            from spnas.training.train import TrainRecipe, recipe, train
            from spnas.supernet.builder import ChildNet

            r = TrainRecipe(epochs=3, batch_size=64) if name == "train" else recipe("authors", epochs=3, batch_size=64)
            arch = space.parse("k3e2 skip | k5e6 k3e3")
            result = train(space, arch, data, r, run, seed=2, resume=resume, progress=False)
            from spnas.core.runs import load_checkpoint

            net = ChildNet(space, arch)
            net.load_state_dict(load_checkpoint(path / "model.pt")["model"])
            return net, result
        if name == "uniform":
            from spnas.training.oneshot import UniformTraining, train_uniform

            net = train_uniform(space, data, UniformTraining(epochs=3, batch_size=64), run, seed=2, resume=resume,
                                progress=False)
            return net, {}
        from spnas.core.registry import get_registry
        from spnas.searching.strategy import SearchContext
        from spnas.searching.target import resolve_target

        options = {"sp-lambda": {"epochs": 3, "batch_size": 64},
                   "sp-target": {"epochs": 4, "batch_size": 64, "warmup_epochs": 2,
                                 "target": resolve_target("70%", runtime)},
                   "sp-authors": {"epochs": 3, "batch_size": 64, "recipe": "authors", "bn_batches": 3}}[name]
        strategy = get_registry().get("strategy", "single-path").from_options(options)
        ctx = SearchContext(space, data, runtime, run, seed=1, resume=resume, progress=False)
        result = strategy.search(ctx).to_dict()
        return strategy.supernet, result
    finally:
        run.close()


def fingerprint(name: str, path: Path, net, result: dict) -> dict:
    from spnas.core.runs import load_checkpoint

    ckpt = load_checkpoint(path / "checkpoint.pt")
    log = [json.loads(line) for line in (path / "log.jsonl").read_text().splitlines()]
    return {
        "state_dict": {k: sha(v) for k, v in net.state_dict().items()},
        "checkpoint": {k: v for k, v in flatten(ckpt).items() if k.rsplit("/", 1)[-1] not in TIMING},
        "log": log,
        "result": {k: v for k, v in result.items() if k not in (*TIMING, "run_dir", "supernet")},
    }


CASES = ("train", "train-authors", "uniform", "sp-lambda", "sp-target", "sp-authors")
#: a log record count that lands in the middle of the second or third epoch (22 steps an epoch)
MID = {"train": 2, "train-authors": 2, "uniform": 2, "sp-lambda": 30, "sp-target": 50, "sp-authors": 30}


def measure(cases) -> dict:
    torch.set_num_threads(1)
    out = {}
    for name in cases:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            net, result = run_case(name, tmp / "full")
            fp = fingerprint(name, tmp / "full", net, result)
            resumed = {}
            for kind, kw in (("after-checkpoint-1", {"stop_after_checkpoints": 1}),
                             ("mid-run", {"stop_after_logs": MID[name]})):
                part = tmp / kind
                try:
                    run_case(name, part, **kw)
                    raise SystemExit(f"{name}: the {kind} interruption did not happen")
                except KeyboardInterrupt:
                    pass
                net2, result2 = run_case(name, part, resume=True)
                fp2 = fingerprint(name, part, net2, result2)
                resumed[kind] = _diff(fp, fp2)
            fp["resume"] = resumed
            out[name] = fp
            print(name, "done;", "resumed:", resumed, flush=True)
    return out


def _diff(a: dict, b: dict) -> str:
    """'identical' or what differs between two fingerprints."""
    parts = []
    for key in ("state_dict", "checkpoint"):
        x, y = a[key], b[key]
        same = sum(1 for k in x if y.get(k) == x[k])
        if same != len(x) or x.keys() != y.keys():
            parts.append(f"{key} {same}/{len(x)} (+{len(y.keys() - x.keys())} -{len(x.keys() - y.keys())})")
    for key in ("log", "result"):
        if a[key] != b[key]:
            parts.append(f"{key} differs")
    return "identical" if not parts else "; ".join(parts)


def compare(before: dict, after: dict) -> bool:
    ok = True
    for name in before:
        a, b = before[name], after.get(name)
        if b is None:
            print(f"{name}: missing after")
            ok = False
            continue
        sd_same = sum(1 for k, v in a["state_dict"].items() if b["state_dict"].get(k) == v)
        ck = a["checkpoint"]
        ck_same = sum(1 for k, v in ck.items() if b["checkpoint"].get(k) == v)
        added = sorted(b["checkpoint"].keys() - ck.keys())
        removed = sorted(ck.keys() - b["checkpoint"].keys())
        changed = sorted(k for k in ck.keys() & b["checkpoint"].keys() if ck[k] != b["checkpoint"][k])
        logs_same = sum(1 for x, y in zip(a["log"], b["log"]) if x == y)
        print(f"{name}: state_dict {sd_same}/{len(a['state_dict'])} tensors identical; "
              f"log {logs_same}/{len(a['log'])} records identical ({len(b['log'])} after); "
              f"result {'identical' if a['result'] == b['result'] else 'DIFFERS'}; "
              f"checkpoint {ck_same}/{len(ck)} entries identical"
              + (f", added {added[:6]}{'...' if len(added) > 6 else ''} ({len(added)})" if added else "")
              + (f", removed {removed}" if removed else "") + (f", changed {changed}" if changed else ""))
        print(f"{'':{len(name)}}  resumed runs vs uninterrupted: before {a['resume']}, after {b['resume']}")
        ok &= (sd_same == len(a["state_dict"]) == len(b["state_dict"]) and a["log"] == b["log"]
               and a["result"] == b["result"] and all(v == "identical" for v in b["resume"].values()))
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?")
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=CASES)
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = p.parse_args(argv)
    if args.compare:
        before, after = (json.loads(Path(f).read_text()) for f in args.compare)
        return 0 if compare(before, after) else 1
    result = measure(args.cases)
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
