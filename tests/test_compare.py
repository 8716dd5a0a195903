"""spnas compare: one table, one shared supernet, equal budgets, every result trained from scratch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from spnas.cli.main import main
from spnas.space.graph import SpaceGraph

FAST = ["--space", "tiny", "--device", "flops", "--supernet-epochs", "1", "--evaluations", "4",
        "--train-epochs", "1", "--batch-size", "128", "--quiet"]


def _read(path):
    return yaml.safe_load(path.read_text())


def _digits_npz(path, test_part=True):
    """A small digits set, quick to train on: 300 images, and 100 more as a test part (so that
    trainings report test top-1) unless ``test_part`` is false. What these tests check does not
    depend on the data's size; with the embedded digits (1437 training images) every stage, the
    BatchNorm recalibration of each evaluated candidate included, would read 5 times as many."""
    from spnas.data.datasets import DIGITS_FILE
    from spnas.data.formats import read_npz

    images, y, _ = read_npz(DIGITS_FILE)  # the embedded digits, values 0..16
    x = (images[:, 0].astype(np.float64) * (255 / 16)).astype(np.uint8)
    arrays = {"x": x[:300], "y": y[:300]}
    if test_part:
        arrays.update(x_test=x[300:400], y_test=y[300:400])
    np.savez(path, **arrays)
    return path


@pytest.mark.slow
def test_compare_runs_every_strategy_on_equal_terms(tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "cmp"
    data = _digits_npz(tmp_path / "digits.npz", test_part=False)
    assert main(["compare", "--strategies", "single-path,random,evolution", *FAST, "--data", f"npz:{data}",
                 "--target", "0.8", "--out", str(out)]) == 0
    result = _read(out / "compare.yaml")
    rows = {r["strategy"]: r for r in result["results"]}
    assert list(rows) == ["single-path", "random", "evolution"]
    space = SpaceGraph.load("tiny")
    shared = out / "supernet" / "supernet.pt"
    assert shared.is_file()
    for name, row in rows.items():
        found = _read(out / f"search-{name}" / "result.yaml")
        trained = _read(out / f"train-{name}" / "result.yaml")
        # the row is the search's architecture, trained from scratch with the same recipe
        assert row["arch"] == found["arch"] == trained["arch"] and row["top1"] == trained["top1"]
        assert trained["epochs"] == 1
        assert row["predicted_latency"] == found["predicted_latency"]
        assert 0.95 * 0.8 - 1e-9 <= row["predicted_latency"] <= 0.8 + 1e-9  # the same target for every strategy
        assert row["macs"] == space.cost(space.parse(row["arch"]))[1]
        assert row["measured_latency"] is None  # flops cannot measure
    # the sampling strategies evaluated on the shared supernet, with the same budget
    for name in ("random", "evolution"):
        found = _read(out / f"search-{name}" / "result.yaml")
        assert found["supernet"] == str(shared) and found["evaluations"] <= 4
        assert not (out / f"search-{name}" / "supernet.pt").exists()
        assert rows[name]["shared_supernet_seconds"] is not None
    assert rows["single-path"]["evaluations"] is None and rows["single-path"]["search_epochs"] == 1
    report = (out / "report.md").read_text()
    for row in rows.values():
        assert "`" + row["arch"].replace("|", "\\|") + "`" in report  # escaped inside the table
    # a budget of 4 shrinks evolution's population to 2 (Evolution.budget_options), which still
    # leaves only 2 generations: the report says so
    evo = _read(out / "search-evolution" / "config.yaml")["options"]
    assert (evo["population"], evo["mutations"], evo["crossovers"], evo["parents"]) == (2, 1, 1, 1)
    assert result["notes"] == ["evolution: --evaluations 4 leaves 2 generations of 2, the random first one "
                               "included; give at least 6 for 3"]
    assert "leaves 2 generations" in report
    assert (out / "plots" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "report:" in capsys.readouterr().out
    # every stage has its own report, and 'spnas report' rebuilds the comparison's
    assert (out / "search-random" / "report.md").is_file() and (out / "train-evolution" / "report.md").is_file()
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").read_text() == report


@pytest.mark.slow
def test_compare_resume_skips_finished_stages(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    out = tmp_path / "cmp"
    data = _digits_npz(tmp_path / "digits.npz", test_part=False)
    args = ["compare", "--strategies", "random,evolution", *FAST, "--data", f"npz:{data}", "--out", str(out)]
    import spnas.pipeline.compare as compare

    original = compare.Comparison._train
    calls = []

    def interrupt_second_training(self, seed, name, arch):
        calls.append(name)
        if name == "evolution":
            raise KeyboardInterrupt
        return original(self, seed, name, arch)

    monkeypatch.setattr(compare.Comparison, "_train", interrupt_second_training)
    assert main(args) == 130
    assert main(args) == 2  # refuses to start over an unfinished comparison
    first = (out / "train-random" / "model.pt").stat().st_mtime_ns
    supernet = (out / "supernet" / "supernet.pt").stat().st_mtime_ns
    monkeypatch.setattr(compare.Comparison, "_train", original)
    assert main([*args, "--resume"]) == 0
    assert (out / "train-random" / "model.pt").stat().st_mtime_ns == first  # not trained again
    assert (out / "supernet" / "supernet.pt").stat().st_mtime_ns == supernet
    assert [r["strategy"] for r in _read(out / "compare.yaml")["results"]] == ["random", "evolution"]


@pytest.mark.parametrize("args, message", [
    (["--strategies", "random,nope"], "unknown strategy 'nope'"),
    (["--strategies", "random,random"], "a strategy is named twice"),
    (["--target", "0.01"], "0.01"),
    (["--evaluations", "0"], "--evaluations 0 is not allowed"),
    (["--seeds", "0"], "--seeds 0: a count must be >= 1"),
    (["--seeds", "1,1"], "--seeds 1,1: seed 1 is named twice"),
    (["--seeds=-1,2"], "--seeds -1,2: -1 is not allowed"),
    (["--seeds", "two"], "--seeds 'two': not a count or a list of seeds"),
    (["--seed", "1", "--seeds", "2"], "--seed and --seeds: give one"),
    (["--random-archs", "0"], "--random-archs 0 is not allowed"),
    # one architecture of the tiny space lies in [0.228, 0.24]: two distinct draws cannot be found
    (["--strategies", "random-arch", "--target", "0.24", "--random-archs", "2"],
     "random-arch: 1 of --random-archs 2 distinct architectures"),
])
def test_bad_comparisons_are_refused_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "cmp"
    assert main(["compare", *FAST, "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (out / "supernet").exists()


@pytest.mark.slow
def test_compare_over_seeds_with_random_architectures(tmp_path):
    from spnas.devices.flops import FlopsDevice
    from spnas.latency.runtime import RuntimeModel

    torch.set_num_threads(1)
    out = tmp_path / "cmp"
    data = _digits_npz(tmp_path / "digits.npz")
    base = ["compare", "--strategies", "random,random-arch", *FAST, "--data", f"npz:{data}", "--target", "0.8",
            "--random-archs", "2", "--out", str(out)]
    args = [*base, "--seeds", "2"]
    assert main(args) == 0
    result = _read(out / "compare.yaml")
    rows = result["results"]
    assert result["seeds"] == [0, 1] and result["random_archs"] == 2
    assert [(r["seed"], r["strategy"], r.get("draw")) for r in rows] == [
        (s, name, draw) for s in (0, 1) for name, draw in (("random", None), ("random-arch", 1), ("random-arch", 2))]
    for r in rows:  # every row is its seed's stage, trained from scratch
        stage = f"train-random-arch-{r['draw']}" if r["strategy"] == "random-arch" else "train-random"
        trained = _read(out / f"seed-{r['seed']}" / stage / "result.yaml")
        assert (trained["arch"], trained["top1"], trained["test_top1"]) == (r["arch"], r["top1"], r["test_top1"])
    assert (out / "seed-1" / "supernet" / "supernet.pt").is_file() and not (out / "supernet").exists()
    assert not list(out.glob("seed-*/search-random-arch"))  # random-arch: no supernet, no search
    # the aggregate is the per-seed rows' mean and sample std
    agg = {a["strategy"]: a for a in result["aggregate"]}
    assert list(agg) == ["random", "random-arch"] and agg["random"]["n"] == 2 and agg["random-arch"]["n"] == 4
    for name, a in agg.items():
        mine = [r for r in rows if r["strategy"] == name]
        for key in ("top1", "test_top1"):
            values = np.array([r[key] for r in mine])
            assert a[f"{key}_values"] == list(values)
            assert a[f"{key}_mean"] == pytest.approx(values.mean(), abs=1e-12)
            assert a[f"{key}_std"] == pytest.approx(values.std(ddof=1), abs=1e-12)
        assert a["predicted_latency_mean"] == pytest.approx(np.mean([r["predicted_latency"] for r in mine]))
        assert a["search_seconds_mean"] == pytest.approx(np.mean([r["search_seconds"] for r in mine]))
        assert a["measured_latency_mean"] is None  # flops cannot measure
        for s in a["by_seed"]:
            values = np.array([r["top1"] for r in mine if r["seed"] == s["seed"]])
            assert s["n"] == len(values) and s["top1_mean"] == pytest.approx(values.mean(), abs=1e-12)
            assert s["top1_std"] == (pytest.approx(values.std(ddof=1), abs=1e-12) if len(values) > 1 else None)
    # random-arch draws lie in the window (checked with the runtime model itself), and differ by seed
    space = SpaceGraph.load("tiny")
    runtime = RuntimeModel(space, FlopsDevice().latency_table(space))
    draws = {s: [r["arch"] for r in rows if r["strategy"] == "random-arch" and r["seed"] == s] for s in (0, 1)}
    for arch in draws[0] + draws[1]:
        assert 0.95 * 0.8 - 1e-9 <= runtime.predict(space.parse(arch)) <= 0.8 + 1e-9
    assert draws[0] != draws[1] and len(set(draws[0])) == len(set(draws[1])) == 2
    report = (out / "report.md").read_text()
    r = agg["random"]
    assert "| strategy | n | top-1 mean ± std | every value | test top-1 mean ± std |" in report
    assert f"| random | 2 | {r['top1_mean']:.4f} ± {r['top1_std']:.4f} |" in report
    assert "| 1 | random-arch #2 | `" in report and "One seed proves no ranking" not in report
    # every trained network's test top-1 is in the per-seed table too
    first = next(row for row in rows if row["strategy"] == "random" and row["seed"] == 0)
    assert "| top-1 | top-5 | test top-1 | search (s) |" in report
    assert f"| {first['top1']:.4f} | {first['top5']:.4f} | {first['test_top1']:.4f} |" in report
    assert (out / "plots" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # resume after one stage's result is lost: that stage alone runs again
    victim = out / "seed-1" / "train-random-arch-2" / "result.yaml"
    others = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("seed-*/*/result.yaml") if p != victim}
    others.update({p: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("seed-*/*/*.pt")
                   if p.parent != victim.parent})
    assert len(others) > 8
    victim.unlink()
    assert main([*args, "--resume"]) == 0
    assert _read(victim)["arch"] == rows[-1]["arch"]
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in others} == others
    again = _read(out / "compare.yaml")["results"]
    assert [r["arch"] for r in again] == [r["arch"] for r in rows] and again[:-1] == rows[:-1]
    # one seed's stages would lie in the output directory itself: resuming with one seed is refused
    assert main([*base, "--seed", "0", "--resume"]) == 2
