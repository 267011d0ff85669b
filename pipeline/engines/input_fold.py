"""Skip the float round trip at the input of INT8 graphs, bit for bit (ONNX Runtime CPU).

Every frame graph starts from uint8 pixels: ``Cast -> Sub(mean) -> Div(std) [-> Pad(0)] ->
QuantizeLinear(scale, zero_point)``. In the INT8 graphs of this project (mean 127, std 128, the
first activation quantized with scale 1/128 and zero point 127) that chain gives back the very
uint8 values it was fed, padded with the zero point, yet ONNX Runtime runs it in float32 with a
per-channel broadcast: a fifth of the INT8 trunk's and the fight motion graph's CPU time (ORT
profile, batch 8, one thread). ``fold_input`` replaces it with a uint8 ``Pad`` (or nothing).

Exact when, for every channel, ``mean == zero_point`` (an integer) and ``std * scale == 1``:
``round(((x - mean) / std) / scale) + zero_point == x`` for every uint8 ``x``, and the float pad
value 0 quantizes to ``zero_point``. Anything else (FP32 graphs, other constants, a chain with
other consumers) is left as it is. tests/pipeline/engines/test_input_fold.py compares the outputs
of the folded and the original graph on real frames.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def fold_input(path: Path) -> bytes | None:
    """The serialized graph with its input chain folded, or None when nothing folds (or the
    ``onnx`` package is not installed: the graph then runs as it is)."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path))
    if not _fold(model):
        return None
    return bytes(model.SerializeToString())


def _fold(model: Any) -> bool:
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    producer = {out: node for node in graph.node for out in node.output}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}

    def single(name: str) -> bool:
        return consumers.get(name, 0) == 1 and name not in outputs

    folded = False
    for quant in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        chain = _chain(quant, producer, single)
        if chain is None:
            continue
        cast, sub, div, pad = chain
        scale = constants.get(quant.input[1])
        zero = constants.get(quant.input[2]) if len(quant.input) > 2 else None
        mean, std = constants.get(sub.input[1]), constants.get(div.input[1])
        if scale is None or zero is None or mean is None or std is None:
            continue
        if zero.dtype != np.uint8 or zero.size != 1 or scale.size != 1:
            continue
        if not (np.all(mean == float(zero)) and np.all(std.astype(np.float64) * float(scale) == 1.0)):
            continue
        if pad is not None and not _zero_constant_pad(pad, constants):
            continue
        removed = {id(n) for n in (cast, sub, div, pad, quant) if n is not None}
        new_nodes = [n for n in graph.node if id(n) not in removed]
        index = min(i for i, n in enumerate(graph.node) if id(n) in removed)
        if pad is not None:
            value_name = quant.output[0] + "_pad_value"
            graph.initializer.append(numpy_helper.from_array(zero.reshape(()).astype(np.uint8), value_name))
            extra = list(pad.input[3:4])  # axes, when given
            replacement = helper.make_node("Pad", [cast.input[0], pad.input[1], value_name, *extra],
                                           [quant.output[0]], name=quant.name + "_folded_pad", mode="constant")
        else:
            replacement = helper.make_node("Identity", [cast.input[0]], [quant.output[0]],
                                           name=quant.name + "_folded")
        new_nodes.insert(index, replacement)
        del graph.node[:]
        graph.node.extend(new_nodes)
        folded = True
        break  # a graph has one frame input
    return folded


def _chain(quant: Any, producer: dict[str, Any], single: Any) -> tuple[Any, Any, Any, Any] | None:
    """(Cast, Sub, Div, Pad or None) feeding ``quant`` one into the next, each output used once."""
    node = producer.get(quant.input[0])
    pad = None
    if node is not None and node.op_type == "Pad" and single(node.output[0]):
        pad, node = node, producer.get(node.input[0])
    if node is None or node.op_type != "Div" or not single(node.output[0]):
        return None
    div, node = node, producer.get(node.input[0])
    if node is None or node.op_type != "Sub" or not single(node.output[0]):
        return None
    sub, node = node, producer.get(node.input[0])
    if node is None or node.op_type != "Cast" or not single(node.output[0]):
        return None
    return node, sub, div, pad


def _zero_constant_pad(pad: Any, constants: dict[str, np.ndarray]) -> bool:
    mode = next((a.s.decode() for a in pad.attribute if a.name == "mode"), "constant")
    if mode != "constant":
        return False
    if len(pad.input) > 2 and pad.input[2]:
        value = constants.get(pad.input[2])
        return value is not None and bool(np.all(value == 0))
    return True  # no constant_value input: pads with 0
