"""ONNX Runtime engines: ``onnxruntime`` (CPU, or providers you list), ``ort-cuda`` (CUDA
execution provider) and ``ort-tensorrt`` (TensorRT execution provider, CUDA as fallback for the
nodes TensorRT does not take). Every session is hard-checked with ``get_providers()`` after
creation, because ONNX Runtime silently falls back to CPU when a provider does not load.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from pipeline.engines.base import Engine, EngineOptions, parse_options
from pipeline.engines.input_fold import fold_input
from pipeline.errors import EngineError

logger = logging.getLogger(__name__)

ENGINE_KEY = "onnxruntime"
CUDA_KEY = "ort-cuda"
TENSORRT_KEY = "ort-tensorrt"
_DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


class OnnxRuntimeConfig(EngineOptions):
    """``engine: {name: onnxruntime}``: ONNX Runtime with the providers listed (CPU by default)."""

    name: Literal["onnxruntime"] = "onnxruntime"
    providers: list[str] = ["CPUExecutionProvider"]
    intra_op_threads: int = Field(1, ge=1)
    cpu_mem_arena: bool = Field(True, description="keep freed buffers for reuse (a few % faster; off saves "
                                                  "~250 MiB per worker at batch 32)")
    fold_input: bool = Field(True, description="exact graph folds at load: an INT8 graph's float input round trip, "
                                               "Pads into the convolutions after them (same outputs, 20-30% less "
                                               "CPU; pipeline/engines/input_fold.py)")


class OrtCudaConfig(EngineOptions):
    """``engine: {name: ort-cuda}``: ONNX Runtime's CUDA provider (needs onnxruntime-gpu)."""

    name: Literal["ort-cuda"] = "ort-cuda"
    device_id: int = Field(0, ge=0)
    intra_op_threads: int = Field(1, ge=1)
    use_tf32: bool = Field(True, description="TF32 matmul/conv on Ampere and later (FP32 range, 10-bit mantissa)")


class OrtTensorRTConfig(EngineOptions):
    """``engine: {name: ort-tensorrt}``: ONNX Runtime's TensorRT provider (onnxruntime-gpu + TensorRT libs)."""

    name: Literal["ort-tensorrt"] = "ort-tensorrt"
    device_id: int = Field(0, ge=0)
    intra_op_threads: int = Field(1, ge=1)
    fp16: bool = False
    int8: bool = Field(False, description="needs a calibration table or a QDQ graph (TensorRT's rule)")
    engine_cache_dir: Path | None = Field(None, description="where TensorRT engines are cached (default: none)")
    max_workspace_mib: int = Field(2048, ge=64)
    allow_precision_loss: bool = Field(False, description="run fp16/int8 even where the accuracy gate refused it")


class OnnxRuntimeEngine:
    """One ``InferenceSession`` with deliberate threading (see ``session_options``)."""

    def __init__(self, path: Path, options: Mapping[str, Any], providers: list[Any] | None = None) -> None:
        import onnxruntime as ort

        providers = providers or list(options.get("providers", _DEFAULT_PROVIDERS))
        wanted = [p if isinstance(p, str) else p[0] for p in providers]
        # CPU: exact folds (an INT8 graph's float input chain, Pads into convolutions; input_fold.py);
        # other providers get the graph as it is (their own fusions differ).
        cpu_only = wanted == ["CPUExecutionProvider"]
        source: str | bytes = (fold_input(path) if cpu_only and options.get("fold_input", True) else None) or str(path)
        try:
            self.session = ort.InferenceSession(source, session_options(options), providers=providers)
        except Exception as exc:  # ORT raises its own untyped errors: translate at the boundary
            raise EngineError(f"ONNX Runtime could not load {path}: {exc}") from exc
        missing = [p for p in wanted if p not in self.session.get_providers()]
        if missing:
            raise EngineError(
                f"ONNX Runtime did not enable {missing} for {path} (it has {self.session.get_providers()}, "
                f"available on this machine: {ort.get_available_providers()}); install the matching "
                f"onnxruntime build (e.g. onnxruntime-gpu) or set engine.providers to ['CPUExecutionProvider']"
            )
        self.providers = self.session.get_providers()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        try:
            outputs = self.session.run(self.output_names, dict(inputs))
        except Exception as exc:
            shapes = {k: (v.dtype.name, v.shape) for k, v in inputs.items()}
            raise EngineError(f"ONNX Runtime failed on inputs {shapes}: {exc}") from exc
        return dict(zip(self.output_names, outputs, strict=True))


def session_options(options: Mapping[str, Any]):  # type: ignore[no-untyped-def]
    """Threads are set on purpose: ORT's default grabs every core and fights the decoders."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(options.get("intra_op_threads", 1))
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = bool(options.get("cpu_mem_arena", True))
    # Batch sizes vary from call to call: ORT's memory patterns are cached per input shape and
    # kept growing RSS in the soak (trunk 240x360, batches 1-16: +143 MiB over 14 calls of sizes
    # already seen with patterns, flat without). The arena still reuses its blocks.
    so.enable_mem_pattern = False
    return so


def missing_gpu_provider(provider: str) -> str | None:
    """Why ``provider`` cannot run here (None: it is in this onnxruntime build)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return "onnxruntime is not installed"
    available = ort.get_available_providers()
    if provider not in available:
        return (f"{provider} is not in this onnxruntime build (it has {available}): install onnxruntime-gpu "
                "(pip install onnxruntime-gpu) on a machine with an NVIDIA GPU and CUDA")
    return None


def cuda_providers(options: Mapping[str, Any]) -> list[Any]:
    return [("CUDAExecutionProvider", {"device_id": int(options.get("device_id", 0)),
                                       "use_tf32": int(bool(options.get("use_tf32", True)))}),
            "CPUExecutionProvider"]


def tensorrt_providers(options: Mapping[str, Any]) -> list[Any]:
    trt: dict[str, Any] = {"device_id": int(options.get("device_id", 0)),
                           "trt_fp16_enable": bool(options.get("fp16", False)),
                           "trt_int8_enable": bool(options.get("int8", False)),
                           "trt_max_workspace_size": int(options.get("max_workspace_mib", 2048)) << 20}
    cache = options.get("engine_cache_dir")
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        trt.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache), trt_timing_cache_enable=True,
                   trt_timing_cache_path=str(cache))
    return [("TensorrtExecutionProvider", trt), *cuda_providers(options)]


def _factory(path: Path, options: Mapping[str, object]) -> Engine:
    parse_options(OnnxRuntimeConfig, ENGINE_KEY, options)
    return OnnxRuntimeEngine(path, options)


def _cuda_factory(path: Path, options: Mapping[str, object]) -> Engine:
    parse_options(OrtCudaConfig, CUDA_KEY, options)
    if reason := missing_gpu_provider("CUDAExecutionProvider"):
        raise EngineError(f"engine {CUDA_KEY!r} is not available: {reason}")
    return OnnxRuntimeEngine(path, options, cuda_providers(options))


def _tensorrt_factory(path: Path, options: Mapping[str, object]) -> Engine:
    parse_options(OrtTensorRTConfig, TENSORRT_KEY, options)
    if reason := missing_gpu_provider("TensorrtExecutionProvider"):
        raise EngineError(f"engine {TENSORRT_KEY!r} is not available: {reason}; TensorRT's own libraries "
                          "(libnvinfer) must be on the library path too")
    from pipeline.engines.precision import check_precision

    precision = "int8" if options.get("int8") else "fp16" if options.get("fp16") else "fp32"
    check_precision(path, precision, bool(options.get("allow_precision_loss", False)))
    return OnnxRuntimeEngine(path, options, tensorrt_providers(options))


from pipeline.engines import ENGINES  # noqa: E402  (registry defined before this module loads)

ENGINES.register(ENGINE_KEY)(_factory)
ENGINES.register(CUDA_KEY)(_cuda_factory)
ENGINES.register(TENSORRT_KEY)(_tensorrt_factory)
