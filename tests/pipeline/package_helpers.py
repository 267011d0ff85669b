"""Tiny model packages written with the ``onnx`` package, for runner and manifest tests.

``motion_package`` is a package whose frame graph reads the ``runtime.delta`` feature
(``frame_delta``): its per-frame output is the mean of each delta image, and its window graph
averages that over the window, so tests can predict every value from ``encode_clip``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import onnx
from onnx import TensorProto, helper

from pipeline.features.delta import KIND as DELTA
from pipeline.modelpkg import sha256_file

OPSET = 17  # ReduceMean still takes ``axes`` as an attribute
IR_VERSION = 8  # old enough for any ONNX Runtime we pin


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs),
                              opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def frame_mean_graph(height: int, width: int) -> onnx.ModelProto:
    """uint8 ``x [N, H, W, 3]`` -> float ``m [N]``: the mean of each image."""
    return _model(
        [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
         helper.make_node("ReduceMean", ["xf"], ["m"], axes=[1, 2, 3], keepdims=0)],
        [helper.make_tensor_value_info("x", TensorProto.UINT8, ["N", height, width, 3])],
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N"])])


def window_mean_graph(scaled: bool) -> onnx.ModelProto:
    """float ``m [N, T]`` -> ``score [N, 1]`` (window mean, times ``scale [1]`` when ``scaled``) and
    ``per_frame [N, T]`` (``m`` itself)."""
    nodes = [helper.make_node("ReduceMean", ["m"], ["mean"], axes=[1], keepdims=1),
             helper.make_node("Identity", ["m"], ["per_frame"])]
    inputs = [helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N", "T"])]
    if scaled:
        nodes.append(helper.make_node("Mul", ["mean", "scale"], ["score"]))
        inputs.append(helper.make_tensor_value_info("scale", TensorProto.FLOAT, [1]))
    else:
        nodes.append(helper.make_node("Identity", ["mean"], ["score"]))
    return _model(nodes, inputs, [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 1]),
                                  helper.make_tensor_value_info("per_frame", TensorProto.FLOAT, ["N", "T"])])


def write_package(root: Path, manifest: dict[str, Any], models: Mapping[str, onnx.ModelProto]) -> Path:
    """Save each graph as ``<name>.onnx`` and fill in its manifest entry's ``file`` and ``sha256``."""
    root.mkdir(parents=True, exist_ok=True)
    for graph in manifest["graphs"]:
        path = root / f"{graph['name']}.onnx"
        onnx.save(models[graph["name"]], path)
        graph.update(file=path.name, sha256=sha256_file(path))
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def motion_package(root: Path, size: int = 224, gain: float = 3.0, frames: int = 4,
                   reads: str = "runtime.delta", calibrate: bool = False) -> Path:
    """The motion package in ``root``; ``reads`` is the frame graph's source, ``calibrate`` makes
    the window graph read ``state.scale``, fitted live on collected ``runtime.delta``."""
    head_inputs = {"m": "motion.m", **({"scale": "state.scale"} if calibrate else {})}
    manifest: dict[str, Any] = {
        "name": root.name, "version": "1", "task": "action",
        "input": {"height": size, "width": size, "mean": [0, 0, 0], "std": [1, 1, 1]},
        "window": {"frames": frames, "stride": 1},
        "graphs": [{"name": "motion", "over": "frame", "inputs": {"x": reads}, "outputs": ["m"]},
                   {"name": "head", "over": "window", "inputs": head_inputs, "outputs": ["score", "per_frame"]}],
        "runtime_features": {"delta": {"kind": DELTA, "height": size, "width": size, "gain": gain}},
        "labels": ["motion"], "alert_label": "motion", "scores": "head.score", "frame_scores": "head.per_frame",
    }
    if calibrate:
        manifest["calibration"] = {"fit": "window_gaussian", "collect": ["runtime.delta"], "seconds": 2.0,
                                   "params": {"source": "runtime.delta"}}
    models = {"motion": frame_mean_graph(size, size), "head": window_mean_graph(calibrate)}
    return write_package(root, manifest, models)
