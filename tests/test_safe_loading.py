"""No code runs from a file spnas reads: checkpoints (weights_only), YAML (safe_load), pickles.

Each malicious file would create a marker file if its payload ran; the tests check that every
command refuses the file with one line naming it, and that the marker was never made.
"""

from __future__ import annotations

import os
import pickle

import pytest
import torch
import yaml

from spnas.cli.main import main


class _Payload:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_checkpoint(path, marker):
    # a dict that looks like a spnas checkpoint, with the payload inside
    torch.save({"format": "spnas-child-v1", "space": "tiny", "arch": "k3e2 skip | k5e6 k3e3",
                "model": {"x": _Payload(marker)}}, path)


def test_the_payload_really_runs_when_loaded_unsafely(tmp_path):
    """The control: without weights_only the file does run code (so the tests below mean something)."""
    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    _malicious_checkpoint(path, marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("command", [
    lambda p: ["eval", str(p)],
    lambda p: ["export", "--checkpoint", str(p), "--format", "onnx", "--space", "tiny"],
    lambda p: ["search", "--strategy", "random", "--space", "tiny", "--device", "flops", "--supernet", str(p),
               "--evaluations", "2", "--quiet"],
])
def test_commands_refuse_a_malicious_checkpoint(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    _malicious_checkpoint(path, marker)
    assert main(command(path)) == 2
    err = capsys.readouterr().err
    assert str(path) in err and err.count("\n") == 1, err
    assert not marker.exists()


def test_resume_refuses_a_malicious_checkpoint_in_the_run_directory(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    marker = tmp_path / "ran"
    _malicious_checkpoint(run / "checkpoint.pt", marker)
    assert main(["train", "k3e2 skip | k5e6 k3e3", "--space", "tiny", "--epochs", "1", "--quiet",
                 "--out", str(run), "--resume"]) == 2
    assert "checkpoint.pt: not a valid spnas checkpoint" in capsys.readouterr().err
    assert not marker.exists()


def test_a_pickle_given_as_a_latency_table_runs_nothing(tmp_path, capsys):
    marker, path = tmp_path / "ran", tmp_path / "table.json"
    path.write_bytes(pickle.dumps(_Payload(marker)))
    assert main(["arch", "k3e2 skip | k5e6 k3e3", "--space", "tiny", "--device", "flops",
                 "--device-table", str(path)]) == 2
    assert str(path) in capsys.readouterr().err and not marker.exists()


YAML_PAYLOAD = "!!python/object/apply:os.system ['touch {marker}']"


def test_yaml_object_tags_are_refused_everywhere(tmp_path, capsys):
    marker = tmp_path / "ran"
    payload = YAML_PAYLOAD.format(marker=marker)
    # a search result read by 'spnas train'
    result = tmp_path / "result.yaml"
    result.write_text(f"arch: {payload}\nspace: tiny\n")
    assert main(["train", str(result), "--quiet"]) == 2
    assert str(result) in capsys.readouterr().err
    # a run directory read by 'spnas report'
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"strategy: {payload}\n")
    (run / "result.yaml").write_text(f"arch: {payload}\n")
    code = main(["report", str(run)])
    assert code in (0, 2)  # a report of what could be read, or a clear refusal; never the payload
    # a search space file
    space = tmp_path / "space.yaml"
    space.write_text(f"name: {payload}\n")
    assert main(["space", "show", str(space)]) == 2
    assert str(space) in capsys.readouterr().err
    assert not marker.exists()
    with pytest.raises(yaml.constructor.ConstructorError):
        yaml.safe_load(payload)  # the loader spnas uses refuses the tag itself
