"""spnas compare: one table, one shared supernet, equal budgets, every result trained from scratch."""

from __future__ import annotations

import pytest
import torch
import yaml

from spnas.cli import main
from spnas.graph import SpaceGraph

FAST = ["--space", "tiny", "--device", "flops", "--supernet-epochs", "1", "--evaluations", "4",
        "--train-epochs", "1", "--batch-size", "128", "--quiet"]


def _read(path):
    return yaml.safe_load(path.read_text())


def test_compare_runs_every_strategy_on_equal_terms(tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "cmp"
    assert main(["compare", "--strategies", "single-path,random,evolution", *FAST, "--target", "0.8",
                 "--out", str(out)]) == 0
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
    # evolution's first generation (50) is bigger than the budget (4): the report says so
    assert result["notes"] == [n for n in result["notes"] if n.startswith("evolution: its population (50)")]
    assert len(result["notes"]) == 1 and "searched as random search does" in report
    assert (out / "plots" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "report:" in capsys.readouterr().out
    # every stage has its own report, and 'spnas report' rebuilds the comparison's
    assert (out / "search-random" / "report.md").is_file() and (out / "train-evolution" / "report.md").is_file()
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").read_text() == report


def test_compare_resume_skips_finished_stages(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    out = tmp_path / "cmp"
    args = ["compare", "--strategies", "random,evolution", *FAST, "--out", str(out)]
    import spnas.compare as compare

    original = compare.Comparison._train
    calls = []

    def interrupt_second_training(self, name, arch):
        calls.append(name)
        if name == "evolution":
            raise KeyboardInterrupt
        return original(self, name, arch)

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
])
def test_bad_comparisons_are_refused_before_any_work(tmp_path, capsys, args, message):
    out = tmp_path / "cmp"
    assert main(["compare", *FAST, "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (out / "supernet").exists()
