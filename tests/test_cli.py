"""The command line: user errors are one line with exit status 2; commands do what they print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spnas.cli.main import main

PAPER_ARCH = ("k3e3 k3e3 k3e3 skip | k5e6 k3e3 k3e3 k3e3 | k5e6 k3e3 k3e3 k3e3 | "
              "k5e6 k5e3 k5e3 k5e3 | k5e6 k5e6 k5e6 k5e6")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "spnas", *args], capture_output=True, text=True, timeout=600)


def test_space_show_prints_layers_size_and_extremes(capsys):
    assert main(["space", "show", "spnas-imagenet"]) == 0
    out = capsys.readouterr().out
    assert "searchable layers: 20" in out and "31250000000000" in out
    assert "*blocks.1.0" in out and "k3e3 k3e6 k5e3 k5e6" in out
    assert "smallest: 2.457 M params" in out and "largest:  4.834 M params" in out


def test_arch_command_with_pixel1_table(pixel1_json, capsys):
    assert main(["arch", PAPER_ARCH, "--space", "spnas-imagenet", "--device", "pixel1",
                 "--device-table", str(pixel1_json)]) == 0
    out = capsys.readouterr().out
    assert "predicted latency: 80.4411 ms (pixel1)" in out
    assert "ir_r4_k5_s2_e6_c192" in out and "params: 4421616 (4.422 M)" in out


@pytest.mark.parametrize("args,message", [
    (["search", "--strategy", "evo"], "unknown strategy 'evo'; available: evolution, random, rl, single-path (see 'spnas plugins')"),
    (["search", "--space", "nope.yaml"], "nope.yaml: no such search-space file"),
    (["search", "--device", "phone"], "unknown device 'phone'; available: android, flops, onnxruntime, pixel1, tflite"),
    (["search", "--data", "mnist"], "unknown dataset 'mnist'; available: cifar10, digits, idx, imagefolder, npz"),
    (["search", "--epochs", "0", "--space", "tiny"], "--epochs 0 is not allowed; use >= 1"),
    (["search", "--space", "tiny", "--device", "flops", "--target", "0.001"], "cannot be met: architectures of tiny cost"),
    (["arch", "k3e3", "--space", "tiny"], "has 1 ops; space tiny has 4 searchable layers"),
    (["search", "--epochs", "many"], "invalid int value: 'many'"),
])
def test_user_errors_are_one_line_exit_2(args, message):
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_bad_space_file_at_the_cli(tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text("name: x\ninput: {resolution: 16}\nnum_classes: 10\nstem: {out_chs: 8}\n"
                   "blocks:\n  - search: {out_chs: 8, layers: 2, stride: 1, kernel: [3, 4], expansion: [3, 6]}\n"
                   "head: {out_chs: 16}\n")
    proc = run_cli("space", "show", str(bad))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"spnas: error: {bad}: blocks[0].search.kernel[1]: 4 is an even kernel size; "
                                   "use odd sizes such as 3, 5 or 7")


def test_pixel1_works_out_of_the_box_with_the_shipped_table(tmp_path, monkeypatch):
    """No file, no env var, no user copy: the authors' table shipped with spnas gives the paper's
    80.44 ms (Eq. 10-12 with their constant) for the paper's network."""
    monkeypatch.setenv("SPNAS_HOME", str(tmp_path))
    monkeypatch.delenv("SPNAS_PIXEL1_TABLE", raising=False)
    proc = subprocess.run([sys.executable, "-m", "spnas", "arch", PAPER_ARCH, "--space", "spnas-imagenet",
                           "--device", "pixel1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "predicted latency: 80.4411 ms (pixel1)" in proc.stdout


def test_device_import_then_use(pixel1_json, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPNAS_HOME", str(tmp_path))
    monkeypatch.delenv("SPNAS_PIXEL1_TABLE", raising=False)
    assert main(["device", "import", "pixel1", str(pixel1_json)]) == 0
    assert (tmp_path / "devices" / "pixel1.json").is_file()
    assert main(["arch", PAPER_ARCH, "--space", "spnas-imagenet", "--device", "pixel1"]) == 0
    assert "80.4411 ms" in capsys.readouterr().out
