"""Inference engines by name, each with its own config model (``engine: {name: ..., options}``):

- ``onnxruntime``: ONNX Runtime, CPU by default (``onnxruntime_engine``);
- ``ort-cuda`` / ``ort-tensorrt``: ONNX Runtime's CUDA / TensorRT execution providers (onnxruntime-gpu);
- ``torch-cuda``: the ONNX graphs converted to PyTorch (onnx2torch), CUDA graphs, fp16 autocast;
- ``tensorrt``: TensorRT itself (plans cached by graph sha256 + GPU + TensorRT version);
- ``auto``: the first available of ``AUTO_ORDER``, chosen at start-up and logged.

Backends import their GPU stacks lazily, so ``import pipeline`` works on any machine (and never
imports torch); an engine that cannot run here fails at start-up saying what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from pipeline.engines.base import Engine, EngineFactory, EngineOptions
from pipeline.errors import EngineError
from pipeline.registry import Registry

logger = logging.getLogger(__name__)

ENGINES: Registry[EngineFactory] = Registry("engine")  # before the backends: they register on import

from pipeline.engines.onnxruntime_engine import OnnxRuntimeConfig, OrtCudaConfig, OrtTensorRTConfig  # noqa: E402
from pipeline.engines.tensorrt_engine import TensorRTConfig  # noqa: E402
from pipeline.engines.torch_engine import TorchEngineConfig  # noqa: E402


class AutoEngineConfig(EngineOptions):
    """``engine: auto``: the first engine of ``AUTO_ORDER`` that can run here, with its defaults."""

    name: Literal["auto"] = "auto"


EngineConfig = Annotated[
    OnnxRuntimeConfig | OrtCudaConfig | OrtTensorRTConfig | TorchEngineConfig | TensorRTConfig | AutoEngineConfig,
    Field(discriminator="name"),
]
ENGINE_NAMES = ("onnxruntime", "ort-cuda", "ort-tensorrt", "torch-cuda", "tensorrt", "auto")

# Fastest first, as measured on GPUs (TensorRT builds fused kernels; torch-cuda with CUDA graphs
# beats ORT's CUDA provider on our small graphs at batch <= 32); ONNX Runtime CPU always runs.
AUTO_ORDER = ("tensorrt", "ort-tensorrt", "torch-cuda", "ort-cuda", "onnxruntime")


def missing(name: str, configured: bool = False) -> str | None:
    """Why engine ``name`` cannot run on this machine (None: it can). For ``auto`` (not
    ``configured``) torch is imported only where an NVIDIA device node is visible; an engine named in
    the config may import its own stack to ask."""
    from pipeline.engines import onnxruntime_engine, tensorrt_engine, torch_engine

    checks: dict[str, Callable[[], str | None]] = {
        "onnxruntime": lambda: None,
        "ort-cuda": lambda: onnxruntime_engine.missing_gpu_provider("CUDAExecutionProvider"),
        "ort-tensorrt": lambda: onnxruntime_engine.missing_gpu_provider("TensorrtExecutionProvider"),
        "torch-cuda": lambda: torch_engine.missing(import_torch=configured),
        "tensorrt": tensorrt_engine.missing,
    }
    return checks[name]()


def choose_auto() -> tuple[str, dict[str, str]]:
    """The engine ``auto`` picks here, and why each faster one was passed over."""
    skipped: dict[str, str] = {}
    for name in AUTO_ORDER:
        reason = missing(name)
        if reason is None:
            return name, skipped
        skipped[name] = reason
    raise EngineError(f"no engine can run here: {skipped}")  # unreachable: onnxruntime has no requirement


def resolve(config: EngineOptions) -> EngineOptions:
    """``auto`` -> the chosen engine's config (logged); any other engine is checked to be available,
    failing with what is missing. Call once at start-up."""
    if config.name == "auto":  # type: ignore[attr-defined]
        name, skipped = choose_auto()
        for passed, reason in skipped.items():
            logger.info("engine auto: not %s (%s)", passed, reason)
        logger.info("engine auto: chose %s", name)
        return _CONFIGS[name]()
    if config.name == "torch-cuda" and getattr(config, "device", "cuda") == "cpu":  # type: ignore[attr-defined]
        from pipeline.engines import torch_engine

        absent = torch_engine.missing_packages()  # the same conversion on the CPU: no GPU needed
    else:
        absent = missing(config.name, configured=True)  # type: ignore[attr-defined]
    if absent:
        raise EngineError(f"engine {config.name!r} cannot run on this machine: {absent}. "  # type: ignore[attr-defined]
                          "Use engine: onnxruntime (CPU) or engine: auto")
    return config


def device_of(config: EngineOptions) -> str:
    """'cpu' or 'cuda:<i>': where the engine's graphs run (for vidwatch_engine_info)."""
    name = config.name  # type: ignore[attr-defined]
    if name == "onnxruntime":
        gpu = [p for p in getattr(config, "providers", []) if p != "CPUExecutionProvider"]
        return "gpu" if gpu else "cpu"
    if name == "torch-cuda" and getattr(config, "device", "cuda") == "cpu":
        return "cpu"
    return f"cuda:{getattr(config, 'device_index', getattr(config, 'device_id', 0))}"


def config_model(name: str) -> type[EngineOptions]:
    return AutoEngineConfig if name == "auto" else _CONFIGS[name]


def create_engine(name: str, path: Path, options: Mapping[str, object] | None = None) -> Engine:
    return ENGINES.get(name)(path, options or {})

_CONFIGS: dict[str, type[EngineOptions]] = {
    "onnxruntime": OnnxRuntimeConfig, "ort-cuda": OrtCudaConfig, "ort-tensorrt": OrtTensorRTConfig,
    "torch-cuda": TorchEngineConfig, "tensorrt": TensorRTConfig,
}

__all__ = ["AUTO_ORDER", "ENGINES", "ENGINE_NAMES", "AutoEngineConfig", "Engine", "EngineConfig", "EngineFactory",
           "EngineOptions", "choose_auto", "config_model", "create_engine", "device_of", "missing", "resolve"]
