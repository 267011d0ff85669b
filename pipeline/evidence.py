"""Evidence snapshots: the JPEG of the frame that raised an alert, with the model's heat map
blended on top when the model gives one (anomaly models: where in the frame) and a caption
(camera, rule, score, time). The frame is the camera's own at native resolution when the capture
node still holds it (``pipeline/evidence_ring.py``), else the model-size frame of the result."""

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


def draw_caption(bgr: np.ndarray, text: str) -> np.ndarray:
    """``text`` on a dark band along the bottom, sized to the frame (readable at any resolution)."""
    out = bgr.copy()
    scale = max(0.4, out.shape[1] / 1280.0)
    thickness = max(1, round(scale * 1.5))
    (_, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    band = text_h + baseline + round(10 * scale)
    top = max(0, out.shape[0] - band)
    out[top:] = (out[top:] * 0.35).astype(np.uint8)
    cv2.putText(out, text, (round(6 * scale), out.shape[0] - baseline - round(4 * scale)), cv2.FONT_HERSHEY_SIMPLEX,
                scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return out


def save_snapshot(path: Path, jpeg_bytes: bytes, heatmap: Any = None, caption: str | None = None) -> Path:
    """Write the snapshot atomically; with a heat map or caption, decode, draw them, and re-encode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = jpeg_bytes
    if heatmap is not None or caption:
        frame = cv2.imdecode(np.frombuffer(jpeg_bytes, np.uint8), cv2.IMREAD_COLOR)
        if frame is not None:
            if heatmap is not None:
                frame = overlay_heatmap(frame, np.asarray(heatmap, dtype=np.float32))
            if caption:
                frame = draw_caption(frame, caption)
            ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
            data = buf.tobytes() if ok else jpeg_bytes
    tmp = path.with_suffix(".jpg.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path
