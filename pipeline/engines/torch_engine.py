"""``torch-cuda``: a package's ONNX graphs run on an NVIDIA GPU through PyTorch.

Load: ONNX Runtime folds the graph's constants (basic level: standard ONNX ops only, so the
SAME-padding arithmetic becomes fixed pads), ``onnx2torch`` converts it to a ``torch.fx`` module,
which moves to the GPU. Chosen over a ``torch.export`` program saved in the package because it
needs nothing new in the packages and no torch version match between export and run (the GPU
machine's torch is not ours); the converted module is checked against ONNX Runtime by the tests.

Run: inputs are copied into pinned host buffers and sent on the engine's own CUDA stream
(``non_blocking``); graphs whose inputs are all ``[batch, fixed...]`` run as CUDA graphs, one per
batch size in ``batch_sizes``, all captured when the engine loads (``warmup``), so the live path
never captures: a batch is padded up to the next captured size (extra rows dropped from the
outputs), and a batch above the largest size runs as several replays (chunks of the largest size,
the rest padded), never as a new shape. Capturing is what costs: 3 eager warm-up runs plus
cuDNN's algorithm search (``cudnn.benchmark``, on only while capturing) per size and graph, ~0.1-2 s
each; lazily, in a live worker, those stalls back the frame queues up (the first H200 streams run:
calls of seconds, 56-70% drops). Graphs with other inputs run eagerly, with cuDNN's default
heuristics (no search on each new shape). ``fp16`` runs under ``torch.autocast`` (matmuls/convs in
float16, reductions in float32) and goes through the accuracy gate (``pipeline.engines.precision``).

GPU pre-processing: frames travel as uint8 NHWC at model size; the trunk and motion graphs
begin with Cast -> Sub(mean) -> Div(std) -> Transpose, so sending the uint8 tensor and running
the converted graph on the GPU does the float conversion, normalisation and layout change there.

``device: cpu`` runs the same converted module on the CPU: that is how conversion and parity are
tested on machines without a GPU. torch, onnx and onnx2torch import only when an engine is made.
"""

from __future__ import annotations

import bisect
import importlib.machinery
import importlib.util
import logging
import shutil
import sys
import tempfile
import time
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from pipeline.engines.base import Engine, EngineOptions, parse_options
from pipeline.errors import EngineError

logger = logging.getLogger(__name__)

ENGINE_KEY = "torch-cuda"
MAX_PINNED_BUFFERS = 256
MAX_CONSTANT_BYTES = 1 << 30  # device copies of read-only inputs (fitted state) kept at most


class DeviceConstants:
    """Device copies of read-only host arrays (a camera's fitted state: the anomaly memory bank is
    ~10 MB), made once and reused while the same array object is passed again, instead of a
    host-to-device copy per call. Only arrays with ``writeable`` False are cached (the runner marks
    fitted state so, ``pipeline.camera_state.read_only``): their contents cannot change under the
    cache. The cache holds each array, so its ``id`` is not reused while cached; least recently
    used copies go first past ``max_bytes``."""

    def __init__(self, to_device: Any, max_bytes: int = MAX_CONSTANT_BYTES) -> None:
        self._to_device, self.max_bytes = to_device, max_bytes
        self._copies: dict[int, tuple[np.ndarray, Any]] = {}
        self.nbytes = 0
        self.copies_made = 0

    def get(self, array: np.ndarray) -> Any | None:
        """The device copy of ``array``, or None when it is writeable (the caller copies it per call)."""
        if array.flags.writeable:
            return None
        key = id(array)
        hit = self._copies.pop(key, None)
        if hit is None or hit[0] is not array:
            if hit is not None:
                self.nbytes -= hit[0].nbytes
            hit = (array, self._to_device(array))
            self.copies_made += 1
            self.nbytes += array.nbytes
            while self.nbytes > self.max_bytes and self._copies:
                old = self._copies.pop(next(iter(self._copies)))
                self.nbytes -= old[0].nbytes
        self._copies[key] = hit  # re-inserted last: dict order is the recency order
        return hit[1]


class TorchEngineConfig(EngineOptions):
    """``engine: {name: torch-cuda}``: ONNX graphs converted to PyTorch, run on a CUDA GPU."""

    name: Literal["torch-cuda"] = "torch-cuda"
    device: Literal["cuda", "cpu"] = Field("cuda", description="cpu: same conversion on the CPU (tests)")
    device_index: int = Field(0, ge=0)
    fp16: bool = Field(False, description="torch.autocast float16 (accuracy-gated)")
    cuda_graphs: bool = True
    tf32: bool = Field(True, description="TF32 convs/matmuls in fp32 (Ampere+): faster, ~1e-3 relative error")
    batch_sizes: list[int] = Field([1, 8, 16, 32], min_length=1, description="CUDA graphs captured for these")
    warmup: bool = Field(True, description="capture every batch size's CUDA graph at load, not on the live path")
    allow_precision_loss: bool = Field(False, description="run fp16 even where the accuracy gate refused it")
    fallback: Literal["onnxruntime", "error"] = Field(
        "onnxruntime", description="a graph onnx2torch cannot convert: run it on ONNX Runtime CPU, or fail")

    @field_validator("batch_sizes")
    @classmethod
    def _positive_sorted(cls, value: list[int]) -> list[int]:
        if min(value) < 1:
            raise ValueError(f"must be positive batch sizes, got {value}")
        return sorted(set(value))


def nvidia_gpu_visible() -> bool:
    """An NVIDIA driver with a device node, checked without importing torch (the CPU invariant)."""
    return (Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()
            or any(Path("/dev").glob("nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None)


def missing(import_torch: bool = False) -> str | None:
    """What ``torch-cuda`` lacks on this machine (None: it can run). Without ``import_torch`` (engine
    auto) torch is imported only where an NVIDIA device is visible; a configured torch engine asks
    torch itself."""
    if not import_torch and not nvidia_gpu_visible():
        return "no NVIDIA GPU is visible (no /proc/driver/nvidia/version, no /dev/nvidia*, no nvidia-smi)"
    if absent := missing_packages():
        return absent
    import torch

    if torch.version.cuda is None:
        gpu = "" if nvidia_gpu_visible() else " and no NVIDIA GPU is visible"
        return f"this torch build ({torch.__version__}) has no CUDA{gpu}; install a CUDA torch on a GPU machine"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False: no NVIDIA GPU or driver)"
    return None


def missing_packages() -> str | None:
    """The Python packages ``torch-cuda`` needs on any device (``device: cpu`` needs only these)."""
    for module, pip in (("torch", "torch (a CUDA build)"), ("onnx", "onnx"), ("onnx2torch", "onnx2torch")):
        if importlib.util.find_spec(module) is None:
            return f"the {module} package is not installed (pip install {pip}, or vidwatch[gpu])"
    return None


def _import_onnx2torch() -> Any:
    """onnx2torch imports torchvision for its NMS/RoiAlign converters only; our graphs use neither,
    so where torchvision is absent a stand-in lets the rest import (those two ops then fail if used)."""
    if "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is None:
        def absent(*_: object, **__: object) -> None:
            raise EngineError("this graph needs torchvision (NMS/RoiAlign): pip install torchvision")

        stub, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
        ops.__spec__ = importlib.machinery.ModuleSpec("torchvision.ops", None)
        ops.roi_align = ops.nms = ops.box_convert = absent  # type: ignore[attr-defined]
        stub.ops = ops  # type: ignore[attr-defined]
        sys.modules.update({"torchvision": stub, "torchvision.ops": ops})
    import onnx2torch

    _register_opset18()
    return onnx2torch


_REDUCE_OPS = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean", "ReduceMin",
               "ReduceProd", "ReduceSumSquare")


def _register_opset18() -> None:
    """onnx2torch 1.5 stops at opset 13 for Pad and the Reduce ops (opset 18 moved their ``axes``
    and ``pads`` from attributes to inputs), and its Pad 13 reads pads with ``.tolist()``, a device
    sync CUDA graphs cannot capture. Our graphs are opset 18 with constant pads/axes after folding:
    these converters turn them into fixed modules (parity with ONNX Runtime is tested)."""
    from onnx2torch.node_converters.registry import _CONVERTER_REGISTRY, OperationDescription, add_converter

    def add(op: str, versions: tuple[int, ...], converter: Any) -> None:
        for version in versions:
            if OperationDescription(domain="", operation_type=op, version=version) not in _CONVERTER_REGISTRY:
                add_converter(operation_type=op, version=version)(converter)

    add("Pad", (18, 19, 21, 23, 24), _convert_pad)
    for op in _REDUCE_OPS:
        add(op, (18,), _convert_reduce)


def _rank(graph: Any, name: str) -> int | None:
    info = graph.value_info.get(name)
    return len(info.type.tensor_type.shape.dim) if info is not None and info.type.HasField("tensor_type") else None


def _convert_reduce(node: Any, graph: Any) -> Any:
    from onnx2torch.node_converters.reduce import OnnxReduceStaticAxes
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    names = list(node.input_values)
    keepdims = node.attributes.get("keepdims", 1)
    axes: list[int] | None = None
    if len(names) > 1 and names[1]:
        axes = [int(a) for a in get_const_value(names[1], graph).reshape(-1).tolist()]  # KeyError: not constant
        if any(a < 0 for a in axes):
            rank = _rank(graph, names[0])
            if rank is None:
                raise NotImplementedError(f"{node.operation_type} with negative axes on an input of unknown rank")
            axes = [a % rank for a in axes]
    elif node.attributes.get("noop_with_empty_axes", 0):
        raise NotImplementedError(f"{node.operation_type} with noop_with_empty_axes")
    return OperationConverterResult(
        torch_module=OnnxReduceStaticAxes(operation_type=node.operation_type, axes=axes, keepdims=keepdims),
        onnx_mapping=OnnxMapping(inputs=(names[0],), outputs=node.output_values))


def _convert_pad(node: Any, graph: Any) -> Any:
    from onnx2torch.node_converters import pad as onnx_pad
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult, get_const_value

    data, pads_name, value_name, axes_name = (list(node.input_values) + [""] * 4)[:4]
    mode = node.attributes.get("mode", "constant")
    try:
        pads = [int(p) for p in get_const_value(pads_name, graph).tolist()]
        value = float(get_const_value(value_name, graph)) if value_name else 0.0
        axes = [int(a) for a in get_const_value(axes_name, graph).tolist()] if axes_name else None
    except KeyError:  # pads computed at run time: onnx2torch's dynamic module (no CUDA graph then)
        if axes_name:
            raise NotImplementedError("Pad with run-time pads and axes") from None
        module = onnx_pad.OnnxPadDynamic(mode=onnx_pad._onnx_to_torch_mode(mode))
        return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(
            inputs=tuple(n for n in (data, pads_name, value_name) if n), outputs=node.output_values))
    if axes is not None:
        rank = _rank(graph, data)
        if rank is None:
            raise NotImplementedError(f"Pad with axes {axes} on an input of unknown rank")
        full = [0] * (2 * rank)
        for i, axis in enumerate(a % rank for a in axes):
            full[axis], full[rank + axis] = pads[i], pads[len(axes) + i]
        pads = full
    module = onnx_pad.OnnxPadStatic.create_from_onnx_params(onnx_pads=pads, onnx_mode=mode, constant_value=value)
    return OperationConverterResult(torch_module=module,
                                    onnx_mapping=OnnxMapping(inputs=(data,), outputs=node.output_values))


def convert(path: Path) -> Any:
    """The graph at ``path`` as a torch.fx module (constants folded first); EngineError naming the op."""
    import onnx
    import onnxruntime as ort

    onnx2torch = _import_onnx2torch()
    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "folded.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # standard ops only
        so.optimized_model_filepath = str(folded)
        so.log_severity_level = 3
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        model = onnx.load(str(folded))
    for node in model.graph.node:  # trailing "" = an omitted optional input; onnx2torch looks it up
        while node.input and node.input[-1] == "":
            node.input.pop()
    try:
        return onnx2torch.convert(model).eval()
    except NotImplementedError as exc:  # onnx2torch's "Converter is not implemented (OperationDescription(...))"
        raise EngineError(f"onnx2torch cannot convert {path.name}: {exc}") from exc
    except Exception as exc:
        raise EngineError(f"onnx2torch failed on {path.name}: {type(exc).__name__}: {exc}") from exc


class TorchEngine:
    """One converted graph on one device; CUDA graphs per batch size where the inputs allow."""

    def __init__(self, path: Path, config: TorchEngineConfig) -> None:
        import onnx
        import torch

        self.torch, self.config, self.path = torch, config, path
        if config.device == "cuda" and (reason := missing(import_torch=True)):
            raise EngineError(f"engine {ENGINE_KEY!r} is not available: {reason}")
        from pipeline.engines.precision import check_precision

        if config.fp16:
            check_precision(path, "fp16", config.allow_precision_loss)
        self.device = torch.device(config.device, config.device_index) if config.device == "cuda" \
            else torch.device("cpu")
        if config.device == "cuda":  # process-wide flags: one engine config per worker process
            # cudnn.benchmark stays off: it is on only while capturing (fixed shapes, searched once);
            # on, every new eager shape would run cuDNN's algorithm search again, on the live path.
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = config.tf32
        graph = onnx.load(str(path), load_external_data=False).graph
        initializers = {i.name for i in graph.initializer}
        inputs = [i for i in graph.input if i.name not in initializers]
        self.input_names = [i.name for i in inputs]
        self.output_names = [o.name for o in graph.output]
        dims = [[d.dim_value if d.HasField("dim_value") else None for d in i.type.tensor_type.shape.dim]
                for i in inputs]
        # (row shape, dtype) per input: what warm_up feeds (row dims are fixed where graphs are used)
        self._input_specs = [(tuple(int(x or 0) for x in d[1:]),
                              onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
                             for d, i in zip(dims, inputs, strict=True)]
        # Batch-padding (and so CUDA graphs per batch size) is safe where every input is
        # [batch, fixed dims...]: rows are then independent frames or windows.
        self.batched = bool(dims) and all(len(d) >= 1 and d[0] is None and None not in d[1:] for d in dims)
        self.module = convert(path).to(self.device)
        self.use_graphs = config.device == "cuda" and config.cuda_graphs and self.batched
        self.stream = torch.cuda.Stream(self.device) if config.device == "cuda" else None
        self._graphs: dict[tuple[tuple[int, ...], ...], _Captured] = {}
        self._pinned: dict[tuple[Any, ...], Any] = {}
        self.constants = DeviceConstants(lambda a: torch.from_numpy(a.copy()).to(self.device))
        self._failed_capture: str | None = None
        self.captures: list[tuple[int, float]] = []  # (batch size, seconds) of every capture, in order
        logger.info("%s: %s on %s%s%s", ENGINE_KEY, path.name, self.device, " fp16" if config.fp16 else "",
                    " with CUDA graphs" if self.use_graphs else "")
        if self.use_graphs and config.warmup:
            self.warm_up()

    def warm_up(self) -> None:
        """Capture the CUDA graph of every configured batch size now (zeros of the graph's input
        shapes and dtypes), so that no call on the live path pays for a capture."""
        started = time.perf_counter()
        for size in self.config.batch_sizes:
            self.run({name: np.zeros((size, *shape), dtype=dtype)
                      for name, (shape, dtype) in zip(self.input_names, self._input_specs, strict=True)})
            if self._failed_capture is not None:
                break
        logger.info("%s: %s warmed up in %.2f s: CUDA graphs for batch sizes %s%s", ENGINE_KEY, self.path.name,
                    time.perf_counter() - started, self.captured_sizes(),
                    f" (capture failed: {self._failed_capture}; eager)" if self._failed_capture else "")

    # -- running ---------------------------------------------------------------------------
    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        try:
            arrays = [np.ascontiguousarray(inputs[name]) for name in self.input_names]
        except KeyError as exc:
            raise EngineError(f"{self.path.name}: missing input {exc}; it takes {self.input_names}") from exc
        n = len(arrays[0]) if self.batched else 0
        try:
            if self.device.type == "cpu":
                with torch.no_grad():
                    outputs = self._forward([torch.from_numpy(a) for a in arrays])
                return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
                        for k, v in zip(self.output_names, outputs, strict=True)}
            with torch.cuda.device(self.device), torch.cuda.stream(self.stream), torch.no_grad():
                if self.use_graphs and self._failed_capture is None and n > 0:
                    return self._run_chunks(arrays, n)
                device_inputs = [self._input_on_device(name, a) for name, a in
                                 zip(self.input_names, arrays, strict=True)]
                outputs = self._forward(device_inputs)
                host = [self._to_host(("out", name), out) for name, out in zip(self.output_names, outputs, strict=True)]
                self.stream.synchronize()  # type: ignore[union-attr]
        except EngineError:
            raise
        except Exception as exc:
            shapes = {k: (v.dtype.name, v.shape) for k, v in inputs.items()}
            raise EngineError(f"{ENGINE_KEY} failed on {self.path.name} with inputs {shapes}: {exc}") from exc
        return {name: array.numpy().copy()  # the pinned buffer is reused by the next call
                for name, array in zip(self.output_names, host, strict=True)}

    def _run_chunks(self, arrays: list[np.ndarray], n: int) -> dict[str, np.ndarray]:
        """CUDA-graph replays over ``batch_plan(n)``: every chunk has a captured size (rows past the
        real ones are left over from earlier calls: rows are independent, their outputs dropped)."""
        parts: dict[str, list[np.ndarray]] = {name: [] for name in self.output_names}
        for start, rows, size in batch_plan(n, self.config.batch_sizes):
            staged = []
            for name, array in zip(self.input_names, arrays, strict=True):
                pinned = self._pinned_buffer(("in", name), (size, *array.shape[1:]), array.dtype)
                pinned.numpy()[:rows] = array[start:start + rows]
                staged.append(pinned)
            outputs = self._run_graph(staged)
            if outputs is None:  # capture failed: this call (and every later one) runs eagerly
                return self.run(dict(zip(self.input_names, arrays, strict=True)))
            host = [self._to_host(("out", name), out) for name, out in zip(self.output_names, outputs, strict=True)]
            self.stream.synchronize()  # type: ignore[union-attr]
            for name, array in zip(self.output_names, host, strict=True):
                parts[name].append(array.numpy()[:rows].copy() if array.ndim and array.shape[0] == size
                                   else array.numpy().copy())
        return {name: chunks[0] if len(chunks) == 1 else np.concatenate(chunks) for name, chunks in parts.items()}

    def _forward(self, tensors: list[Any]) -> list[Any]:
        torch = self.torch
        if self.config.fp16:
            with torch.autocast(self.device.type, dtype=torch.float16, cache_enabled=False):
                out = self.module(*tensors)
        else:
            out = self.module(*tensors)
        return list(out) if isinstance(out, tuple | list) else [out]

    def _input_on_device(self, name: str, array: np.ndarray) -> Any:
        constant = self.constants.get(array)
        return constant if constant is not None else self._to_device(("in", name), array)

    def _to_device(self, key: tuple[str, str], array: np.ndarray) -> Any:
        pinned = self._pinned_buffer(key, array.shape, array.dtype)
        pinned.numpy()[...] = array
        return pinned.to(self.device, non_blocking=True)

    def _to_host(self, key: tuple[str, str], tensor: Any) -> Any:
        if tensor.is_floating_point() and tensor.dtype != self.torch.float32:
            tensor = tensor.float()
        pinned = self._pinned_buffer(key, tuple(tensor.shape), tensor.dtype)
        pinned.copy_(tensor, non_blocking=True)
        return pinned

    def _pinned_buffer(self, key: tuple[str, str], shape: tuple[int, ...], dtype: Any) -> Any:
        torch = self.torch
        tdtype = dtype if isinstance(dtype, torch.dtype) else torch.from_numpy(np.empty(0, dtype)).dtype
        full = (*key, tuple(shape), tdtype)
        if full not in self._pinned and len(self._pinned) >= MAX_PINNED_BUFFERS:
            self._pinned.clear()  # many distinct shapes (dynamic window graphs): start over, stay bounded
        if full not in self._pinned:
            # zeros: rows past a padded batch's real ones hold finite values from the start
            self._pinned[full] = torch.zeros(tuple(shape), dtype=tdtype, pin_memory=True)
        return self._pinned[full]

    # -- CUDA graphs -----------------------------------------------------------------------
    def _run_graph(self, pinned: list[Any]) -> list[Any] | None:
        """Replay the graph of these (pinned host) inputs' shapes, capturing it first if it is new;
        None when capturing failed (the engine runs eagerly from then on)."""
        key = tuple(tuple(t.shape) for t in pinned)
        captured = self._graphs.get(key)
        if captured is None:
            try:
                captured = self._graphs[key] = self._capture([t.to(self.device, non_blocking=True) for t in pinned])
            except Exception as exc:  # an op that syncs or allocates per call: run eagerly from now on
                self._failed_capture = f"{type(exc).__name__}: {exc}"
                logger.warning("%s: CUDA graph capture failed for %s (%s); running it eagerly",
                               ENGINE_KEY, self.path.name, self._failed_capture)
                return None
        for static, t in zip(captured.inputs, pinned, strict=True):  # host -> the graph's inputs, no temporary
            static.copy_(t, non_blocking=True)
        captured.graph.replay()
        return captured.outputs

    def _capture(self, tensors: list[Any]) -> _Captured:
        torch = self.torch
        started = time.perf_counter()
        static = [t.clone() for t in tensors]
        benchmark = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True  # fixed shapes: search the fastest conv algorithms once, here
        try:
            for _ in range(3):  # warm-up on the side stream: lazy init, cuDNN search, allocator
                self._forward(static)
            self.stream.synchronize()  # type: ignore[union-attr]
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                outputs = self._forward(static)
        finally:
            torch.backends.cudnn.benchmark = benchmark
        seconds = time.perf_counter() - started
        self.captures.append((int(tensors[0].shape[0]), seconds))
        logger.info("%s: captured a CUDA graph for %s at shapes %s in %.2f s", ENGINE_KEY, self.path.name,
                    [tuple(t.shape) for t in tensors], seconds)
        return _Captured(graph, static, outputs)

    def captured_sizes(self) -> list[int]:
        return sorted(shapes[0][0] for shapes in self._graphs)


class _Captured:
    def __init__(self, graph: Any, inputs: list[Any], outputs: list[Any]) -> None:
        self.graph, self.inputs, self.outputs = graph, inputs, outputs


def batch_plan(n: int, sizes: list[int]) -> list[tuple[int, int, int]]:
    """``n`` rows as (start, rows, captured size) chunks: whole chunks of the largest size, then the
    rest padded up to the smallest size that holds it. Every size is one of ``sizes`` (sorted), so
    no batch size ever makes a new CUDA graph."""
    plan, start, largest = [], 0, sizes[-1]
    while n - start > largest:
        plan.append((start, largest, largest))
        start += largest
    rows = n - start
    plan.append((start, rows, sizes[bisect.bisect_left(sizes, rows)]))
    return plan


def create(path: Path, options: Mapping[str, object]) -> Engine:
    """The ``torch-cuda`` factory: a graph onnx2torch cannot convert falls back to ONNX Runtime CPU
    (``fallback: onnxruntime``, logged with the reason) or fails (``fallback: error``)."""
    config = parse_options(TorchEngineConfig, ENGINE_KEY, options)
    try:
        return TorchEngine(path, config)
    except EngineError as exc:
        if config.fallback != "onnxruntime" or "cannot convert" not in str(exc) and "failed on" not in str(exc):
            raise
        from pipeline.engines.onnxruntime_engine import OnnxRuntimeEngine

        logger.warning("%s: %s; running %s on ONNX Runtime CPU instead", ENGINE_KEY, exc, path.name)
        return OnnxRuntimeEngine(path, {})


from pipeline.engines import ENGINES  # noqa: E402  (registry defined before this module loads)

ENGINES.register(ENGINE_KEY)(create)
