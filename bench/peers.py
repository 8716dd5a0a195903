"""The Single-Path superkernel step against NNI 3.0's one-shot supernets, on one space.

Measures, in one run, a full training step (forward, cross-entropy, backward, optimizer step;
train mode) of:

* ``threshold``: the spnas supernet in threshold mode, the search step (Stamoulis et al. 2019,
  Eq. 2-3), built as ``bench/supernet_step.py`` builds it: the reference of every ratio;
* ``fixed``: the stand-alone all-k5e6 network the superkernel computes;
* ``fixed-choice``: the spnas supernet on a new uniformly random path every step (SPOS);
* ``nni-darts``, ``nni-proxyless``, ``nni-random``: NNI 3.0 supernets of the same space, written
  with NNI's own API (a :class:`nni.nas.nn.pytorch.ModelSpace` with one
  :class:`~nni.nas.nn.pytorch.LayerChoice` per searchable layer) and turned into supernets by
  the strategies ``DARTS``, ``Proxyless`` and ``RandomOneShot`` (``strategy.mutate_model``,
  which puts ``DifferentiableMixedLayer``, ``ProxylessMixedLayer`` and ``PathSamplingLayer`` in
  place of the choices). The candidates are the spnas ops themselves (one
  :class:`~spnas.supernet.superkernel.MBConv` per kernel x expansion, ``nn.Identity`` for the skip-op
  where the layer may be skipped); the fixed layers are those of the all-k5e6 network.

The NNI steps do what NNI's Lightning modules do per training batch, without NNI's experiment
runner or a Lightning trainer: ``resample()`` on every supernet module (as
``BaseOneShotLightningModule.resample``), then the forward and backward passes; DARTS and
Proxyless step their architecture weights with NNI's architecture optimizer (Adam, lr 3e-4,
betas (0.5, 0.999), weight decay 1e-3, as ``DartsLightningModule``) from the same backward pass,
the first-order form with one pass per step (``DartsLightningModule.training_step`` runs a second
forward and backward pass on a validation batch for the architecture step; that is left out, so
NNI's own loop costs more than measured here). Weights: ``SGD(lr=0.01, momentum=0.9)`` in every
variant.

Timing and memory reuse ``bench/supernet_step.py``: interleaved rotated rounds
(:func:`~supernet_step.time_steps`), peak live tensor bytes and peak RSS in a fresh subprocess
per variant (:func:`~supernet_step.measure_memory`). Needs the ``bench`` extra (NNI).

Example::

    python bench/peers.py --space spnas-cifar --batch 32 --threads 2 --repeats 100 \\
        --out bench/results/peers.json --doc docs/performance.md
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spnas.supernet.builder import ChildNet
from spnas.space.graph import LayerNode, SpaceGraph
from spnas.supernet.superkernel import MBConv

sys.path.insert(0, str(Path(__file__).resolve().parent))
import supernet_step  # noqa: E402  (bench/ is not a package)
from machine import load_snapshot, machine_info  # noqa: E402

# NNI 3.0 wraps every class of torch.nn when imported and warns about the classes of torch >= 2.5
# that are not modules (nn.Buffer, ...); the wrappers of those are not used here.
warnings.filterwarnings("ignore", message=r".*is found to be not a nn\.Module", category=RuntimeWarning)

SPNAS_VARIANTS = ("threshold", "fixed", "fixed-choice")
NNI_STRATEGIES = {"nni-darts": "DARTS", "nni-proxyless": "Proxyless", "nni-random": "RandomOneShot"}
VARIANTS = SPNAS_VARIANTS + tuple(NNI_STRATEGIES)
REF = "threshold"
LABELS = {
    "threshold": "spnas superkernel, threshold mode (reference)",
    "fixed": "spnas fixed all-k5e6 network",
    "fixed-choice": "spnas supernet, uniform random path (SPOS)",
    "nni-darts": "NNI 3.0 DARTS supernet",
    "nni-proxyless": "NNI 3.0 Proxyless supernet",
    "nni-random": "NNI 3.0 RandomOneShot supernet",
}
GOAL_SPEEDUP, GOAL_MEMORY = 2.7, 0.4  # the issue: superkernel >= 2.7x faster than NNI DARTS, <= 0.4x its memory
ARC_LR, ARC_BETAS, ARC_WEIGHT_DECAY = 3.0e-4, (0.5, 0.999), 1.0e-3  # DartsLightningModule's defaults
MARKS = ("<!-- peers:begin -->", "<!-- peers:end -->")
Step = supernet_step.Step


def _candidates(layer: LayerNode, act: str) -> dict[str, nn.Module]:
    """One module per op of a searchable layer, keyed by the op's name (``k3e6``, ``skip``)."""
    return {str(op): nn.Identity() if op.is_skip else MBConv(layer.in_chs, layer.out_chs, layer.stride, op, act)
            for op in layer.ops}


def nni_model_space(space: SpaceGraph) -> nn.Module:
    """The space as an NNI 3.0 model space: a ``LayerChoice`` per searchable layer, the fixed
    layers (stem, fixed blocks, head, classifier) those of the all-k5e6 network."""
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace

    class SpaceNet(ModelSpace):  # NNI needs the choices created inside a ModelSpace's __init__
        def __init__(self) -> None:
            super().__init__()
            layers = list(ChildNet(space, space.largest()).layers)
            for i, layer in enumerate(space.layers):
                if layer.searchable:
                    layers[i] = LayerChoice(_candidates(layer, space.spec.activation), label=f"layer{i}")
            self.layers = nn.Sequential(*layers)

        def forward(self, x: Tensor) -> Tensor:
            return self.layers(x)

    return SpaceNet()


def nni_supernet(name: str, space: SpaceGraph) -> tuple[nn.Module, list, list[nn.Parameter]]:
    """(supernet, its supernet modules, architecture parameters) of one NNI one-shot strategy."""
    from nni.nas import strategy
    from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule

    net = getattr(strategy, NNI_STRATEGIES[name])().mutate_model(nni_model_space(space))
    modules = [m for m in net.modules() if isinstance(m, BaseSuperNetModule)]
    arch = list({id(p): p for m in modules if hasattr(m, "arch_parameters") for p in m.arch_parameters()}.values())
    return net, modules, arch


def build(name: str, space: SpaceGraph, batch: int, seed: int) -> tuple[nn.Module, Step]:
    """One variant's model and training step (spnas variants as ``bench/supernet_step.py`` builds them)."""
    if name in SPNAS_VARIANTS:
        return supernet_step.build(name, space, batch, seed)
    if name not in NNI_STRATEGIES:
        raise ValueError(f"unknown variant {name!r}; available: {', '.join(VARIANTS)}")
    torch.manual_seed(seed)
    random.seed(seed)  # NNI's PathSamplingLayer and ProxylessMixedLayer sample with the random module
    res = space.spec.resolution
    x = torch.randn(batch, space.spec.in_chs, res, res)
    y = torch.randint(0, space.spec.num_classes, (batch,))
    net, modules, arch = nni_supernet(name, space)
    net.train()
    arch_ids = {id(p) for p in arch}
    opt = torch.optim.SGD([p for p in net.parameters() if id(p) not in arch_ids], lr=0.01, momentum=0.9)
    arch_opt = torch.optim.Adam(arch, ARC_LR, betas=ARC_BETAS, weight_decay=ARC_WEIGHT_DECAY) if arch else None

    def step() -> None:
        memo: dict = {}
        for m in modules:  # BaseOneShotLightningModule.resample: a no-op for DARTS
            memo.update(m.resample(memo=memo))
        opt.zero_grad(set_to_none=True)
        if arch_opt is not None:
            arch_opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
        if arch_opt is not None:
            arch_opt.step()

    return net, step


def memory_in_subprocess(name: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--space", args.space, "--batch", str(args.batch),
           "--threads", str(args.threads), "--seed", str(args.seed), "--memory-steps", str(args.memory_steps),
           "--memory-of", name]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def versions() -> dict[str, str]:
    return {pkg: version(pkg) for pkg in ("nni", "torch", "pytorch-lightning", "filelock")}


def markdown_table(result: dict) -> str:
    """The results as a markdown table, ratios against the superkernel (rows in :data:`VARIANTS` order)."""
    return supernet_step.markdown_table(result, reference="superkernel", digits=2)


def verdict_line(result: dict) -> str:
    """The issue's goal, checked against NNI's DARTS supernet (empty when it was not measured)."""
    goal = result["goal"]
    if "speedup_vs_nni_darts" not in goal:
        return ""
    return (f"Superkernel against NNI's DARTS supernet: {goal['speedup_vs_nni_darts']:.2f}x faster "
            f"(goal at least {GOAL_SPEEDUP}x, {'met' if goal['time_ok'] else 'NOT met'}), "
            f"{goal['memory_vs_nni_darts']:.2f}x its peak memory "
            f"(goal at most {GOAL_MEMORY}x, {'met' if goal['memory_ok'] else 'NOT met'}).")


def doc_section(result: dict) -> str:
    m, c, v = result["machine"], result["config"], result["versions"]
    return "\n".join([
        MARKS[0],
        f"Run of {m['date']} on {m['cpu']} ({m['cpus']} CPUs visible), {c['threads']} threads; nni {v['nni']}, "
        f"torch {v['torch']}, pytorch-lightning {v['pytorch-lightning']}, filelock {v['filelock']}; space "
        f"`{c['space']}`, batch {c['batch']}; {c['warmup']} warm-up steps, then {c['repeats']} rounds of "
        f"{c['block']} step(s) per variant; load average {m['load_before']['loadavg']} before the timing, "
        f"{m['load_after']['loadavg']} after; {result['seconds']:.0f} s in all; code at `{m['git']}`. "
        f"Command: `{result['command']}`.",
        "",
        markdown_table(result),
        "",
        verdict_line(result),
        MARKS[1],
    ])


def run(args: argparse.Namespace) -> dict:
    """Time every variant in this process, measure each one's memory in a subprocess."""
    space = SpaceGraph.load(args.space)
    machine = machine_info(args.threads)
    machine["load_before"] = load_snapshot()
    steps = {name: build(name, space, args.batch, args.seed)[1] for name in args.variants}
    times = supernet_step.time_stats(supernet_step.time_steps(steps, args.repeats, args.block, args.warmup), ref=REF)
    machine["load_after"] = load_snapshot()
    variants = {}
    for name in args.variants:
        variants[name] = {"label": LABELS[name], **times[name], **memory_in_subprocess(name, args)}
    for v in variants.values():
        v["memory_ratio"] = v["peak_alloc_mb"] / variants[REF]["peak_alloc_mb"]
    goal: dict[str, object] = {"speedup_min": GOAL_SPEEDUP, "memory_ratio_max": GOAL_MEMORY}
    if "nni-darts" in variants:
        darts = variants["nni-darts"]
        goal.update(speedup_vs_nni_darts=darts["time_ratio"], memory_vs_nni_darts=1 / darts["memory_ratio"])
        goal.update(time_ok=goal["speedup_vs_nni_darts"] >= GOAL_SPEEDUP,
                    memory_ok=goal["memory_vs_nni_darts"] <= GOAL_MEMORY)
    return {
        "benchmark": "peers",
        "command": " ".join(["python", "bench/peers.py", *sys.argv[1:]]),
        "config": {"space": args.space, "batch": args.batch, "threads": args.threads, "repeats": args.repeats,
                   "block": args.block, "warmup": args.warmup, "seed": args.seed,
                   "memory_steps": args.memory_steps, "optimizer": "SGD(lr=0.01, momentum=0.9)",
                   "arch_optimizer": f"Adam(lr={ARC_LR}, betas={ARC_BETAS}, weight_decay={ARC_WEIGHT_DECAY})",
                   "loss": "cross-entropy"},
        "machine": machine,
        "versions": versions(),
        "variants": variants,
        "goal": goal,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = supernet_step.step_bench_parser(__doc__, repeats=100, out="bench/results/peers.json", variants=VARIANTS)
    args = p.parse_args(argv)
    if REF not in args.variants:
        p.error(f"--variants must include {REF!r} (the reference of every ratio)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_of:
        space = SpaceGraph.load(args.space)
        mem = supernet_step.measure_memory(args.memory_of, space, args.batch, args.seed, args.memory_steps,
                                           builder=build)
        print(json.dumps(mem))
        return
    try:
        import nni  # noqa: F401
    except ImportError:
        print("bench/peers.py needs NNI: pip install -e '.[bench]'", file=sys.stderr)
        raise SystemExit(2)
    t0 = time.perf_counter()
    result = run(args)
    result["seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))
    print(verdict_line(result))
    pressure = [result["machine"][k].get("cpu_pressure_avg60", 0.0) for k in ("load_before", "load_after")]
    if max(pressure) > supernet_step.BUSY_PRESSURE:
        print(f"warning: the machine was busy (CPU pressure {max(pressure):.0f} % over 60 s); the timings "
              "are noisier than usual, run again when it is idle", file=sys.stderr)
    if args.doc is not None:
        supernet_step.update_doc(args.doc, doc_section(result), marks=MARKS)


if __name__ == "__main__":
    main()
