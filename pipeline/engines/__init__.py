"""Inference engines by name: ``onnxruntime`` (CPU or GPU providers) and ``tensorrt``.

Backends import their libraries lazily, so ``import pipeline`` works on any machine and a
missing backend fails only when a config asks for it, with a message saying what to install.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline.engines.base import Engine, EngineFactory
from pipeline.registry import Registry

ENGINES: Registry[EngineFactory] = Registry("engine")


def create_engine(name: str, path: Path, options: Mapping[str, object] | None = None) -> Engine:
    return ENGINES.get(name)(path, options or {})


# Registration happens on import of each backend module; the modules themselves import their
# heavy libraries only when an engine is created.
from pipeline.engines import onnxruntime_engine as _ort  # noqa: E402,F401
from pipeline.engines import tensorrt_engine as _trt  # noqa: E402,F401

__all__ = ["ENGINES", "Engine", "EngineFactory", "create_engine"]
