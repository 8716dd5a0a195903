"""Time models in a clean process: ``python timing_worker.py JOB.json RESULT.json``.

Measured devices (:mod:`spnas.latency.profiling`) convert models in the main process, which by then holds
TensorFlow, PyTorch and every model it converted. Timing there gave bimodal results: in one
validation run a quarter of the networks matched the table's prediction within 2.4 %, and the
others were 25-30 % slower than the same networks timed alone. This worker loads only the
runtime (LiteRT or ONNX Runtime) and NumPy, as ``benchmark_model`` does on a phone. It times each
model with a fresh interpreter, in ``rounds`` interleaved passes, and reports the median of each
model's round medians.

This file imports nothing from spnas (importing the package would load PyTorch); the device
code imports :func:`time_runner`, :func:`pinned` and :func:`make_runner` from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

Runner = Callable[[], Any]


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of repeated runs of one model, in milliseconds."""

    median: float
    mean: float
    std: float
    min: float
    runs: int


def time_runner(run: Runner, *, warmup: int = 10, runs: int = 30, min_time: float = 0.05,
                max_runs: int = 100_000, between: Runner | None = None) -> Timing:
    """Warm up, then run until ``runs`` runs and ``min_time`` seconds (of timed runs) are both
    reached; ``between`` runs untimed before each timed run (e.g. to evict the caches)."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    clock = time.perf_counter
    total = 0.0
    while len(times) < max_runs and (len(times) < runs or total < min_time):
        if between is not None:
            between()
        t = clock()
        run()
        dt = clock() - t
        total += dt
        times.append(dt * 1e3)
    return Timing(statistics.median(times), statistics.fmean(times), statistics.pstdev(times), min(times), len(times))


@contextlib.contextmanager
def pinned(threads: int) -> Iterator[None]:
    """Pin the process to one core while a single-threaded runtime is timed (less jitter)."""
    if threads != 1 or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def make_runner(runtime: str, content: bytes, settings: dict[str, Any]) -> Runner:
    """A zero-argument callable that runs one inference of ``content`` with inputs filled."""
    import numpy as np

    rng = np.random.default_rng(0)
    if runtime == "tflite":
        from ai_edge_litert import interpreter as litert

        kind = (litert.OpResolverType.AUTO if settings.get("xnnpack", True)
                else litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        it = litert.Interpreter(model_content=content, num_threads=settings.get("threads", 1),
                                experimental_op_resolver_type=kind)
        it.allocate_tensors()
        for d in it.get_input_details():
            it.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
        return it.invoke
    if runtime == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = settings.get("threads", 1)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(content, sess_options=opts, providers=["CPUExecutionProvider"])
        feed = {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
                for i in sess.get_inputs()}
        return lambda: sess.run(None, feed)
    raise ValueError(f"unknown runtime {runtime!r}")


def time_models(runtime: str, paths: list[str], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Each model timed in ``rounds`` interleaved passes, a fresh runner each time."""
    rounds: list[list[Timing]] = [[] for _ in paths]
    kwargs = {k: settings[k] for k in ("warmup", "runs", "min_time") if k in settings}
    with pinned(settings.get("threads", 1)):
        for _ in range(settings.get("rounds", 3)):
            for i, path in enumerate(paths):
                with open(path, "rb") as f:
                    run = make_runner(runtime, f.read(), settings)
                rounds[i].append(time_runner(run, **kwargs))
                del run
    out = []
    for timings in rounds:
        timings = sorted(timings, key=lambda t: t.median)
        out.append(asdict(timings[len(timings) // 2]))  # the median round
    return out


def main(argv: list[str]) -> int:
    job_path, result_path = argv
    with open(job_path) as f:
        job = json.load(f)
    result = time_models(job["runtime"], job["models"], job["settings"])
    with open(result_path, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
