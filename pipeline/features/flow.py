"""Dense optical flow (OpenCV DIS) summarized per grid cell: the motion half of anomaly scoring.

Kind ``flow_cells``. Each frame is compared with the camera's previous frame; the flow field
is reduced to ``CHANNELS`` statistics per ``cell x cell`` pixel cell, on the same grid as the
stride-16 trunk map ``c4`` (``ceil(H/16) x ceil(W/16)``), so motion and appearance scores line
up location by location. The first frame of a camera has zero flow.

Params (manifest ``runtime_features.<name>``): ``height``/``width`` (the package input size;
other frame sizes are resized to it so magnitudes stay in the units the model was fitted in),
``cell`` (16), ``preset`` (``ultrafast`` | ``fast`` | ``medium``), ``moving_px`` (1.0),
``quantile`` (0.9).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from pipeline.features import FRAME_FEATURES

KIND = "flow_cells"
# Per-cell statistics, in channel order. Speed alone misses slow odd movers; the fraction of
# moving pixels (object size) and the mean direction carry what speed does not.
CHANNELS = ("dx", "dy", "speed_q", "moving_frac")
_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def grid_shape(height: int, width: int, cell: int = 16) -> tuple[int, int]:
    """Cells per column and row; equals the ``c4`` map size for ``cell=16``."""
    return -(-height // cell), -(-width // cell)


def cell_stats(flow: np.ndarray, cell: int, moving_px: float, quantile: float) -> np.ndarray:
    """``[H, W, 2]`` flow -> ``[4, gh, gw]`` float32 (see ``CHANNELS``); edges padded by replication."""
    h, w = flow.shape[:2]
    gh, gw = grid_shape(h, w, cell)
    # OpenCV rather than numpy reductions: this runs per frame per camera (0.4 ms instead of 3.5)
    flow = cv2.copyMakeBorder(np.ascontiguousarray(flow, np.float32), 0, gh * cell - h, 0, gw * cell - w,
                              cv2.BORDER_REPLICATE)
    speed = cv2.magnitude(flow[..., 0], flow[..., 1])
    k = min(int(quantile * cell * cell), cell * cell - 1)
    blocks = speed.reshape(gh, cell, gw, cell).transpose(0, 2, 1, 3).reshape(gh, gw, cell * cell)
    out = np.empty((4, gh, gw), np.float32)
    out[0:2] = cv2.resize(flow, (gw, gh), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)  # exact block means
    out[2] = np.partition(blocks, k, axis=-1)[..., k]
    out[3] = cv2.resize((speed > moving_px).astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
    return out


class FlowCells:
    """Per-camera DIS flow between consecutive frames, summarized per cell."""

    def __init__(self, height: int, width: int, cell: int = 16, preset: str = "medium",
                 moving_px: float = 1.0, quantile: float = 0.9) -> None:
        if preset not in _PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; valid: {', '.join(_PRESETS)}")
        self.size = (int(width), int(height))
        self.cell, self.moving_px, self.quantile = int(cell), float(moving_px), float(quantile)
        self._dis = cv2.DISOpticalFlow_create(_PRESETS[preset])  # type: ignore[attr-defined]
        self._previous: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return cell_stats(self.field(frame), self.cell, self.moving_px, self.quantile)

    def field(self, frame: np.ndarray) -> np.ndarray:
        """The dense ``[H, W, 2]`` DIS flow from the previous frame to ``frame`` (zeros for the first)."""
        if frame.shape[1::-1] != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        gray = np.ascontiguousarray(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        if self._previous is None:
            flow = np.zeros((*gray.shape, 2), np.float32)
        else:
            flow = self._dis.calc(self._previous, gray, None)
        self._previous = gray
        return flow


@FRAME_FEATURES.register(KIND)
def _create(params: dict[str, Any]) -> FlowCells:
    return FlowCells(**params)
