"""spnas export: ONNX and TFLite child networks compute what the PyTorch ChildNet computes.

Every network here has random conv/linear weights and random BatchNorm affine parameters and
running statistics, in eval mode, so a transposed kernel, a swapped BatchNorm statistic, a
layout or padding error changes the outputs. Agreement: ``max|a - b| <= RTOL * max|b| + ATOL``
over all outputs of several random inputs (``b`` the PyTorch logits), RTOL 1e-4, ATOL 1e-6.
"""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from spnas.supernet.builder import ChildNet, Supernet
from spnas.cli.main import _Parser
from spnas.cli.export import add_export_parser, cmd_export
from spnas.pipeline.tools import default_out
from spnas.core.errors import SpnasError
from spnas.exporting.exporter import ONNX_OPSET, export_onnx, export_tflite, keras_from_child, keras_to_tflite
from spnas.supernet.loading import load_child, read_child
from spnas.training.train import CHILD_FORMAT
from spnas.space.graph import SpaceGraph
from spnas.training.oneshot import save_supernet

RTOL, ATOL = 1e-4, 1e-6
N_INPUTS = 3

# Architectures with skips, k5e6 and the expansion-1 fixed first block (every space has one);
# spnas-cifar: 5 stages of 4 (stride 2, 2, 2, 1, 2); tiny: 2 stages of 2 with k7 and e2/e4.
CIFAR_ARCH = ("k5e6 skip skip k3e3 | k3e6 k5e3 skip skip | k5e6 k3e3 k5e6 skip | k3e3 skip skip skip | "
              "k5e6 k5e6 k3e6 skip")
TINY_ARCH = "k7e2 skip | k5e6 k3e3"
TINY_ARCH_2 = "k3e4 k7e6 | k3e6 skip"

def _missing(*modules: str) -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is None for m in modules)


needs_onnx = pytest.mark.skipif(_missing("onnx", "onnxruntime"), reason="onnx/onnxruntime not installed")
needs_tflite = pytest.mark.skipif(_missing("tensorflow", "keras", "ai_edge_litert"),
                                  reason="tensorflow/keras/ai-edge-litert not installed")


def close(a, b) -> float:
    """The error relative to the reference's scale; asserts the agreement stated above."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float(np.abs(a - b).max())
    scale = float(np.abs(b).max())
    assert err <= RTOL * scale + ATOL, f"max |a - b| = {err:.3g} > {RTOL} * {scale:.3g} + {ATOL}"
    return err / scale


@torch.no_grad()
def randomize(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random conv/linear weights, BatchNorm affine and running statistics; eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            fan_in = m.weight[0].numel()
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
        elif isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.copy_(0.5 + torch.rand(n, generator=g))
            m.bias.copy_(0.2 * torch.randn(n, generator=g))
            m.running_mean.copy_(0.2 * torch.randn(n, generator=g))
            m.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=g))
        elif isinstance(m, torch.nn.Linear):
            m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)
            m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return net.eval()


def random_child(space_name: str, arch: str, seed: int = 0) -> ChildNet:
    space = SpaceGraph.load(space_name)
    return randomize(ChildNet(space, space.parse(arch)), seed)


def inputs(child: ChildNet, seed: int = 1) -> torch.Tensor:
    spec = child.space.spec
    return torch.randn(N_INPUTS, spec.in_chs, spec.resolution, spec.resolution,
                       generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def torch_logits(child: ChildNet, x: torch.Tensor) -> np.ndarray:
    out = child.eval()(x).numpy()
    assert np.abs(out - out.mean(0)).max() > 1e-3 * np.abs(out).max(), "outputs do not depend on the input"
    return out


def run_onnx(data: bytes | str, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    path_or_bytes = data if isinstance(data, str) else bytes(data)
    sess = ort.InferenceSession(path_or_bytes, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    if sess.get_inputs()[0].shape[0] == x.shape[0]:
        return sess.run(None, {name: x.numpy()})[0]
    return np.concatenate([sess.run(None, {name: x[i:i + 1].numpy()})[0] for i in range(len(x))])


def run_tflite(data: bytes, x: torch.Tensor) -> np.ndarray:
    """One image at a time (batch 1), NHWC."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=data)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    assert list(inp["shape"]) == [1, x.shape[2], x.shape[3], x.shape[1]], inp["shape"]
    rows = []
    for i in range(len(x)):
        it.set_tensor(inp["index"], np.ascontiguousarray(x[i:i + 1].permute(0, 2, 3, 1).numpy()))
        it.invoke()
        rows.append(it.get_tensor(out["index"]).copy())
    return np.concatenate(rows)


# --- ONNX ---------------------------------------------------------------------------------------

@needs_onnx
@pytest.mark.parametrize("space_name,arch", [("spnas-cifar", CIFAR_ARCH), ("tiny", TINY_ARCH),
                                             ("tiny", TINY_ARCH_2)])
def test_onnx_equals_pytorch(tmp_path, space_name, arch, recwarn):
    child = random_child(space_name, arch)
    x = inputs(child)
    path = export_onnx(child, tmp_path / "child.onnx", dynamic_batch=True)
    got = run_onnx(str(path), x)  # the whole batch at once (symbolic batch dimension)
    print(f"onnx {space_name}: relative error {close(got, torch_logits(child, x)):.2e}")
    # the current exporter, not the deprecated TorchScript one (which warns on every use)
    assert not [w for w in recwarn if "TorchScript-based ONNX export" in str(w.message)]


@needs_onnx
def test_onnx_static_batch_and_training_mode_kept(tmp_path):
    child = random_child("tiny", TINY_ARCH).train()
    path = export_onnx(child, tmp_path / "child.onnx")
    assert child.training, "export must not leave the caller's model in eval mode"
    import onnx

    model = onnx.load(str(path))
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, 16, 16] and model.opset_import[0].version == ONNX_OPSET == 18
    # torch's current exporter folded BatchNorm into the convolutions
    assert {n.op_type for n in model.graph.node} == {"Conv", "Relu", "Add", "ReduceMean", "Gemm"}
    x = inputs(child)
    close(run_onnx(str(path), x), torch_logits(child, x))  # eval-mode outputs (running statistics)


# --- Keras and TFLite -----------------------------------------------------------------------------

@needs_tflite
@pytest.mark.parametrize("space_name,arch", [("spnas-cifar", CIFAR_ARCH), ("tiny", TINY_ARCH)])
def test_keras_and_tflite_equal_pytorch(tmp_path, space_name, arch):
    child = random_child(space_name, arch, seed=3)
    x = inputs(child)
    want = torch_logits(child, x)
    model = keras_from_child(child, batch=N_INPUTS)
    keras_out = np.asarray(model(x.permute(0, 2, 3, 1).numpy(), training=False))
    print(f"keras {space_name}: relative error {close(keras_out, want):.2e}")
    path = export_tflite(child, tmp_path / "child.tflite")
    print(f"tflite {space_name}: relative error {close(run_tflite(path.read_bytes(), x), want):.2e}")


@needs_tflite
def test_keras_model_has_every_weight():
    """Each Keras layer with weights got the PyTorch values (not its own initialization)."""
    child = random_child("tiny", TINY_ARCH_2, seed=5)
    model = keras_from_child(child)
    bn = child.layers[2].bn1  # blocks.1.0 (k3e4): expansion BN
    gamma, beta, mean, var = model.get_layer("blocks_1_0_bn1").get_weights()
    np.testing.assert_array_equal(mean, bn.running_mean.numpy())
    np.testing.assert_array_equal(var, bn.running_var.numpy())
    np.testing.assert_array_equal(gamma, bn.weight.detach().numpy())
    dw = model.get_layer("blocks_1_1_conv_dw").get_weights()[0]
    assert dw.shape == (7, 7, 16 * 6, 1)
    np.testing.assert_array_equal(dw[:, :, 5, 0], child.layers[3].conv_dw.weight[5, 0].detach().numpy())
    assert "blocks_2_1_conv_dw" not in {l.name for l in model.layers}  # skipped layer: not built


# --- checkpoints ----------------------------------------------------------------------------------

def _supernet(space: SpaceGraph, seed: int = 7) -> Supernet:
    torch.manual_seed(seed)
    return randomize(Supernet(space), seed)


@needs_onnx
def test_supernet_checkpoint_route(tmp_path):
    """supernet.pt -> load_child -> ONNX equals ChildNet.from_supernet; a run directory works too."""
    space = SpaceGraph.load("tiny")
    net = _supernet(space)
    path = save_supernet(tmp_path / "run" / "supernet.pt", net, "uniform")
    arch = space.parse(TINY_ARCH)
    want_child = ChildNet.from_supernet(net, arch).eval()
    x = inputs(want_child)
    want = torch_logits(want_child, x)
    with torch.no_grad():
        np.testing.assert_allclose(net(x, arch=arch).numpy(), want, rtol=0, atol=1e-5)
    for source in (path, tmp_path / "run"):
        child = load_child(space, TINY_ARCH, source)
        close(run_onnx(str(export_onnx(child, tmp_path / "c.onnx")), x), want)


def test_single_path_checkpoint_and_classes(tmp_path):
    """A single-path run checkpoint (Supernet state dict) with 4 classes: the space follows it."""
    from dataclasses import replace

    from spnas.strategies.single_path import CHECKPOINT_FORMAT

    base = SpaceGraph.load("tiny")
    space4 = SpaceGraph(replace(base.spec, num_classes=4))
    net = _supernet(space4, seed=11)
    torch.save({"format": CHECKPOINT_FORMAT, "space": "tiny", "state": {"epoch": 1}, "model": net.state_dict()},
               tmp_path / "checkpoint.pt")
    loaded = read_child(base, TINY_ARCH_2, tmp_path / "checkpoint.pt", num_classes=10)
    assert loaded.checkpoint_classes == 4 and loaded.child.space.spec.num_classes == 4
    want = ChildNet.from_supernet(net, space4.parse(TINY_ARCH_2)).eval()
    x = inputs(want)
    with torch.no_grad():
        np.testing.assert_array_equal(loaded.child.eval()(x).numpy(), want(x).numpy())


@needs_onnx
def test_child_checkpoint(tmp_path):
    """spnas-child-v1: the architecture comes from the file; another one is refused."""
    child = random_child("tiny", TINY_ARCH, seed=13)
    torch.save({"format": CHILD_FORMAT, "space": "tiny", "arch": str(child.arch), "model": child.state_dict()},
               tmp_path / "child.pt")
    got = load_child(None, None, tmp_path / "child.pt")  # space and arch from the checkpoint
    assert got.arch == child.arch and got.space.name == "tiny"
    x = inputs(child)
    close(run_onnx(str(export_onnx(got, tmp_path / "c.onnx")), x), torch_logits(child, x))
    assert load_child("tiny", TINY_ARCH, tmp_path / "child.pt").arch == child.arch
    with pytest.raises(SpnasError, match="holds the child network of k7e2 skip"):
        load_child("tiny", TINY_ARCH_2, tmp_path / "child.pt")


def _one_line_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(SpnasError, match=match) as info:
        load_child(*args, **kwargs)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_bad_checkpoints(tmp_path):
    tiny, cifar = SpaceGraph.load("tiny"), SpaceGraph.load("spnas-cifar")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    _one_line_error(r"--checkpoint .*junk\.pt: not a valid spnas checkpoint", tiny, TINY_ARCH, tmp_path / "junk.pt")
    _one_line_error(r"--checkpoint .*missing\.pt: no such checkpoint", tiny, TINY_ARCH, tmp_path / "missing.pt")
    torch.save({"format": "spnas-uniform-training-v0", "model": {}}, tmp_path / "other.pt")
    text = _one_line_error(r"other\.pt: holds 'spnas-uniform-training-v0'", tiny, TINY_ARCH, tmp_path / "other.pt")
    assert "spnas-supernet-v1" in text and CHILD_FORMAT in text
    torch.save({"no": "format"}, tmp_path / "plain.pt")
    _one_line_error(r"plain\.pt: not a spnas checkpoint", tiny, TINY_ARCH, tmp_path / "plain.pt")
    save_supernet(tmp_path / "supernet.pt", Supernet(tiny), "uniform")
    _one_line_error(r"supernet\.pt: holds a network of space 'tiny', not 'spnas-cifar'; pass --space tiny",
                    cifar, CIFAR_ARCH, tmp_path / "supernet.pt")
    _one_line_error(r"holds every architecture; pass the one", tiny, None, tmp_path / "supernet.pt")
    state = {"format": "spnas-single-path-v1", "space": "tiny", "model": Supernet(tiny).state_dict()}
    state["model"].pop("layers.2.conv_dw.weight")
    torch.save(state, tmp_path / "partial.pt")
    _one_line_error(r"partial\.pt: its weights do not fit the supernet of space 'tiny'", tiny, TINY_ARCH,
                    tmp_path / "partial.pt")
    (tmp_path / "nothing").mkdir()
    _one_line_error(r"directory without model\.pt, supernet\.pt or checkpoint\.pt", tiny, TINY_ARCH, tmp_path / "nothing")


def test_fresh_init_is_reproducible():
    a, b = load_child("tiny", TINY_ARCH), load_child("tiny", TINY_ARCH)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert load_child("tiny", TINY_ARCH, num_classes=3).layers[-1].fc.out_features == 3


# --- command line (its own parser: spnas.cli.main wires 'export' in) ----------------------------------

def _parse(argv: list[str]) -> argparse.Namespace:
    parser = _Parser(prog="spnas")
    add_export_parser(parser.add_subparsers(dest="command", parser_class=_Parser))
    return parser.parse_args(argv)


@needs_onnx
def test_cli_onnx_fresh(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = _parse(["export", TINY_ARCH, "--space", "tiny", "--format", "onnx", "--dynamic-batch"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    space = SpaceGraph.load("tiny")
    path = default_out("tiny", space.parse(TINY_ARCH), "onnx")
    assert (tmp_path / path).is_file() and f"wrote {path}" in out
    assert "fresh initialization" in out and "untrained" in out
    assert "float32 Nx3x16x16 (NCHW, batch dynamic)" in out
    params = sum(p.numel() for p in load_child(space, TINY_ARCH).parameters())
    assert params == space.cost(space.parse(TINY_ARCH))[0] and f"params: {params} " in out


@needs_tflite
def test_cli_tflite_from_supernet(tmp_path, capsys):
    """--format tflite from a supernet.pt of 10-class digits on tiny, space taken from the file."""
    space = SpaceGraph.load("tiny")
    net = _supernet(space, seed=17)
    save_supernet(tmp_path / "supernet.pt", net, "single-path")
    out_path = tmp_path / "out" / "child.tflite"
    args = _parse(["export", TINY_ARCH_2, "--checkpoint", str(tmp_path / "supernet.pt"), "--format", "tflite",
                   "--out", str(out_path), "--num-classes", "7"])
    assert cmd_export(args) == 0
    out = capsys.readouterr().out
    assert "trained by single-path" in out and "--num-classes 7 ignored" in out
    assert "float32 1x16x16x3 (NHWC" in out and "1x10" in out
    want_child = ChildNet.from_supernet(net, space.parse(TINY_ARCH_2)).eval()
    x = inputs(want_child)
    err = close(run_tflite(out_path.read_bytes(), x), torch_logits(want_child, x))
    print(f"tflite (cli, supernet): relative error {err:.2e}")


@needs_onnx
def test_cli_export_of_a_run_directory_reads_its_architecture(tmp_path, capsys):
    """``spnas export --checkpoint RUN_DIR``: the architecture comes from the run's result.yaml, the
    weights from its supernet; the same as naming the architecture."""
    import yaml


    space = SpaceGraph.load("tiny")
    run = tmp_path / "run"
    run.mkdir()
    save_supernet(run / "supernet.pt", _supernet(space, seed=5), "single-path")
    (run / "result.yaml").write_text(yaml.safe_dump({"strategy": "single-path", "space": "tiny", "arch": TINY_ARCH_2}))
    args = _parse(["export", "--checkpoint", str(run), "--format", "onnx", "--out", str(tmp_path / "a.onnx")])
    assert cmd_export(args) == 0
    assert f"architecture: {space.parse(TINY_ARCH_2)}" in capsys.readouterr().out
    args = _parse(["export", TINY_ARCH_2, "--checkpoint", str(run), "--format", "onnx", "--out", str(tmp_path / "b.onnx")])
    assert cmd_export(args) == 0
    x = inputs(load_child(space, TINY_ARCH_2))
    assert np.array_equal(run_onnx(str(tmp_path / "a.onnx"), x), run_onnx(str(tmp_path / "b.onnx"), x))


def test_cli_errors(tmp_path):
    with pytest.raises(SystemExit) as info:  # --format is required; argparse's one line, exit 2
        _parse(["export", TINY_ARCH])
    assert info.value.code == 2
    args = _parse(["export", TINY_ARCH, "--space", "tiny", "--format", "tflite", "--dynamic-batch"])
    with pytest.raises(SpnasError, match="--dynamic-batch"):
        cmd_export(args)
    args = _parse(["export", "--space", "tiny", "--format", "onnx"])
    with pytest.raises(SpnasError, match="no architecture"):
        cmd_export(args)
    args = _parse(["export", "k3e3", "--space", "tiny", "--format", "onnx", "--out", str(tmp_path / "x.onnx")])
    with pytest.raises(SpnasError, match="has 1 ops; space tiny has 4"):
        cmd_export(args)


@needs_tflite
def test_keras_to_tflite_is_quiet(capsys):
    """The converter's printout (Keras's 'Saved artifact ...') stays off stdout."""
    from spnas.exporting.keras_model import layer_model

    space = SpaceGraph.load("tiny")
    data = keras_to_tflite(layer_model(space, space.layers[-1]))
    assert data[4:8] == b"TFL3" and capsys.readouterr().out == ""
