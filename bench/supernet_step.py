"""What one supernet training step costs, against the fixed network it can become.

Measures, in one run, a full training step (forward, cross-entropy, backward, SGD step; train
mode) of:

* ``fixed``: the stand-alone all-k5e6 network (``ChildNet(space, space.largest())``), the
  reference: a threshold-mode superkernel computes exactly this network's convolutions;
* ``threshold``: the Single-Path supernet in threshold mode, the search step itself
  (``net.decide()`` and ``net(x, decisions=...)``, Stamoulis et al. 2019, Eq. 2-3), at the
  search's start (thresholds 0: every decision on);
* ``threshold-mixed``: the same with the thresholds forced to a random architecture (smaller
  kernels, fewer channels, skipped layers): the cost must not depend on the decisions;
* ``fixed-choice``: the same supernet on a new uniformly random path every step (SPOS-style
  sampling, ``net(x, arch=space.random(rng))``);
* ``multipath``: a DARTS-style supernet that runs every candidate op (``bench/multipath.py``).

Time: every variant is built in this process and warmed up; then ``--repeats`` rounds each run
``--block`` steps of every variant (in an order rotated every round), so the slow and fast phases
of a shared machine hit every variant alike (see :func:`time_steps`). Reported: median and
interquartile range of the step time, the ratio of medians against ``fixed``, and the per-round
ratios (a round's step against that round's ``fixed`` step): median, quartiles and a bootstrap
95 % interval of that median.

Memory: each variant in a fresh subprocess (peaks do not mix), as the peak of live tensor bytes
(the CPU allocator's events recorded by ``torch.profiler``, from before the model is built to
after the last step: parameters, gradients, optimizer state, activations) and, as a cross-check,
the increase of the process's peak RSS over its RSS before the build. See docs/performance.md.

Example::

    python bench/supernet_step.py --space spnas-cifar --batch 32 --threads 2 --repeats 150 \\
        --out bench/results/supernet_step.json --doc docs/performance.md
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from spnas.supernet.builder import ChildNet, Supernet
from spnas.space.graph import SpaceGraph

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import load_snapshot, machine_info  # noqa: E402  (bench/ is not a package)
from multipath import MultiPathNet  # noqa: E402

VARIANTS = ("fixed", "threshold", "threshold-mixed", "fixed-choice", "multipath")
LABELS = {
    "fixed": "fixed all-k5e6 network (reference)",
    "threshold": "Single-Path supernet, threshold mode (search step)",
    "threshold-mixed": "the same, thresholds set to a random architecture",
    "fixed-choice": "Single-Path supernet, random path per step (SPOS)",
    "multipath": "multi-path supernet, every op (DARTS-style)",
}
TIME_LIMIT, MEMORY_LIMIT = 1.05, 1.10  # the requirement: threshold step vs fixed step
BUSY_PRESSURE = 10.0  # % of time some task waited for a CPU (/proc/pressure/cpu): other work was running
MARK_BEGIN, MARK_END = "<!-- supernet_step:begin -->", "<!-- supernet_step:end -->"
Step = Callable[[], None]


def build(name: str, space: SpaceGraph, batch: int, seed: int) -> tuple[nn.Module, Step]:
    """One variant's model and its training step (the same data, loss and optimizer for all)."""
    torch.manual_seed(seed)
    res = space.spec.resolution
    x = torch.randn(batch, space.spec.in_chs, res, res)
    y = torch.randint(0, space.spec.num_classes, (batch,))
    forward: Callable[[], Tensor]
    if name == "fixed":
        model: nn.Module = ChildNet(space, space.largest())
        forward = lambda: model(x)  # noqa: E731
    elif name in ("threshold", "threshold-mixed"):
        model = net = Supernet(space)
        if name == "threshold-mixed":
            net.force(space.random(random.Random(seed)))
        forward = lambda: net(x, decisions=net.decide())  # noqa: E731
    elif name == "fixed-choice":
        model = net = Supernet(space)
        rng = random.Random(seed)
        forward = lambda: net(x, arch=space.random(rng))  # noqa: E731
    elif name == "multipath":
        model = MultiPathNet(space)
        forward = lambda: model(x)  # noqa: E731
    else:
        raise ValueError(f"unknown variant {name!r}; available: {', '.join(VARIANTS)}")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(), y).backward()
        opt.step()

    return model, step


def time_steps(steps: dict[str, Step], rounds: int, block: int, warmup: int) -> dict[str, list[list[float]]]:
    """Seconds per step of every variant: ``rounds`` rounds, each running ``block`` consecutive
    steps of every variant, in an order rotated every round.

    This machine runs at a few speeds that last seconds (other guests, frequency): short rounds
    put every variant in every phase alike, and a round's variants run close enough in time for
    their ratio to cancel the phase.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    names = list(steps)
    times: dict[str, list[list[float]]] = {n: [] for n in names}
    gc.collect()
    gc.disable()  # a collection inside one variant's step would be charged to it alone
    try:
        for r in range(rounds):
            for i in range(len(names)):
                name = names[(i + r) % len(names)]
                timed = []
                for _ in range(block):
                    t0 = time.perf_counter()
                    steps[name]()
                    timed.append(time.perf_counter() - t0)
                times[name].append(timed)
    finally:
        gc.enable()
    return times


def _bootstrap_median(values: list[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95 % interval of the median of ``values`` (percentile bootstrap)."""
    rng = random.Random(seed)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]


def time_stats(times: dict[str, list[list[float]]], ref: str = "fixed") -> dict[str, dict[str, float]]:
    """Median and quartiles (ms) of all steps, the ratio of medians against ``ref``, and the
    per-round ratios (a round's median step against ``ref``'s): median, quartiles, 95 % interval."""
    out = {}
    ref_median = statistics.median(t for block in times[ref] for t in block)
    for name, blocks in times.items():
        ts = [t for block in blocks for t in block]
        q1, med, q3 = statistics.quantiles(ts, n=4)
        paired = [statistics.median(b) / statistics.median(r) for b, r in zip(blocks, times[ref])]
        p1, _, p3 = statistics.quantiles(paired, n=4)
        lo, hi = _bootstrap_median(paired)
        out[name] = {
            "median_ms": 1e3 * med, "q1_ms": 1e3 * q1, "q3_ms": 1e3 * q3, "iqr_ms": 1e3 * (q3 - q1),
            "min_ms": 1e3 * min(ts), "steps": len(ts), "time_ratio": med / ref_median,
            "paired_ratio_median": statistics.median(paired), "paired_ratio_q1": p1, "paired_ratio_q3": p3,
            "paired_ratio_ci95": [lo, hi],
        }
    return out


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _live_bytes_peak(prof: torch.profiler.profile) -> tuple[int, int]:
    """(peak, final) live tensor bytes, from the profiler's allocation and free events in order."""
    events = prof.profiler.kineto_results.events()
    deltas = sorted((e.start_ns(), e.nbytes()) for e in events if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in deltas:
        live += nbytes
        peak = max(peak, live)
    return peak, live


def _count_ops(step: Step) -> tuple[int, int]:
    """(aten ops, autograd nodes) run by one step: a noise-free measure of the per-op overhead.
    Nested ops count each (``aten::conv2d`` calls ``aten::convolution``, ...)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step()
    names = [e.name() for e in prof.profiler.kineto_results.events()]
    return (sum(n.startswith("aten::") for n in names),
            sum(n.startswith("autograd::engine::evaluate_function") for n in names))


def measure_memory(name: str, space: SpaceGraph, batch: int, seed: int, steps: int,
                   builder: Callable[[str, SpaceGraph, int, int], tuple[nn.Module, Step]] = build,
                   ) -> dict[str, float]:
    """Peak memory of ``steps`` training steps of one variant (run this in a fresh process).
    ``builder`` makes the variant's model and step (``bench/peers.py`` passes its own)."""
    rss0 = _proc_status_kb("VmRSS")
    try:  # reset the peak RSS to now (Linux >= 4.0), so that the import's transients do not count
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    model, step = builder(name, space, batch, seed)
    for _ in range(steps + 1):
        step()
    rss_peak = _proc_status_kb("VmHWM")
    del model, step
    gc.collect()
    cpu = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=cpu, profile_memory=True) as prof:
        model, step = builder(name, space, batch, seed)
        step()  # the first step allocates the gradients and the momentum buffers
        for _ in range(steps):
            step()
    peak, final = _live_bytes_peak(prof)
    n_ops, n_nodes = _count_ops(step)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "peak_alloc_mb": peak / 2**20, "state_mb": final / 2**20,
        "rss_increase_mb": (rss_peak - rss0) / 2**10,
        "aten_ops_per_step": n_ops, "autograd_nodes_per_step": n_nodes,
    }


def memory_in_subprocess(name: str, args: argparse.Namespace) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--space", args.space, "--batch", str(args.batch),
           "--threads", str(args.threads), "--seed", str(args.seed), "--memory-steps", str(args.memory_steps),
           "--memory-of", name]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown_table(result: dict, reference: str = "fixed", digits: int = 3) -> str:
    """The results as a markdown table (rows in :data:`VARIANTS` order), ratios against ``reference``
    (``bench/peers.py`` uses it with its own reference and precision)."""
    rows = [f"| Variant | Step, median (ms) | IQR (ms) | Time vs {reference} | Per-round ratio (95 % interval) "
            f"| Peak tensors (MB) | Memory vs {reference} | Peak RSS increase (MB) | Parameters |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    d = digits
    for v in result["variants"].values():
        lo, hi = v["paired_ratio_ci95"]
        rows.append(
            f"| {v['label']} | {v['median_ms']:.1f} | {v['iqr_ms']:.1f} | {v['time_ratio']:.{d}f}x "
            f"| {v['paired_ratio_median']:.{d}f}x ({lo:.{d}f}-{hi:.{d}f}) "
            f"| {v['peak_alloc_mb']:.1f} | {v['memory_ratio']:.{d}f}x | {v['rss_increase_mb']:.0f} "
            f"| {v['params']:,} |")
    return "\n".join(rows)


def verdict_line(result: dict) -> str:
    """The requirement's check, in one sentence (empty when threshold mode was not measured)."""
    if "threshold" not in result["variants"]:
        return ""
    th, req = result["variants"]["threshold"], result["requirement"]
    lo, hi = th["paired_ratio_ci95"]
    return (f"Threshold mode against the fixed network: time {th['time_ratio']:.3f}x (per round "
            f"{th['paired_ratio_median']:.3f}x, 95 % interval {lo:.3f}-{hi:.3f}; limit {TIME_LIMIT}x, "
            f"{'met' if req['time_ok'] else 'NOT met'}), peak memory {th['memory_ratio']:.3f}x "
            f"(limit {MEMORY_LIMIT}x, {'met' if req['memory_ok'] else 'NOT met'}).")


def doc_section(result: dict) -> str:
    """The generated part of docs/performance.md: run facts, the table and the verdict."""
    m, c = result["machine"], result["config"]
    return "\n".join([
        MARK_BEGIN,
        f"Run of {m['date']} on {m['cpu']} ({m['cpus']} CPUs visible), torch {m['torch']}, "
        f"{c['threads']} threads; space `{c['space']}`, batch {c['batch']}; {c['warmup']} warm-up steps, "
        f"then "
        f"{c['repeats']} rounds of {c['block']} step(s) per variant; load average "
        f"{m['load_before']['loadavg']} before the timing, {m['load_after']['loadavg']} after; code at "
        f"`{m['git']}`. Command: `{result['command']}`.",
        "",
        markdown_table(result),
        "",
        verdict_line(result),
        MARK_END,
    ])


def update_doc(path: Path, section: str, marks: tuple[str, str] = (MARK_BEGIN, MARK_END)) -> None:
    """Replace the section of ``path`` between ``marks`` (append it when they are missing)."""
    begin, end = marks
    text = path.read_text() if path.exists() else "# Performance\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def run(args: argparse.Namespace) -> dict:
    """Time every variant in this process, measure each one's memory in a subprocess."""
    space = SpaceGraph.load(args.space)
    machine = machine_info(args.threads)
    machine["load_before"] = load_snapshot()
    steps = {name: build(name, space, args.batch, args.seed)[1] for name in args.variants}
    times = time_stats(time_steps(steps, args.repeats, args.block, args.warmup))
    machine["load_after"] = load_snapshot()
    variants = {}
    for name in args.variants:
        mem = memory_in_subprocess(name, args)
        variants[name] = {"label": LABELS[name], **times[name], **mem}
    for v in variants.values():
        v["memory_ratio"] = v["peak_alloc_mb"] / variants["fixed"]["peak_alloc_mb"]
    th = variants.get("threshold")
    return {
        "benchmark": "supernet_step",
        "command": " ".join(["python", "bench/supernet_step.py", *sys.argv[1:]]),
        "config": {"space": args.space, "batch": args.batch, "threads": args.threads, "repeats": args.repeats,
                   "block": args.block, "warmup": args.warmup, "seed": args.seed,
                   "memory_steps": args.memory_steps,
                   "optimizer": "SGD(lr=0.01, momentum=0.9)", "loss": "cross-entropy", "keep_prob": 1.0},
        "machine": machine,
        "variants": variants,
        "requirement": {"time_ratio_max": TIME_LIMIT, "memory_ratio_max": MEMORY_LIMIT,
                        "time_ok": bool(th and th["time_ratio"] <= TIME_LIMIT),
                        "memory_ok": bool(th and th["memory_ratio"] <= MEMORY_LIMIT)},
    }


def step_bench_parser(doc: str, *, repeats: int, out: str, variants: tuple[str, ...]) -> argparse.ArgumentParser:
    """The options of a step benchmark (this one and ``bench/peers.py``)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--space", default="spnas-cifar", help="registered space name or YAML path")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    p.add_argument("--repeats", type=int, default=repeats, help="rounds: a block of steps of every variant each")
    p.add_argument("--block", type=int, default=1, help="consecutive steps of a variant in a round")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps of every variant first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-steps", type=int, default=4, help="steps measured for memory, after one more")
    p.add_argument("--variants", nargs="+", default=list(variants), choices=variants)
    p.add_argument("--out", type=Path, default=Path(out))
    p.add_argument("--doc", type=Path, default=None, help="rewrite the marked section of this markdown file")
    p.add_argument("--memory-of", choices=variants, help=argparse.SUPPRESS)  # internal: one subprocess
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = step_bench_parser(__doc__, repeats=150, out="bench/results/supernet_step.json", variants=VARIANTS)
    args = p.parse_args(argv)
    if "fixed" not in args.variants:
        p.error("--variants must include 'fixed' (the reference of every ratio)")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_of:
        space = SpaceGraph.load(args.space)
        print(json.dumps(measure_memory(args.memory_of, space, args.batch, args.seed, args.memory_steps)))
        return
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(result))
    print(verdict_line(result))
    pressure = [result["machine"][k].get("cpu_pressure_avg60", 0.0) for k in ("load_before", "load_after")]
    if max(pressure) > BUSY_PRESSURE:
        print(f"warning: the machine was busy (CPU pressure {max(pressure):.0f} % over 60 s); the timings "
              "are noisier than usual, run again when it is idle", file=sys.stderr)
    if args.doc is not None:
        update_doc(args.doc, doc_section(result))


if __name__ == "__main__":
    main()
