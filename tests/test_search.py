"""The single-path search end to end on the tiny space (digits resized to 16x16, flops device)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml

from spnas.cli.main import main
from spnas.space.graph import SpaceGraph
from spnas.core.runs import load_checkpoint

FAST = ["--space", "tiny", "--device", "flops", "--epochs", "3", "--batch-size", "128", "--quiet"]
#: tests of where the search lands: 1 warm-up epoch and 1 with the runtime term (as FAST's 2 + 1)
LANDING = ["--epochs", "2"]


def _search(tmp_path, name, *extra):
    out = tmp_path / name
    assert main(["search", *FAST, "--out", str(out), *extra]) == 0
    return out, yaml.safe_load((out / "result.yaml").read_text())


@pytest.fixture(scope="module")
def seed0(tmp_path_factory):
    """One search with the default seed (0), shared by the tests that need one."""
    torch.set_num_threads(1)
    return _search(tmp_path_factory.mktemp("seed0"), "run")


def test_run_directory_and_result(seed0):
    out, result = seed0
    assert {p.name for p in out.iterdir()} >= {"config.yaml", "log.jsonl", "checkpoint.pt", "result.yaml"}
    space = SpaceGraph.load("tiny")
    arch = space.parse(result["arch"])
    assert (result["params"], result["macs"]) == space.cost(arch)
    assert result["units"] == "MMACs" and 0.0 <= result["supernet_val_accuracy"] <= 1.0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["options"]["epochs"] == 3 and config["seed"] == 0 and config["space"] == "tiny"
    steps = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    per_step = [r for r in steps if "ce" in r]
    assert len(per_step) == 3 * (1437 // 128) and per_step[-1]["step"] == len(per_step)
    assert {"ce", "R", "lambda", "indicators"} <= set(per_step[-1])
    assert len(per_step[-1]["indicators"]) == space.num_searchable
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["state"]["epoch"] == 3


def test_same_seed_same_result(seed0, tmp_path):
    torch.set_num_threads(1)
    first, a = seed0
    _, b = _search(tmp_path, "b", "--seed", "0")
    assert a["arch"] == b["arch"] and a["supernet_val_accuracy"] == b["supernet_val_accuracy"]
    la = (first / "log.jsonl").read_text()
    assert la == (tmp_path / "b" / "log.jsonl").read_text()


def test_resume_after_interruption_gives_the_uninterrupted_result(seed0, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    full_dir, full = seed0
    from spnas.core.runs import RunDir

    original = RunDir.save_checkpoint
    calls = {"n": 0}

    def crash_after_first_epoch(self, *args, **kwargs):
        original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt  # as if the process died right after the checkpoint

    monkeypatch.setattr(RunDir, "save_checkpoint", crash_after_first_epoch)
    out = tmp_path / "resumed"
    assert main(["search", *FAST, "--out", str(out), "--seed", "0"]) == 130
    assert not (out / "result.yaml").exists()
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
    monkeypatch.setattr(RunDir, "save_checkpoint", original)
    assert main(["search", *FAST, "--out", str(out), "--seed", "0"]) == 2  # refuses to overwrite
    assert main(["search", *FAST, "--out", str(out), "--seed", "0", "--resume"]) == 0
    resumed = yaml.safe_load((out / "result.yaml").read_text())
    assert resumed["arch"] == full["arch"]
    assert resumed["supernet_val_accuracy"] == full["supernet_val_accuracy"]
    assert (out / "log.jsonl").read_text() == (full_dir / "log.jsonl").read_text()


@pytest.mark.parametrize("target", [0.6, 0.9])
def test_target_mode_lands_in_the_window(tmp_path, target):
    torch.set_num_threads(1)
    _, result = _search(tmp_path, f"t{target}", "--target", str(target), *LANDING)
    assert 0.95 * target <= result["predicted_latency"] <= target
    assert result["target"] == target


def test_lambda_trades_cost_for_accuracy(tmp_path):
    """A larger lambda never gives a costlier network (same seed, same data)."""
    torch.set_num_threads(1)
    _, low = _search(tmp_path, "low", "--lambda", "0", *LANDING)
    _, high = _search(tmp_path, "high", "--lambda", "0.05", *LANDING)
    assert high["predicted_latency"] < low["predicted_latency"]


def test_target_mode_read_out_itself_lands_near_the_target(tmp_path):
    """The search's own hard read-out, before the knapsack projection, within [0.9 T, T] and the
    projection changing at most 2 layers (docs/quality.md). A case measured to work: tiny, 70 %
    of its flops range, 2 of 4 epochs of warm-up (seed 0)."""
    torch.set_num_threads(1)
    out, result = _search(tmp_path, "t70", "--target", "70%", "--epochs", "4", "--batch-size", "64",
                          "--warmup-epochs", "2")
    space = SpaceGraph.load("tiny")
    from spnas.devices.flops import FlopsDevice
    from spnas.latency.runtime import RuntimeModel

    runtime = RuntimeModel(space, FlopsDevice().latency_table(space))
    lo, hi = runtime.bounds()
    target = lo + 0.7 * (hi - lo)
    assert result["target"] == pytest.approx(target, rel=1e-12)
    readout = runtime.predict(space.parse(result["readout_arch"]))
    assert readout == pytest.approx(result["readout_latency"], rel=1e-12)
    assert 0.9 * target <= readout <= target
    assert result["layers_changed_by_projection"] <= 2
    assert 0.95 * target <= result["predicted_latency"] <= target
    report = (out / "report.md").read_text()  # the report shows the read-out too, and the penalty used
    assert f"{readout / target:.3f} T)" in report and "target penalty | 20 x (log(R / T*) / 0.5)^2" in report


def test_threshold_schedules_and_the_target_penalty_by_hand():
    from spnas.strategies.single_path import _threshold_schedule, target_penalty

    settle = _threshold_schedule("settle", total=100, warm=60)  # 60 warm-up steps, then 40 of cosine
    assert [settle(s) for s in (0, 59, 60, 80, 100)] == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.0], abs=1e-12)
    cosine = _threshold_schedule("cosine", total=100, warm=60)  # the authors': over the whole run
    assert [cosine(s) for s in (0, 50, 100)] == pytest.approx([1.0, 0.5, 0.0], abs=1e-12)
    assert _threshold_schedule("constant", 100, 60)(99) == 1.0
    # (log(R / T*) / s)^2: zero at T*, 1 at R = T* e^s, and its gradient pushes R towards T* from both sides
    t_star, scale = 2.0, 0.5
    assert float(target_penalty(torch.tensor(2.0), t_star, scale)) == 0.0
    assert float(target_penalty(torch.tensor(2.0 * math.exp(0.5)), t_star, scale)) == pytest.approx(1.0)
    for r, sign in ((3.0, 1.0), (1.5, -1.0)):
        x = torch.tensor(r, requires_grad=True)
        target_penalty(x, t_star, scale).backward()
        assert float(x.grad) * sign > 0  # above T*: smaller R lowers the loss; below: larger R does


def test_one_recipe_vocabulary_and_listed_choices(capsys):
    """search, train and compare name their presets alike (default, authors); the old 'cpu' still
    works, with a one-line note; choice options list their choices in --help."""
    import warnings

    from spnas.strategies.single_path import SinglePathStrategy

    with pytest.warns(FutureWarning, match="--recipe cpu is deprecated; it is now called --recipe default"):
        old = SinglePathStrategy.from_options({"recipe": "cpu"})
    assert old.options == SinglePathStrategy.from_options({"recipe": "default"}).options
    for command in (["search"], ["train"], ["compare"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert "{default,authors}" in capsys.readouterr().out.replace("\n", " ").replace(" ", "")
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    text = capsys.readouterr().out
    assert "--optimizer {rmsprop,adam,sgd}" in text and "--threshold-schedule {settle,cosine,constant}" in text
    assert "--seed SEED" in text and "same seed gives the same search" in text
    # on the command line the note is one line
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        assert main(["search", "--recipe", "cpu", "--space", "tiny", "--device", "flops", "--epochs", "0",
                     "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "spnas: note: --recipe cpu is deprecated; it is now called --recipe default" in err
