"""Evidence snapshots: the JPEG of the frame that raised an alert, with the model's heat map
blended on top when the model gives one (anomaly models: where in the frame)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

HEATMAP_ALPHA = 0.45


def overlay_heatmap(bgr: np.ndarray, heatmap: np.ndarray, vmax: float = 2.0) -> np.ndarray:
    """Blend ``heatmap`` (scores, 1.0 = alert threshold) over the frame, red where it is high."""
    scaled = np.clip(heatmap.astype(np.float32) / vmax, 0.0, 1.0)
    big = cv2.resize(scaled, (bgr.shape[1], bgr.shape[0]), interpolation=cv2.INTER_LINEAR)
    colored = cv2.applyColorMap((big * 255).astype(np.uint8), cv2.COLORMAP_JET)
    weight = (big[..., None] * HEATMAP_ALPHA).astype(np.float32)
    return (bgr * (1 - weight) + colored * weight).astype(np.uint8)


def save_snapshot(path: Path, jpeg_bytes: bytes, heatmap: Any = None) -> Path:
    """Write the snapshot atomically; with a heat map, decode, draw it, and re-encode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = jpeg_bytes
    if heatmap is not None:
        frame = cv2.imdecode(np.frombuffer(jpeg_bytes, np.uint8), cv2.IMREAD_COLOR)
        if frame is not None:
            ok, buf = cv2.imencode(".jpg", overlay_heatmap(frame, np.asarray(heatmap, dtype=np.float32)))
            data = buf.tobytes() if ok else jpeg_bytes
    tmp = path.with_suffix(".jpg.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
