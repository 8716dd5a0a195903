"""Reports and plots of run directories (report.md, plots/*.png, ``spnas report``) and TensorBoard scalars."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import yaml

from spnas.supernet.builder import Supernet
from spnas.cli.main import _write_report, main
from spnas.core.errors import SpnasError
from spnas.space.graph import SpaceGraph
from spnas.training.oneshot import save_supernet
from spnas.report.plots import superkernel_maps
from spnas.report.writer import read_run, run_kind, write_report
from spnas.core.runs import RunDir, load_checkpoint

PNG = b"\x89PNG\r\n\x1a\n"
FAST = ["--space", "tiny", "--device", "flops", "--batch-size", "128", "--bn-batches", "2", "--quiet"]


def _png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished single-path search (target mode) and a random search reusing its supernet."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("runs")
    sp, rnd = root / "single-path", root / "random"
    assert main(["search", *FAST, "--epochs", "2", "--target", "0.6", "--out", str(sp)]) == 0
    assert main(["search", *FAST, "--strategy", "random", "--evaluations", "6", "--target", "0.6",
                 "--supernet", str(sp / "supernet.pt"), "--out", str(rnd)]) == 0
    return sp, rnd


@pytest.fixture
def copy_of(tmp_path):
    return lambda run: shutil.copytree(run, tmp_path / run.name)


def test_single_path_search_writes_report_and_plots(runs):
    sp, _ = runs
    result = yaml.safe_load((sp / "result.yaml").read_text())
    assert result["search_seconds"] > 0  # cmd_search's wall time of strategy.search
    text = (sp / "report.md").read_text()
    assert result["arch"] in text
    assert f"{result['predicted_latency']} MMACs" in text
    assert "single-path search" in text and "T = 0.6 MMACs, window [0.57, 0.6]" in text
    assert "runtime analytic" not in text and "analytic, spnas" in text  # the table's origin
    for name in ("progress", "architecture", "superkernels"):
        assert _png(sp / "plots" / f"{name}.png"), name
        assert f"](plots/{name}.png)" in text
    assert not (sp / "plots" / "candidates.png").exists()


def test_sampling_search_report_has_candidates_and_pareto_front(runs):
    _, rnd = runs
    result = yaml.safe_load((rnd / "result.yaml").read_text())
    text = (rnd / "report.md").read_text()
    assert result["arch"] in text and f"{result['predicted_latency']} MMACs" in text
    assert "| evaluations | 6 |" in text and "| stop reason | evaluation budget spent |" in text
    assert f"| Pareto front | {len(result['pareto_front'])} architectures |" in text
    assert "| latency constraint | [0.57, 0.6] MMACs |" in text
    for name in ("candidates", "architecture", "superkernels"):  # superkernels: of the reused supernet
        assert _png(rnd / "plots" / f"{name}.png"), name
    assert read_run(rnd).result["strategy"] == "random" and run_kind(read_run(rnd)) == "sampling search"


def test_superkernel_maps_equal_a_hand_computation(tmp_path):
    """Population std (correction=0) across the C channels at each kernel position."""
    space = SpaceGraph.load("tiny")
    net = Supernet(space)
    sk = net.superkernels[0]
    c, _, k, _ = sk.conv_dw.weight.shape
    with torch.no_grad():  # channel ch at position (i, j) holds ch * (i + 1): std = (i + 1) * std(0..C-1)
        ch = torch.arange(c, dtype=torch.float32).view(c, 1, 1, 1)
        rows = torch.arange(1, k + 1, dtype=torch.float32).view(1, 1, k, 1)
        sk.conv_dw.weight.copy_(ch * rows * torch.ones(1, 1, 1, k))
    maps = superkernel_maps(net)
    assert len(maps) == space.num_searchable
    assert [m.shape for m in maps] == [(l.kernels[-1],) * 2 for l in space.searchable]
    std_0_to_c = math.sqrt((c * c - 1) / 12)  # population std of 0, 1, ..., C-1
    for i in range(k):
        for j in range(k):
            assert maps[0][i, j] == pytest.approx((i + 1) * std_0_to_c, rel=1e-6)
    for m, layer in zip(maps[1:], net.superkernels[1:]):
        expected = layer.conv_dw.weight.detach().double()[:, 0].std(dim=0, correction=0).numpy()
        assert m == pytest.approx(expected)
    # the same from a state dict and from a supernet.pt read back safely
    file = load_checkpoint(save_supernet(tmp_path / "supernet.pt", net, "test"))
    for source in (net.state_dict(), file):
        assert all(a == pytest.approx(b) for a, b in zip(superkernel_maps(source), maps))


def test_report_of_a_directory_that_is_no_run_exits_2_with_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path) in err and "config.yaml" in err and "result.yaml" in err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    with pytest.raises(SpnasError, match="not a run directory"):
        write_report(tmp_path)


def test_report_rebuilds_deleted_plots(runs, copy_of, capsys):
    run = copy_of(runs[0])
    shutil.rmtree(run / "plots")
    (run / "report.md").unlink()
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "report.md")
    assert all(_png(run / "plots" / f"{n}.png") for n in ("progress", "architecture", "superkernels"))


def test_torn_log_line_and_missing_files_still_report(runs, copy_of):
    run = copy_of(runs[0])
    with open(run / "log.jsonl", "a") as f:
        f.write('{"step": 999, "ce": 1.')  # a killed process's last line
    (run / "supernet.pt").unlink()
    (run / "checkpoint.pt").unlink()
    result = yaml.safe_load((run / "result.yaml").read_text())
    (run / "result.yaml").write_text(yaml.safe_dump({**result, "supernet": str(run / "moved.pt")}))
    text = write_report(run).read_text()
    assert "1 unreadable line(s) skipped" in text
    assert "superkernel maps: not drawn" in text and not (run / "plots" / "superkernels.png").exists()
    assert _png(run / "plots" / "progress.png")
    (run / "result.yaml").unlink()  # an unfinished run: progress, and the superkernels of its checkpoint
    shutil.copy(runs[0] / "checkpoint.pt", run / "checkpoint.pt")
    text = write_report(run).read_text()
    assert "has not finished" in text and _png(run / "plots" / "superkernels.png")


def test_a_failing_plot_is_a_note_and_a_failing_report_keeps_the_result(runs, copy_of, monkeypatch, capsys):
    import spnas.report.plots
    import spnas.report.writer

    run = copy_of(runs[0])

    def broken(*args, **kwargs):
        raise ValueError("no luck")

    monkeypatch.setattr(spnas.report.plots, "plot_search_progress", broken)
    text = write_report(run).read_text()
    assert "not drawn (ValueError: no luck)" in text and not (run / "plots" / "progress.png").exists()
    assert _png(run / "plots" / "architecture.png")
    monkeypatch.setattr(spnas.report.writer, "write_report", broken)
    assert _write_report(run) is None  # cmd_search's call: a warning, the result stays
    assert "report not written (ValueError: no luck)" in capsys.readouterr().err
    assert (run / "result.yaml").is_file()


def test_train_run_report(tmp_path):
    import matplotlib.pyplot as plt

    run = tmp_path / "train"
    run.mkdir()
    arch = "k3e6 skip | k5e3 k3e3"
    (run / "config.yaml").write_text(yaml.safe_dump({"command": "train", "space": "tiny", "data": "digits"}))
    (run / "result.yaml").write_text(yaml.safe_dump({"kind": "train", "arch": arch, "top1": 0.81, "top5": 0.97,
                                                     "test_top1": 0.8}))
    lines = [json.dumps({"epoch": e, "step": 10 * e, "train_loss": 2.0 / e, "lr": 0.1, "val_top1": 0.5 + 0.1 * e,
                         "val_top5": 0.9}) for e in (1, 2, 3)]
    (run / "log.jsonl").write_text("\n".join(lines + ['{"epoch": 4}', "not json"]) + "\n")
    figures = len(plt.get_fignums())
    text = write_report(run).read_text()
    assert len(plt.get_fignums()) == figures  # no pyplot state left behind
    assert "# train: train" in text and arch in text and "| top1 | 0.8100 (81.00 %) |" in text
    assert "| best val top-1 | 0.8000 (80.00 %) at epoch 3 |" in text
    assert _png(run / "plots" / "training.png") and _png(run / "plots" / "architecture.png")


class _FakeWriter:
    """Stands in for torch's SummaryWriter (the tensorboard package is not in the dev venv)."""

    made: list["_FakeWriter"] = []

    def __init__(self, log_dir, purge_step=None, flush_secs=120):
        self.log_dir, self.purge_step, self.scalars, self.closed = log_dir, purge_step, [], False
        _FakeWriter.made.append(self)

    def add_scalar(self, tag, value, global_step=None):
        self.scalars.append((tag, value, global_step))

    def close(self):
        self.closed = True


def test_tensorboard_gets_every_numeric_scalar(tmp_path, monkeypatch):
    import spnas.core.runs

    _FakeWriter.made.clear()
    monkeypatch.setattr(spnas.core.runs, "_summary_writer_class", lambda: _FakeWriter)
    run = RunDir(tmp_path / "run")
    run.log({"step": 1, "ce": 2.5, "R": 1.2, "warmup": True, "indicators": None, "arch": "k3e3"})
    run.log({"phase": "supernet", "epoch": 1, "step": 11, "ce": 1.5})
    run.log({"trial": 3, "latency": 0.5, "accuracy": None, "status": "infeasible"})
    run.log({"epoch": 2, "train_loss": 0.7, "lr": 0.1})
    run.log({"note": "no step"})
    (writer,) = _FakeWriter.made
    assert writer.log_dir == str(tmp_path / "run" / "tb") and writer.purge_step is None
    assert writer.scalars == [("ce", 2.5, 1), ("R", 1.2, 1), ("supernet/epoch", 1.0, 11), ("supernet/ce", 1.5, 11),
                              ("latency", 0.5, 3), ("train_loss", 0.7, 2), ("lr", 0.1, 2)]
    run.close()
    assert writer.closed
    assert [json.loads(l)["note"] for l in run.log_path.read_text().splitlines()[-1:]] == ["no step"]
    # a resume truncates the log: TensorBoard is told to drop the steps done again
    resumed = RunDir(tmp_path / "resumed")
    resumed.log({"step": 5, "ce": 1.0})
    resumed.close()
    resumed.truncate_log(3)
    resumed.log({"step": 4, "ce": 0.9})
    assert _FakeWriter.made[-1].purge_step == 4


def test_tensorboard_off_by_env_or_without_the_package(tmp_path, monkeypatch):
    import importlib.util

    import spnas.core.runs

    monkeypatch.setenv("SPNAS_TENSORBOARD", "0")
    assert spnas.core.runs._summary_writer_class() is None
    run = RunDir(tmp_path / "off")
    run.log({"step": 1, "ce": 2.0})
    run.close()
    assert not (tmp_path / "off" / "tb").exists()
    assert run.log_path.read_text() == '{"step": 1, "ce": 2.0}\n'  # the log is unchanged
    monkeypatch.delenv("SPNAS_TENSORBOARD")
    if importlib.util.find_spec("tensorboard") is None:
        assert spnas.core.runs._summary_writer_class() is None


def test_tensorboard_event_files_hold_the_logged_scalars(tmp_path, monkeypatch):
    """The real writer, read back with tensorboard's own reader (skipped without the package)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("SPNAS_TENSORBOARD", "1")
    run = RunDir(tmp_path / "tb-run")
    for step, ce in [(1, 2.5), (2, 1.75), (3, 1.0)]:
        run.log({"step": step, "ce": ce, "arch": "k3e3", "done": False})
    run.log({"phase": "supernet", "epoch": 1, "step": 3, "ce": 0.5})
    run.close()
    events = EventAccumulator(str(tmp_path / "tb-run" / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("ce")] == [(1, 2.5), (2, 1.75), (3, 1.0)]
    assert [(e.step, e.value) for e in events.Scalars("supernet/ce")] == [(3, 0.5)]
    assert "arch" not in events.Tags()["scalars"] and "done" not in events.Tags()["scalars"]


def test_compare_plot_keeps_two_strategies_with_one_network_apart_and_inside(tmp_path, monkeypatch):
    """Two strategies that found the same network: both markers stay visible (the second shifted),
    inside the axes with room above and below, and the legend sits outside the plotting area."""
    from spnas.report import plots

    seen = {}
    real_save = plots._save

    def inspect_then_save(fig, path):  # _save frees the figure: look at it first
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()
        seen.update(ylim=ax.get_ylim(), xs=[float(c.lines[0].get_xdata()[0]) for c in ax.containers
                                            if hasattr(c, "lines")],
                    legend=ax.get_legend().get_window_extent(renderer), axes=ax.get_window_extent(renderer),
                    texts=" ".join(t.get_text() for t in ax.get_legend().get_texts()))
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", inspect_then_save)
    rows = [{"seed": s, "strategy": name, "arch": "k3e3 skip | k5e6 k3e3", "predicted_latency": 0.6, "top1": 0.5,
             "search_seconds": 1.0} for name in ("random", "evolution") for s in (0, 1)]
    plots.plot_comparison(rows, tmp_path / "compare.png", units="MMACs", target=0.62)
    lo, hi = seen["ylim"]
    assert lo < 0.5 - 0.005 and hi > 0.5 + 0.005  # the points are off the frame
    xs = seen["xs"]
    assert len(xs) == 2 and xs[0] != xs[1]  # the second strategy's point is shifted, not hidden
    assert seen["legend"].y1 <= seen["axes"].y0  # below the axes, covering no point
    assert "same point as another" in seen["texts"]
