"""The INT8 input fold: same outputs as the graph as built, on real frames, through ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.engines import create_engine
from pipeline.engines.input_fold import fold_input
from tests.conftest import PEOPLE_CLIP


def _frames(height: int, width: int, count: int, start: int = 0) -> np.ndarray:
    cap = cv2.VideoCapture(str(PEOPLE_CLIP))
    frames, index = [], 0
    while len(frames) < count:
        ok, bgr = cap.read()
        assert ok, "people clip too short"
        if index >= start and index % 40 == 0:
            frames.append(cv2.cvtColor(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA),
                                       cv2.COLOR_BGR2RGB))
        index += 1
    cap.release()
    return np.stack(frames)


def _session(source: str | bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _input_chain(path: Path, mean: float, std: float, scale: float, zero: int) -> Path:
    """uint8 NHWC -> Transpose -> Cast -> Sub -> Div -> Pad(0) -> QuantizeLinear -> QLinearConv ->
    DequantizeLinear, as the exporter and ORT's quantizer write the head of a frame graph."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(np.full((1, 3, 1, 1), mean, np.float32), "mean"),
             numpy_helper.from_array(np.full((1, 3, 1, 1), std, np.float32), "std"),
             numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(np.array(scale, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(zero, np.uint8), "x_zero"),
             numpy_helper.from_array(rng.integers(-60, 60, (4, 3, 3, 3)).astype(np.int8), "w"),
             numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(4, np.int8), "w_zero"),
             numpy_helper.from_array(np.array(0.05, np.float32), "y_scale"),
             numpy_helper.from_array(np.array(128, np.uint8), "y_zero")]
    nodes = [helper.make_node("Transpose", ["frames"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["t"], ["c"], to=TensorProto.FLOAT),
             helper.make_node("Sub", ["c", "mean"], ["s"]),
             helper.make_node("Div", ["s", "std"], ["d"]),
             helper.make_node("Pad", ["d", "pads"], ["p"], mode="constant"),
             helper.make_node("QuantizeLinear", ["p", "x_scale", "x_zero"], ["q"]),
             helper.make_node("QLinearConv", ["q", "x_scale", "x_zero", "w", "w_scale", "w_zero", "y_scale",
                                              "y_zero"], ["y"]),
             helper.make_node("DequantizeLinear", ["y", "y_scale", "y_zero"], ["out"])]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("frames", TensorProto.UINT8,
                                                                            ["n", 32, 48, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_the_identity_chain_folds_bit_for_bit(tmp_path: Path) -> None:
    path = _input_chain(tmp_path / "head.onnx", mean=127, std=128, scale=1 / 128, zero=127)
    folded = fold_input(path)
    assert folded is not None
    ops = [n.op_type for n in onnx.load_from_string(folded).graph.node]
    assert ops == ["Transpose", "QLinearConv", "DequantizeLinear"]  # the uint8 Pad went into the conv's pads
    frames = _frames(32, 48, 4)
    frames[0] = 0
    frames[1] = 255  # both ends of the uint8 range
    expected = _session(str(path)).run(None, {"frames": frames})[0]
    assert np.array_equal(_session(folded).run(None, {"frames": frames})[0], expected)


@pytest.mark.parametrize(("mean", "std", "scale", "zero"), [(128, 128, 1 / 128, 127), (127, 127.5, 1 / 128, 127),
                                                            (127, 128, 1 / 127, 127)])
def test_a_chain_that_is_not_the_identity_is_left_alone(tmp_path: Path, mean: float, std: float, scale: float,
                                                        zero: int) -> None:
    assert fold_input(_input_chain(tmp_path / "head.onnx", mean, std, scale, zero)) is None


def test_fp32_trunk_pads_fold_into_its_convolutions_with_the_same_features(models_dir: Path) -> None:
    path = models_dir / "demo-anomaly" / "trunk.onnx"
    folded = fold_input(path)
    assert folded is not None
    before = [n.op_type for n in onnx.load(str(path)).graph.node]
    after = [n.op_type for n in onnx.load_from_string(folded).graph.node]
    assert "Pad" in before and "Pad" not in after and after.count("Conv") == before.count("Conv")
    frames = _frames(224, 224, 6, start=300)
    expected = _session(str(path)).run(None, {"frames": frames})[0]
    assert np.array_equal(_session(folded).run(None, {"frames": frames})[0], expected)


def _padded_conv(path: Path, value: float) -> Path:
    inits = [numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], np.int64), "pads"),
             numpy_helper.from_array(np.array(value, np.float32), "value"),
             numpy_helper.from_array(np.random.default_rng(0).normal(size=(2, 3, 3, 3)).astype(np.float32), "w")]
    nodes = [helper.make_node("Pad", ["x", "pads", "value"], ["p"], mode="constant"),
             helper.make_node("Conv", ["p", "w"], ["y"], strides=[2, 2])]
    graph = helper.make_graph(nodes, "padded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_a_pad_by_zero_folds_and_a_pad_by_another_value_stays(tmp_path: Path) -> None:
    x = np.random.default_rng(1).normal(size=(1, 3, 9, 9)).astype(np.float32)
    zero = _padded_conv(tmp_path / "zero.onnx", 0.0)
    folded = fold_input(zero)
    assert folded is not None and [n.op_type for n in onnx.load_from_string(folded).graph.node] == ["Conv"]
    expected = _session(str(zero)).run(None, {"x": x})[0]
    assert np.allclose(_session(folded).run(None, {"x": x})[0], expected, atol=1e-6)
    assert fold_input(_padded_conv(tmp_path / "one.onnx", 1.0)) is None


def test_int8_trunk_folded_gives_the_same_features(models_dir: Path, tmp_path: Path) -> None:
    """The real trunk, quantized as models/ does (calibration frames spanning 0..255, so the first
    activation gets scale 1/128, zero point 127), folded and not: identical ``c4`` on other frames."""
    from models.onnx_export import quantize_static_int8

    fp32 = models_dir / "_trunk" / "trunk-224x224.onnx"
    if not fp32.exists():
        pytest.skip(f"{fp32} not built (make models)")
    calibration = _frames(224, 224, 8)
    calibration[0, :8] = 0
    calibration[0, 8:16] = 255
    int8 = quantize_static_int8(fp32, tmp_path / "trunk.int8.onnx", "frames", calibration, batch=4)
    assert fold_input(int8) is not None
    frames = _frames(224, 224, 6, start=600)
    plain = create_engine("onnxruntime", int8, {"fold_input": False}).run({"frames": frames})
    folded = create_engine("onnxruntime", int8, {}).run({"frames": frames})
    assert np.array_equal(folded["c4"], plain["c4"])
