"""kill -9 a search of every strategy (and a training run) at a point of the run, then --resume:
the final architecture equals an uninterrupted run's with the same seed, and the checkpoint left
behind by the killed process always loads.

Every run is a separate process with one thread, so that the killed, resumed and uninterrupted
runs compute alike. The kill point is drawn per case from a fixed seed: after the first
checkpoint appears, the test waits a random 0-1.5 s more (often in the middle of a later epoch or
evaluation, sometimes while a checkpoint is being written).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml

from spnas.runs import load_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SPNAS_DISABLE_PLUGIN_AUTOLOAD": "1"}
BASE = ["--space", "tiny", "--device", "flops", "--quiet", "--batch-size", "128", "--seed", "5"]
CASES = {
    "single-path": ["search", "--strategy", "single-path", "--epochs", "4"],
    "random": ["search", "--strategy", "random", "--epochs", "2", "--bn-batches", "2", "--evaluations", "12"],
    "evolution": ["search", "--strategy", "evolution", "--epochs", "2", "--bn-batches", "2", "--population", "4",
                  "--mutations", "2", "--crossovers", "2", "--generations", "3"],
    "rl": ["search", "--strategy", "rl", "--epochs", "2", "--bn-batches", "2", "--evaluations", "12"],
    "train": ["train", "k3e2 skip | k5e6 k3e3", "--epochs", "6"],
}


def _args(case: str, out) -> list[str]:
    args = [*CASES[case], *BASE, "--out", str(out)]
    if case == "train":  # no latency device or strategy options
        args = [a for a in args if a not in ("--device", "flops")]
    return [sys.executable, "-m", "spnas", *args]


def _run(case: str, out, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([*_args(case, out), *extra], capture_output=True, text=True, timeout=600, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def _final(out) -> str:
    return yaml.safe_load((out / "result.yaml").read_text())["arch"]


@pytest.mark.parametrize("case", list(CASES))
def test_kill_9_then_resume_gives_the_uninterrupted_result(tmp_path, case):
    full = tmp_path / "full"
    _run(case, full)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_args(case, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.monotonic() + 300
        while not (killed / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(random.Random(f"kill-{case}").uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    if proc.returncode == 0:
        pytest.skip(f"{case}: the run finished before the kill (machine too fast for this kill point)")
    assert proc.returncode == -signal.SIGKILL
    state = load_checkpoint(killed / "checkpoint.pt")  # never torn: written by atomic replace
    assert isinstance(state, dict) and state.get("format")
    _run(case, killed, "--resume")
    assert _final(killed) == _final(full)
    if case == "train":
        a, b = (load_checkpoint(d / "model.pt")["model"] for d in (full, killed))
        assert all(a[k].equal(b[k]) for k in a)
