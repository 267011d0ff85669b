"""Area (box-filter) downscaling, the resize every model input goes through, at less CPU.

``cv2.resize(..., INTER_AREA)`` with a non-integer scale runs OpenCV's generic area resize:
~1.1 ms for one 640x360 frame to 224x224 on one core, the largest share of capture's CPU after
decoding. The area filter is separable, and the same result comes from two one-dimensional
area resizes (width first, then height) on float32, rounded once at the end: ~0.8 ms.

The two-pass result is bit-identical to ``cv2.resize`` only where OpenCV takes its generic path
for both: both scale factors non-integer and at least ``MIN_SCALE`` (integer factors take
OpenCV's fast box path, which rounds differently, and small factors are no faster in two
passes). Elsewhere, and for upscales, this is plain ``cv2.resize``. tests/pipeline/test_resize.py
checks the identity on real footage at the sizes the shipped models use.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_SCALE = 1.25


def _generic(src: int, dst: int) -> bool:
    scale = src / dst
    return scale >= MIN_SCALE and abs(scale - round(scale)) > 1e-6


def area_resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``cv2.resize(frame, size, interpolation=cv2.INTER_AREA)`` for a uint8 frame (``size`` is
    (width, height)), computed in two passes where that is the same and cheaper."""
    width, height = size
    src_h, src_w = frame.shape[:2]
    if frame.dtype != np.uint8 or not (_generic(src_w, width) and _generic(src_h, height)):
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    rows = cv2.resize(frame.astype(np.float32), (width, src_h), interpolation=cv2.INTER_AREA)
    out = cv2.resize(rows, size, interpolation=cv2.INTER_AREA)
    return np.rint(out, out=out).astype(np.uint8)  # values are 0..255 averages: no clipping needed
