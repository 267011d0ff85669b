"""TensorRT engine (TensorRT 10 API): builds a serialized engine (plan) from the ONNX graph once,
caches it keyed by graph sha256 + GPU name + TensorRT version + precision + batch profile, and runs
it with CUDA buffers from cuda-python.

Optimization profile: the batch dimension spans 1..max(batch_sizes) with the optimum at the median
configured size. ``fp16`` lets TensorRT pick float16 kernels; ``int8`` takes effect only for graphs
carrying Q/DQ nodes (explicit quantization: TensorRT 10 deprecates calibrators) and falls back to
fp16/fp32 kernels elsewhere. Both go through the accuracy gate (``pipeline.engines.precision``).

TensorRT and cuda-python import only when an engine is created; on machines without them,
asking for ``engine: tensorrt`` fails with what to install. Tests run it where ``tensorrt``
imports and skip elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pipeline.engines.base import Engine, EngineOptions, parse_options
from pipeline.errors import EngineError

logger = logging.getLogger(__name__)

ENGINE_KEY = "tensorrt"


class TensorRTConfig(EngineOptions):
    """``engine: {name: tensorrt}``: TensorRT plans built from the package's ONNX graphs."""

    name: Literal["tensorrt"] = "tensorrt"
    fp16: bool = True
    int8: bool = Field(False, description="only graphs with Q/DQ nodes run int8 (explicit quantization)")
    batch_sizes: list[int] = Field([1, 8, 16, 32], min_length=1, description="optimization profile: 1..max")
    cache_dir: Path | None = Field(None, description="where plans are cached (default: beside the graph)")
    allow_precision_loss: bool = Field(False, description="run fp16/int8 even where the accuracy gate refused it")


def missing() -> str | None:
    """What ``tensorrt`` lacks here (None: it can run); imports nothing."""
    import importlib.util

    from pipeline.engines.torch_engine import nvidia_gpu_visible

    if importlib.util.find_spec("tensorrt") is None:
        return "the TensorRT Python package is not installed (pip install tensorrt, from NVIDIA's index)"
    if importlib.util.find_spec("cuda") is None:
        return "cuda-python is not installed (pip install cuda-python)"
    if not nvidia_gpu_visible():
        return "no NVIDIA GPU is visible"
    return None


def _import_tensorrt() -> tuple[Any, Any]:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError("engine 'tensorrt' needs the TensorRT Python package (pip install tensorrt) and an "
                          "NVIDIA GPU; use engine 'onnxruntime' on this machine") from exc
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError as exc:
            raise EngineError("engine 'tensorrt' needs cuda-python (pip install cuda-python)") from exc
    return trt, cudart


def _check(result: Any) -> Any:
    """cuda-python returns (err, value...) tuples; raise on a non-zero error."""
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise EngineError(f"CUDA call failed: {err}")
    return rest[0] if len(rest) == 1 else rest


class TensorRTEngine:
    """One TensorRT execution context with a dynamic batch dimension up to ``max_batch``."""

    def __init__(self, path: Path, options: Mapping[str, Any]) -> None:
        config = parse_options(TensorRTConfig, ENGINE_KEY, options)
        self.trt, self.cudart = _import_tensorrt()
        self.batch_sizes = config.batch_sizes
        self.max_batch = max(config.batch_sizes)
        self.fp16, self.int8, self.cache_dir = config.fp16, config.int8, config.cache_dir
        from pipeline.engines.precision import check_precision

        check_precision(path, "int8" if self.int8 else "fp16" if self.fp16 else "fp32", config.allow_precision_loss)
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        engine_bytes = self._load_or_build(path)
        runtime = self.trt.Runtime(self.logger)
        self.engine = runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            raise EngineError(f"TensorRT could not deserialize the engine built from {path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = self.trt.TensorIOMode.INPUT
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) != mode]
        self.stream = _check(self.cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def _cache_path(self, path: Path) -> Path:
        """graph sha256 + GPU name + TensorRT version + precision + profile: a plan is only valid for
        the GPU model and TensorRT release that built it."""
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        props = _check(self.cudart.cudaGetDeviceProperties(0))
        gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        gpu = "".join(c if c.isalnum() else "-" for c in gpu).strip("-")
        precision = "int8" if self.int8 else "fp16" if self.fp16 else "fp32"
        sizes = "-".join(str(b) for b in self.batch_sizes)
        name = f"{path.stem}.{digest}.{gpu}.trt{self.trt.__version__}.{precision}.b{sizes}.plan"
        return (self.cache_dir or path.parent) / name

    def _load_or_build(self, path: Path) -> bytes:
        cache = self._cache_path(path)
        if cache.exists():
            return cache.read_bytes()
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineError(f"TensorRT could not parse {path}: {errors}")
        config = builder.create_builder_config()
        if self.fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        if self.int8:
            config.set_flag(trt.BuilderFlag.INT8)
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            shape = list(tensor.shape)
            rest = [d for d in shape[1:]]
            if any(d < 0 for d in rest):
                raise EngineError(f"{path}: input {tensor.name} has dynamic non-batch dims {shape}; "
                                  "TensorRT profiles here cover the batch dimension only")
            if shape[0] < 0:
                opt = self.batch_sizes[len(self.batch_sizes) // 2]
                profile.set_shape(tensor.name, [1, *rest], [opt, *rest], [self.max_batch, *rest])
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise EngineError(f"TensorRT failed to build an engine for {path}")
        data = bytes(serialized)
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_bytes(data)
        except OSError as exc:  # a read-only package folder only costs a rebuild next start
            logger.warning("could not cache TensorRT engine at %s: %s", cache, exc)
        return data

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self.cudart.cudaFree(ptr))
            ptr = _check(self.cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart = self.cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.input_names:
            array = np.ascontiguousarray(inputs[name])
            self.context.set_input_shape(name, array.shape)
            ptr = self._device_buffer(name, array.nbytes)
            _check(cudart.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, h2d, self.stream))
            self.context.set_tensor_address(name, ptr)
        outputs: dict[str, np.ndarray] = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))
            outputs[name] = np.empty(shape, dtype=dtype)
            self.context.set_tensor_address(name, self._device_buffer(name, outputs[name].nbytes))
        if not self.context.execute_async_v3(self.stream):
            raise EngineError("TensorRT execution failed")
        for name, array in outputs.items():
            ptr = self._buffers[name][0]
            _check(cudart.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, d2h, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return outputs

    def __del__(self) -> None:
        for ptr, _ in getattr(self, "_buffers", {}).values():
            self.cudart.cudaFree(ptr)


def _factory(path: Path, options: Mapping[str, object]) -> Engine:
    if reason := missing():
        raise EngineError(f"engine {ENGINE_KEY!r} is not available: {reason}; use engine 'onnxruntime' or 'auto'")
    return TensorRTEngine(path, options)


from pipeline.engines import ENGINES  # noqa: E402

ENGINES.register(ENGINE_KEY)(_factory)
