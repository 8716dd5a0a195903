"""A front from one search (``spnas search --targets``): one shared warm-up, one runtime phase per
target. Each point is the search ``--target`` alone runs (bit for bit), and a sweep killed in any
phase resumes to the uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import spnas
from spnas.cli.main import main
from spnas.core.runs import RunDir

TARGETS = ["30%", "60%"]
OPTIONS = {"epochs": 3, "warmup_epochs": 2, "batch_size": 64}


def _sweep(out: Path, resume: bool = False):
    return spnas.search(space="tiny", device="flops", targets=TARGETS, out=out, resume=resume, report=False,
                        **OPTIONS)


def _log(path: Path) -> list[dict]:
    """The log without its wall-clock fields."""
    return [{k: v for k, v in json.loads(line).items() if k not in ("time", "seconds")}
            for line in path.read_text().splitlines()]


def _result(path: Path) -> dict:
    record = yaml.safe_load(path.read_text())
    return {k: v for k, v in record.items() if k not in ("search_seconds", "run_dir", "supernet", "run",
                                                         "target_spec")}


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "straight"
    return _sweep(out)


def test_each_point_is_the_search_its_target_alone_runs(straight, tmp_path):
    assert [p["target_spec"] for p in straight.points] == TARGETS
    for point in straight.points:
        lo, hi = 0.95 * point["target"], point["target"]
        assert lo - 1e-9 <= point["predicted_latency"] <= hi + 1e-9  # in its window
    # the last target (forked after another target's search ran: nothing of it leaks) against
    # the search of that target alone; every target's fork runs the same code
    spec, point = TARGETS[-1], straight.points[-1]
    alone = spnas.search(space="tiny", device="flops", target=spec, out=tmp_path / "alone", report=False, **OPTIONS)
    run = straight.run_dir / point["run"]
    assert _result(run / "result.yaml") == _result(alone.run_dir / "result.yaml")
    assert (run / "supernet.pt").read_bytes() == (alone.run_dir / "supernet.pt").read_bytes()
    assert _log(run / "log.jsonl") == _log(alone.run_dir / "log.jsonl")
    assert straight.points[0]["predicted_latency"] < straight.points[1]["predicted_latency"]
    # the warm-up ran once: 2 of 3 epochs, shared
    assert straight.record["warmup_epochs"] == 2 and (straight.run_dir / "warmup" / "fork.yaml").is_file()
    warm_steps = sum(1 for r in _log(straight.run_dir / "warmup" / "log.jsonl") if "ce" in r)
    target_steps = sum(1 for r in _log(straight.run_dir / "target-30pct" / "log.jsonl") if "ce" in r)
    assert warm_steps == 2 * target_steps // 3


@pytest.mark.parametrize("stop_at", [2, 4], ids=["in-warm-up", "in-a-target"])
def test_a_sweep_killed_in_any_phase_resumes_to_the_uninterrupted_one(straight, tmp_path, monkeypatch, stop_at):
    """Checkpoint writes of a sweep: warm-up epochs 1 and 2, then each target's epoch 3. A kill
    before write ``stop_at`` leaves the sweep in its warm-up, or in a target's runtime phase after
    another target finished (the target phases all run the same code)."""
    real = RunDir.save_checkpoint
    calls = []

    def killed(self, state):
        calls.append(1)
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return real(self, state)

    out = tmp_path / "cut"
    monkeypatch.setattr(RunDir, "save_checkpoint", killed)
    with pytest.raises(KeyboardInterrupt):
        _sweep(out)
    monkeypatch.setattr(RunDir, "save_checkpoint", real)
    with pytest.raises(spnas.SpnasError, match="already holds a sweep; pass --resume"):
        _sweep(out)
    resumed = _sweep(out, resume=True)
    strip = lambda pts: [{k: v for k, v in p.items() if k != "search_seconds"} for p in pts]  # noqa: E731
    assert strip(resumed.record["points"]) == strip(straight.record["points"])
    for point in straight.points:
        a, b = straight.run_dir / point["run"], out / point["run"]
        assert (a / "supernet.pt").read_bytes() == (b / "supernet.pt").read_bytes()
        assert _log(a / "log.jsonl") == _log(b / "log.jsonl")


def test_the_command_line_writes_the_front_and_its_report(tmp_path, capsys):
    out = tmp_path / "front"
    argv = ["search", "--space", "tiny", "--device", "flops", "--targets", "40%,70%", "--epochs", "2",
            "--warmup-epochs", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    record = yaml.safe_load((out / "sweep.yaml").read_text())
    assert [p["target_spec"] for p in record["points"]] == ["40%", "70%"]
    for p in record["points"]:
        assert f"{p['target_spec']:>8} {p['predicted_latency']:>10.4f}" in text and p["arch"] in text
    report = (out / "report.md").read_text()
    assert "a front of 2 targets" in report and "[target-40pct](target-40pct/report.md)" in report
    assert (out / "plots" / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "target-70pct" / "report.md").is_file()  # each target has its own run and report
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").read_text() == report


@pytest.mark.parametrize("argv, message", [
    (["--targets", "30%,30%"], "target 30% is named twice"),
    (["--targets", "30%,0%"], "--targets 0%"),
    (["--targets", "30%", "--target", "50%"], "--target and --targets: give one"),
    (["--targets", "30%,60%", "--strategy", "random"], "strategy random: --targets needs a strategy"),
    (["--targets", "30%,60%", "--epochs", "1"], "strategy single-path: --targets needs a strategy"),
])
def test_sweep_user_errors_are_one_line(tmp_path, capsys, argv, message):
    assert main(["search", "--space", "tiny", "--device", "flops", "--quiet", "--out", str(tmp_path / "x"),
                 *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x").exists()


def test_train_takes_a_sweep_and_trains_every_point_with_one_recipe(straight, tmp_path, capsys):
    out = tmp_path / "trained"
    assert main(["train", str(straight.run_dir), "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    front = yaml.safe_load((out / "front.yaml").read_text())
    assert [p["target_spec"] for p in front["points"]] == TARGETS and front["epochs"] == 1
    for point, found in zip(front["points"], straight.points):
        assert point["arch"] == found["arch"] and point["predicted_latency"] == found["predicted_latency"]
    # a point trained from scratch: the same as 'spnas train' of its architecture with the recipe
    alone = spnas.train(straight.points[1]["arch"], "tiny", epochs=1, out=tmp_path / "alone", report=False)
    assert front["points"][1]["top1"] == alone.top1
    report = (out / "report.md").read_text()
    assert "a front trained from scratch" in report and (out / "plots" / "front.png").is_file()
    # resuming a finished front trains nothing again
    before = {p: p.stat().st_mtime_ns for p in out.glob("target-*/model.pt")}
    assert main(["train", str(straight.run_dir), "--epochs", "1", "--quiet", "--out", str(out), "--resume"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("target-*/model.pt")} == before


@pytest.mark.slow
def test_compare_at_several_targets_shares_supernets_and_warm_ups(straight, tmp_path, capsys):
    """``spnas compare --targets``: each seed's uniform supernet trained once, single-path's warm-up
    trained once and forked into every target's search (so its points are the sweep's with the
    same options), and a report of each strategy's front."""
    out = tmp_path / "cmp"
    argv = ["compare", "--strategies", "single-path,random", "--targets", ",".join(TARGETS), "--space", "tiny",
            "--device", "flops", "--supernet-epochs", str(OPTIONS["epochs"]), "--evaluations", "3",
            "--train-epochs", "1", "--batch-size", "128", "--no-measure", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    front = yaml.safe_load((out / "compare-front.yaml").read_text())
    assert [(a["target_spec"], a["strategy"]) for a in front["aggregate"]] == [
        ("30%", "single-path"), ("30%", "random"), ("60%", "single-path"), ("60%", "random")]
    # one uniform supernet per seed, shared: the second target's random search used the first's
    assert (out / "target-30pct" / "supernet" / "supernet.pt").is_file()
    assert not (out / "target-60pct" / "supernet").exists()
    used = yaml.safe_load((out / "target-60pct" / "search-random" / "result.yaml").read_text())["supernet"]
    assert Path(used) == out / "target-30pct" / "supernet" / "supernet.pt"
    # one warm-up per seed, forked: the single-path points are the sweep's (same epochs, warm-up, seed)
    assert (out / "warmup" / "single-path-seed-0" / "fork.yaml").is_file()
    for point in straight.points:
        found = yaml.safe_load((out / point["run"] / "search-single-path" / "result.yaml").read_text())
        assert (found["arch"], found["predicted_latency"], found["supernet_val_accuracy"]) == (
            point["arch"], point["predicted_latency"], point["supernet_val_accuracy"])
    report = (out / "report.md").read_text()
    assert "# Strategy fronts on tiny" in report and "| strategy | 30% | 60% |" in report
    assert (out / "plots" / "front.png").is_file() and (out / "target-60pct" / "report.md").is_file()
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").read_text() == report
