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

from spnas.cli.main import main
from spnas.space.graph import SpaceGraph
from spnas.core.runs import load_checkpoint

pytestmark = pytest.mark.slow  # each test kills and resumes real processes: handed out first

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SPNAS_DISABLE_PLUGIN_AUTOLOAD": "1"}
BASE = ["--space", "tiny", "--device", "flops", "--quiet", "--batch-size", "128", "--seed", "5"]
CASES = {
    # a target in the middle of the range: the result is neither the cheapest nor the dearest
    # network, so the resumed run must reproduce real threshold dynamics, not a collapse
    "single-path": ["search", "--strategy", "single-path", "--epochs", "4", "--target", "70%"],
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


def _run_here(case: str, out) -> None:
    """The uninterrupted run: main() in this process, with one torch thread as the others."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_args(case, out)[3:]) == 0
    finally:
        torch.set_num_threads(threads)


def _final(out) -> str:
    return yaml.safe_load((out / "result.yaml").read_text())["arch"]


@pytest.mark.parametrize("case", list(CASES))
def test_kill_9_then_resume_gives_the_uninterrupted_result(tmp_path, case):
    full = tmp_path / "full"
    _run_here(case, full)
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
    if case == "single-path":
        space = SpaceGraph.load("tiny")
        assert _final(full) not in (str(space.smallest()), str(space.largest()))
        # weights, BatchNorm statistics and thresholds (t_kernel, t_expansion) bitwise equal
        a, b = (load_checkpoint(d / "supernet.pt")["model"] for d in (full, killed))
        assert a.keys() == b.keys() and any("t_expansion" in k for k in a)
        assert all(a[k].equal(b[k]) for k in a)


class _NanAfter:
    """Stands in for torch.nn.functional in one module: cross_entropy turns NaN after ``n`` calls."""

    def __init__(self, real, n):
        self.real, self.n, self.calls = real, n, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def cross_entropy(self, *args, **kwargs):
        self.calls += 1
        loss = self.real.cross_entropy(*args, **kwargs)
        return loss * float("nan") if self.calls > self.n else loss


@pytest.mark.parametrize("module, args", [
    ("spnas.training.train", ["train", "k3e2 skip | k5e6 k3e3", "--space", "tiny", "--epochs", "3", "--batch-size", "128"]),
    ("spnas.training.oneshot", ["search", "--strategy", "random", "--space", "tiny", "--device", "flops", "--epochs", "3",
                       "--batch-size", "128", "--evaluations", "2", "--bn-batches", "1"]),
    ("spnas.strategies.single_path", ["search", "--space", "tiny", "--device", "flops", "--epochs", "3",
                                      "--batch-size", "128"]),
])
def test_a_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(
        tmp_path, capsys, monkeypatch, module, args):
    import importlib

    mod = importlib.import_module(module)
    monkeypatch.setattr(mod, "F", _NanAfter(mod.F, 11 + 3))  # 11 steps per epoch at batch 128: NaN in epoch 2
    out = tmp_path / "run"
    assert main([*args, "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("nan" in err.lower()) and "step 14" in err, err
    state = load_checkpoint(out / "checkpoint.pt")  # the checkpoint of epoch 1, intact
    assert state.get("epoch", state.get("state", {}).get("epoch")) == 1
    assert not (out / "result.yaml").exists()


def test_a_full_disk_gives_a_clear_error_and_keeps_what_was_saved(tmp_path, capsys, monkeypatch):
    """The second checkpoint cannot be written (ENOSPC): one line naming the file, exit 2, and the
    first checkpoint is intact, with no temporary file left next to it."""
    import errno

    import spnas.core.runs

    real_replace, calls = os.replace, {"n": 0}

    def replace(src, dst):
        if str(dst).endswith("checkpoint.pt"):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    monkeypatch.setattr(spnas.core.runs.os, "replace", replace)
    out = tmp_path / "run"
    assert main(["train", "k3e2 skip | k5e6 k3e3", "--space", "tiny", "--epochs", "3", "--batch-size", "128",
                 "--quiet", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'checkpoint.pt'}: cannot write (No space left on device)" in err and err.count("\n") == 1
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.setattr(spnas.core.runs.os, "replace", real_replace)  # space again: the run resumes
    assert main(["train", "k3e2 skip | k5e6 k3e3", "--space", "tiny", "--epochs", "3", "--batch-size", "128",
                 "--quiet", "--out", str(out), "--resume"]) == 0


def test_an_unwritable_run_directory_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["train", "k3e2 skip | k5e6 k3e3", "--space", "tiny", "--epochs", "1", "--quiet",
                     "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err
    assert f"{blocker / 'run'}: cannot create run directory" in err and err.count("\n") == 1


def test_a_torn_checkpoint_is_refused_with_one_line(tmp_path, capsys):
    """Atomic replace means spnas never leaves one, but a copy can be cut short: validation on load."""
    out = tmp_path / "run"
    assert main(["train", "k3e2 skip | k5e6 k3e3", "--space", "tiny", "--epochs", "1", "--batch-size", "128",
                 "--quiet", "--out", str(out)]) == 0
    for name, argv in [("checkpoint.pt", ["train", "k3e2 skip | k5e6 k3e3", "--space", "tiny", "--epochs", "2",
                                          "--quiet", "--out", str(out), "--resume"]),
                       ("model.pt", ["eval", str(out / "model.pt")])]:
        data = (out / name).read_bytes()
        (out / name).write_bytes(data[: len(data) // 2])
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{out / name}: not a valid spnas checkpoint" in err and err.count("\n") == 1, err
