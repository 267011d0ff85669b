"""Per-frame features the runtime computes outside ONNX (e.g. optical flow), by name.

A manifest declares them under ``runtime_features`` as ``{"name": {"kind": KIND, ...params}}``
and graphs read them as ``runtime.<name>``. Each kind keeps per-camera state (the previous
frame, for motion), which is why a camera's frames must all reach one inference worker.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from pipeline.registry import Registry


class FrameFeature(Protocol):
    """Computes one feature array per frame of one camera, in frame order."""

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` is uint8 HxWx3 RGB at the package input size."""
        ...

    def observe(self, frame: np.ndarray) -> None:
        """Take ``frame`` as the previous frame without computing its feature (a frame no window
        reads): the next frame's value is then exactly what ``__call__`` on both would give."""
        ...

    def reset(self) -> None:
        """Forget the previous frame: the next one follows a gap and is treated as a first frame."""
        ...


class FrameFeatureFactory(Protocol):
    def __call__(self, params: dict[str, Any]) -> FrameFeature:
        """A new per-camera feature computer; ``params`` are the manifest's entry less ``kind``."""
        ...


FRAME_FEATURES: Registry[FrameFeatureFactory] = Registry("runtime feature")


def create_feature(spec: dict[str, Any]) -> FrameFeature:
    params = {k: v for k, v in spec.items() if k != "kind"}
    return FRAME_FEATURES.get(str(spec.get("kind")))(params)
from pipeline.features import delta as _delta  # noqa: E402,F401
from pipeline.features import flow as _flow  # noqa: E402,F401
