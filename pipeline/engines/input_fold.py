"""Exact rewrites of frame graphs before ONNX Runtime CPU loads them: the float round trip at
the input of INT8 graphs, and explicit paddings folded into the convolutions after them.

Every frame graph starts from uint8 pixels: ``Cast -> Sub(mean) -> Div(std) [-> Pad(0)] ->
QuantizeLinear(scale, zero_point)``. In the INT8 graphs of this project (mean 127, std 128, the
first activation quantized with scale 1/128 and zero point 127) that chain gives back the very
uint8 values it was fed, padded with the zero point, yet ONNX Runtime runs it in float32 with a
per-channel broadcast: a fifth of the INT8 trunk's and the fight motion graph's CPU time (ORT
profile, batch 8, one thread). ``fold_input`` replaces it with a uint8 ``Pad`` (or nothing).

Exact when, for every channel, ``mean == zero_point`` (an integer) and ``std * scale == 1``:
``round(((x - mean) / std) / scale) + zero_point == x`` for every uint8 ``x``, and the float pad
value 0 quantizes to ``zero_point``. Anything else (FP32 graphs, other constants, a chain with
other consumers) is left as it is.

The exporter writes TF-style "same" padding as a ``Pad`` (its amounts from a constant shape
subgraph) before a ``Conv`` or ``QLinearConv``; the convolution's own ``pads`` pad with 0 (the
input zero point when quantized), so a Pad by that value folds into it (``_fold_pads``). Besides
the copy, the Pad kept ONNX Runtime from running the FP32 trunk in its blocked layout throughout:
per frame, one thread, batch 8, FP32 ped2 trunk 15.5 -> 11.7 ms, FP32 fight motion graph 6.0 ->
4.6 ms, INT8 ones ~3% less. tests/pipeline/engines/test_input_fold.py compares the outputs of the
folded and the original graphs on real frames (identical for the shipped graphs).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def fold_input(path: Path) -> bytes | None:
    """The serialized graph with its input chain and explicit paddings folded, or None when
    nothing folds (or the ``onnx`` package is not installed: the graph then runs as it is)."""
    try:
        import onnx
    except ImportError:
        return None
    model = onnx.load(str(path))
    folded = _fold(model)
    padded = _fold_pads(model)
    if not folded and not padded:
        return None
    logger.info("onnxruntime: %s loads with %s%d Pad(s) folded into convolutions", path.name,
                "its INT8 input chain and " if folded else "", padded)
    return bytes(model.SerializeToString())


def _fold_pads(model: Any) -> int:
    """``Pad -> Conv`` / ``Pad -> QLinearConv`` (the exporter's "same" padding, a constant shape
    subgraph) into the convolution's own ``pads``: it pads with 0, or with the input zero point
    when quantized, which is what these Pads write. Exact; saves the Pad's copy of the tensor
    (4-9% of the trunk's time). Returns how many folded."""
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    candidates = []
    for pad in graph.node:
        if pad.op_type != "Pad" or len(pad.input) > 3 or pad.output[0] in outputs:
            continue
        if next((a.s for a in pad.attribute if a.name == "mode"), b"constant") != b"constant":
            continue
        conv = users.get(pad.output[0], [])
        if len(conv) != 1 or conv[0].op_type not in ("Conv", "QLinearConv") or conv[0].input[0] != pad.output[0]:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in conv[0].attribute}
        if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or any(attrs.get("pads", [0])):
            continue
        candidates.append((pad, conv[0]))
    if not candidates:
        return 0
    values = _evaluate(model, [pad.input[1] for pad, _ in candidates], producer, constants)
    folded = 0
    for pad, conv in candidates:
        pads = values.get(pad.input[1])
        if pads is None or pads.shape != (8,) or pads[0] or pads[1] or pads[4] or pads[5] or np.any(pads < 0):
            continue
        if not _pads_like_conv(pad, conv, constants, producer):
            continue
        conv.input[0] = pad.input[0]
        for attr in list(conv.attribute):
            if attr.name == "pads":
                conv.attribute.remove(attr)
        conv.attribute.append(helper.make_attribute("pads", [int(pads[i]) for i in (2, 3, 6, 7)]))
        graph.node.remove(pad)
        folded += 1
    return folded


def _pads_like_conv(pad: Any, conv: Any, constants: dict[str, np.ndarray], producer: dict[str, Any]) -> bool:
    """The Pad's value is what the convolution pads with: 0, or the quantized input's zero point."""
    from onnx import numpy_helper

    def value(name: str) -> np.ndarray | None:
        if name in constants:
            return constants[name]
        node = producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    pad_value = value(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else np.zeros(())
    if conv.op_type == "Conv":
        return pad_value is not None and bool(np.all(pad_value == 0))
    zero = value(conv.input[2])
    return (pad_value is not None and zero is not None and zero.size == 1 and pad_value.size == 1
            and pad_value.dtype == zero.dtype and int(pad_value.reshape(())) == int(zero.reshape(())))


def _evaluate(model: Any, names: list[str], producer: dict[str, Any],
              constants: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Values of ``names`` computed from constants alone (a tensor that depends on a graph input
    is left out), with ONNX's reference evaluator on just the nodes they need."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    inputs = {i.name for i in model.graph.input}
    out: dict[str, np.ndarray] = {}
    for name in dict.fromkeys(names):
        if name in constants:
            out[name] = constants[name]
            continue
        needed: list[Any] = []
        stack, seen, ok = [name], set(), True
        while stack and ok:
            tensor = stack.pop()
            if tensor in seen or tensor in constants or not tensor:
                continue
            seen.add(tensor)
            node = producer.get(tensor)
            if node is None or tensor in inputs:
                ok = False
                break
            needed.append(node)
            stack.extend(node.input)
        if not ok:
            continue
        position = {id(node): index for index, node in enumerate(model.graph.node)}
        nodes = sorted({id(node): node for node in needed}.values(), key=lambda node: position[id(node)])
        used = {tensor for node in nodes for tensor in node.input}
        inits = [init for init in model.graph.initializer if init.name in used]
        graph = helper.make_graph(nodes, "pads", [], [helper.make_empty_tensor_value_info(name)], inits)
        sub = helper.make_model(graph, opset_imports=model.opset_import)
        try:
            result: Any = ReferenceEvaluator(sub).run(None, {})  # a list, whatever the stubs say
            out[name] = np.asarray(result[0])
        except Exception:  # an op the reference evaluator lacks: that Pad stays
            continue
    return out


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
