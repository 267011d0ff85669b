"""Signed difference with the camera's previous frame, as an image: the input of motion streams.

Kind ``frame_delta``. Each frame (resized to ``height x width``) is subtracted from the camera's
previous frame and encoded as uint8 ``127 + gain * (current - previous)``, clipped, HxWx3 RGB.
A still scene is flat grey; movement shows as light/dark edges, signed so the direction of a
change survives (on the fight clips signed differences beat absolute ones by ~10 points).
The first frame of a camera has no predecessor and encodes as flat grey (no motion).

Training (``models/action``) encodes its clips with :func:`encode_delta` too, so the model
sees exactly the bytes the runtime computes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.features import FRAME_FEATURES
from pipeline.resize import area_resize

KIND = "frame_delta"
ZERO = 127  # the encoded value of "no change"


def encode_delta(previous: np.ndarray, current: np.ndarray, gain: float) -> np.ndarray:
    """uint8 ``127 + gain * (current - previous)`` clipped to 0..255; same shapes in and out."""
    diff = current.astype(np.float32) - previous.astype(np.float32)
    return np.clip(np.rint(ZERO + gain * diff), 0, 255).astype(np.uint8)


def encode_clip(frames: np.ndarray, gain: float) -> np.ndarray:
    """Deltas of a clip ``[F, H, W, 3]`` as the runtime computes them frame by frame (first: grey)."""
    previous = np.concatenate([frames[:1], frames[:-1]])
    return encode_delta(previous, frames, gain)


class FrameDelta:
    """Per-camera difference with the previous frame, at a fixed size."""

    def __init__(self, height: int, width: int, gain: float = 3.0) -> None:
        if gain <= 0:
            raise ValueError(f"frame_delta gain must be > 0, got {gain}")
        self.size = (int(width), int(height))
        self.gain = float(gain)
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        frame = self._input(frame)
        previous = frame if self._previous is None else self._previous
        self._previous = frame
        return encode_delta(previous, frame, self.gain)

    def observe(self, frame: np.ndarray) -> None:
        self._previous = self._input(frame)

    def _input(self, frame: np.ndarray) -> np.ndarray:
        return frame if frame.shape[1::-1] == self.size else area_resize(frame, self.size)


@FRAME_FEATURES.register(KIND)
def _create(params: dict[str, Any]) -> FrameDelta:
    return FrameDelta(**params)
