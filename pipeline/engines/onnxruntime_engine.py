"""ONNX Runtime engine. Checks the providers it got, because ORT silently falls back to CPU."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.engines.base import Engine
from pipeline.errors import EngineError

logger = logging.getLogger(__name__)

ENGINE_KEY = "onnxruntime"
_DEFAULT_PROVIDERS = ("CPUExecutionProvider",)


class OnnxRuntimeEngine:
    """One ``InferenceSession`` with deliberate threading (see ``session_options``)."""

    def __init__(self, path: Path, options: Mapping[str, Any]) -> None:
        import onnxruntime as ort

        providers = list(options.get("providers", _DEFAULT_PROVIDERS))
        try:
            self.session = ort.InferenceSession(str(path), session_options(options), providers=providers)
        except Exception as exc:  # ORT raises its own untyped errors: translate at the boundary
            raise EngineError(f"ONNX Runtime could not load {path}: {exc}") from exc
        missing = [p for p in providers if p not in self.session.get_providers()]
        if missing:
            raise EngineError(
                f"ONNX Runtime did not enable {missing} for {path} (it has {self.session.get_providers()}, "
                f"available on this machine: {ort.get_available_providers()}); install the matching "
                f"onnxruntime build (e.g. onnxruntime-gpu) or set engine.providers to ['CPUExecutionProvider']"
            )
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
    return so


def _factory(path: Path, options: Mapping[str, object]) -> Engine:
    return OnnxRuntimeEngine(path, options)


from pipeline.engines import ENGINES  # noqa: E402  (registry defined before this module loads)

ENGINES.register(ENGINE_KEY)(_factory)
