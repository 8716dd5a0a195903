"""int8: full-integer TFLite export calibrated on the run's data, int8 latency tables, and the
accuracy cost of quantizing, measured by 'spnas export' and 'spnas eval' of the .tflite file."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest

import spnas
from spnas.cli.main import main

pytestmark = pytest.mark.skipif(importlib.util.find_spec("ai_edge_litert") is None,
                                reason="ai-edge-litert not installed (pip install 'spnas[tflite]')")

ARCH = "k5e6 k5e6 | k5e6 k5e6"
#: the stated tolerance: int8 top-1 within 3 points of float32 top-1 on the digits validation split
INT8_TOLERANCE = 0.03


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("int8") / "train"
    return spnas.train(ARCH, "tiny", data="digits", out=out, epochs=3, report=False)


def _number(pattern: str, text: str) -> float:
    return float(re.search(pattern, text).group(1))


def test_int8_export_runs_and_stays_within_tolerance_of_float(trained, tmp_path, capsys):
    path = tmp_path / "net-int8.tflite"
    assert main(["export", "--checkpoint", str(trained.run_dir), "--format", "tflite", "--quantize", "int8",
                 "--out", str(path)]) == 0
    out = capsys.readouterr().out
    assert "TFLite int8" in out and "input: 'input' int8" in out and "1x16x16x3 (NHWC" in out
    float_top1 = _number(r"float32 (\d\.\d+), int8", out)
    int8_top1 = _number(r"int8 (\d\.\d+) \(", out)
    # the float number is the trained network's own validation top-1
    assert float_top1 == pytest.approx(trained.top1, abs=5e-5)
    assert abs(int8_top1 - float_top1) <= INT8_TOLERANCE
    assert int8_top1 > 0.5  # a working classifier, not noise (10 classes)
    # every tensor of the computation is integer: full-integer quantization, int8 in and out
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    assert it.get_input_details()[0]["dtype"] == np.int8 and it.get_output_details()[0]["dtype"] == np.int8
    kinds = {np.dtype(t["dtype"]).name for t in it.get_tensor_details()}
    assert "float32" not in kinds and "int8" in kinds
    # 'spnas eval' of the .tflite file measures what export reported (two routes to one number)
    assert main(["eval", str(path), "--data", "digits"]) == 0
    assert _number(r"validation top-1 (\d\.\d+)", capsys.readouterr().out) == pytest.approx(int8_top1, abs=5e-5)


def test_eval_of_a_float_tflite_file_agrees_with_pytorch(trained, tmp_path):
    path = tmp_path / "net.tflite"
    spnas.export(trained, path, format="tflite")
    got = spnas.evaluate(path, data="digits")
    assert got.arch is None and "TFLite float32 model" in got.weights
    # float rounding may flip an image or two near a decision boundary, no more
    assert abs(got.val_top1 - trained.top1) <= 2 / 360


def test_quantize_is_refused_where_it_does_not_apply(tmp_path):
    with pytest.raises(spnas.SpnasError, match="--quantize int8: only TFLite models are quantized"):
        spnas.export(ARCH, tmp_path / "x.onnx", space="tiny", quantize="int8")
    with pytest.raises(spnas.SpnasError, match="--quantize 'int4' is not allowed; use one of float32, int8"):
        spnas.export(ARCH, tmp_path / "x.tflite", space="tiny", format="tflite", quantize="int4")
    from spnas.devices.tflite import TFLiteDevice

    with pytest.raises(spnas.SpnasError, match="option quantize='int4' is not allowed"):
        TFLiteDevice(quantize="int4")


@pytest.mark.slow
def test_int8_table_orders_networks_as_measured_int8_networks(tmp_path):
    """Every layer model and every whole network quantized the same way: the int8 table's
    predictions order three networks far apart in cost as their measured int8 times do."""
    from spnas.devices.tflite import TFLiteDevice
    from spnas.latency.runtime import RuntimeModel
    from spnas.space.graph import SpaceGraph

    # a smaller space than tiny (few layer models to convert), with costs far apart
    yaml = tmp_path / "micro.yaml"
    yaml.write_text("name: micro\ninput: {resolution: 16, channels: 3}\nnum_classes: 10\n"
                    "stem: {out_chs: 8, kernel: 3, stride: 1}\nblocks:\n"
                    "  - search: {out_chs: 32, layers: 2, stride: 1, kernel: [3, 5], expansion: [2, 6], skip: true}\n"
                    "head: {out_chs: 32}\n")
    space = SpaceGraph.load(str(yaml))
    device = TFLiteDevice(quantize="int8", processes=1, calibrate=0, runs=20, warmup=3, cache=False)
    table = device.latency_table(space, progress=False)
    assert "int8" in table.header.runtime and "quantize=int8" in table.header.source
    runtime = RuntimeModel(space, table)
    archs = [space.parse("k3e2 skip"), space.parse("k3e6 k3e2"), space.largest()]
    predicted = [runtime.predict(a) for a in archs]
    measured = [t.median for t in device.measure_models([device.network_bytes(space, a) for a in archs])]
    assert np.argsort(predicted).tolist() == np.argsort(measured).tolist() == [0, 1, 2]
    # the whole networks measured are int8 models too
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=device.network_bytes(space, archs[0]))
    assert it.get_input_details()[0]["dtype"] == np.int8
