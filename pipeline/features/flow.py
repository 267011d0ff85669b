"""Dense optical flow (OpenCV DIS) summarized per grid cell: the motion half of anomaly scoring.

Kind ``flow_cells``. Each frame is compared with the camera's previous frame; the flow field
is reduced to ``CHANNELS`` statistics per ``cell x cell`` pixel cell, on the same grid as the
stride-16 trunk map ``c4`` (``ceil(H/16) x ceil(W/16)``), so motion and appearance scores line
up location by location. The first frame of a camera (or after a gap) has no previous frame:
its flow is zero, or with ``first="next"`` the window ring and calibration replace it by the
second frame's (the flow into frame 1 is the best estimate of the motion at frame 0; see
``borrow_first`` and ``pipeline.camera_state``).

Params (manifest ``runtime_features.<name>``): ``height``/``width`` (the package input size;
other frame sizes are resized to it so magnitudes stay in the units the model was fitted in),
``cell`` (16), ``preset`` (see the table; ``medium`` is shipped), ``moving_px`` (1.0),
``quantile`` (0.9), ``scale`` (1.0: DIS runs on the input downscaled by ``scale``, cells of
``cell * scale`` pixels there, so the grid is unchanged; the flow is scaled back to input
pixels per frame, so ``moving_px`` and the statistics keep their units), ``first``
(``"zero"`` | ``"next"``), ``far_rows`` (0) and ``far_preset`` (``medium``): perspective-aware flow.
With ``far_rows`` > 0 the top ``far_rows`` cell rows (the far field, where walkers are small and
slow in pixels) take the statistics of a second DIS pass, ``far_preset`` at full input resolution
on the top band of the frame only (``far_rows * cell`` pixel rows plus ``BAND_MARGIN_PX`` below, so
motion at the band's edge is estimated with context); the cheap ``preset``/``scale`` flow of the
whole frame fills the cell rows below (models/anomaly/README.md, round 4).

DIS presets (``_PRESETS``; finest pyramid level as a fraction of the flow input, patch stride in px,
gradient-descent iterations per patch, variational refinement iterations; 8-px patches throughout):

=================== ======= ====== ========== ========== =============================================
preset              finest  stride iterations refinement what it is
=================== ======= ====== ========== ========== =============================================
``ultrafast``       1/4     4      12         0          OpenCV's ULTRAFAST
``fast``            1/4     4      16         5          OpenCV's FAST
``medium``          1/2     3      25         5          OpenCV's MEDIUM (shipped)
``ultrafast-fine``  1/2     4      12         0          ultrafast's search at medium's finest level
``medium-norefine`` 1/2     3      25         0          medium without variational refinement
``medium-s4``       1/2     4      25         5          medium with a sparser patch grid
``medium-s4-gd12``  1/2     4      12         5          medium's level and refinement, ultrafast's search
=================== ======= ====== ========== ========== =============================================
"""

from __future__ import annotations

from typing import Any, NamedTuple

import cv2
import numpy as np

from pipeline.features import FRAME_FEATURES
from pipeline.resize import area_resize

KIND = "flow_cells"
# Per-cell statistics, in channel order. Speed alone misses slow odd movers; the fraction of
# moving pixels (object size) and the mean direction carry what speed does not.
CHANNELS = ("dx", "dy", "speed_q", "moving_frac")


class DisPreset(NamedTuple):
    """An OpenCV DIS preset and the settings changed from it (None: the base preset's own)."""

    base: int
    finest: int | None = None  # finest pyramid level: 1 = 1/2 of the input, 2 = 1/4
    refine: int | None = None  # variational refinement iterations
    stride: int | None = None  # patch stride, px
    iterations: int | None = None  # gradient-descent iterations per patch


# OpenCV's ultrafast and fast stop at 1/4 of the input; medium at 1/2. The derived presets keep medium's
# finest level (small far-field movers need it, models/anomaly/README.md round 3) and cut the search
# (ultrafast-fine, medium-s4, medium-s4-gd12) or the variational refinement (medium-norefine); round 5 keeps
# the refinement, which calibrates the speeds, and cuts only the patch search.
_PRESETS: dict[str, DisPreset] = {
    "ultrafast": DisPreset(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST),
    "fast": DisPreset(cv2.DISOPTICAL_FLOW_PRESET_FAST),
    "medium": DisPreset(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM),
    "ultrafast-fine": DisPreset(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, finest=1),
    "medium-norefine": DisPreset(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, refine=0),
    "medium-s4": DisPreset(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, stride=4),
    "medium-s4-gd12": DisPreset(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, stride=4, iterations=12),
}


def create_dis(preset: str) -> Any:
    """An OpenCV DIS optical flow object for one of ``_PRESETS``."""
    if preset not in _PRESETS:
        raise ValueError(f"unknown DIS preset {preset!r}; valid: {', '.join(_PRESETS)}")
    settings = _PRESETS[preset]
    dis = cv2.DISOpticalFlow_create(settings.base)  # type: ignore[attr-defined]
    if settings.finest is not None:
        dis.setFinestScale(settings.finest)
    if settings.refine is not None:
        dis.setVariationalRefinementIterations(settings.refine)
    if settings.stride is not None:
        dis.setPatchStride(settings.stride)
    if settings.iterations is not None:
        dis.setGradientDescentIterations(settings.iterations)
    return dis


FIRST_FRAME = ("zero", "next")
# Pixel rows below the far-field band that its DIS pass also sees (one cell: medium's 8-px patches at
# its finest level, 1/2 of the input, span 16 input pixels), so flow at the band's last cell row is
# estimated with context below it; only the band's own rows are summarised.
BAND_MARGIN_PX = 16


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
    # numpy, not cv2.magnitude: that one's result differs by an ulp with its output buffer's alignment, so
    # the same frames could score differently from run to run (as fast here: 0.07 ms a 240x368 field)
    speed = np.sqrt(np.square(flow[..., 0]) + np.square(flow[..., 1]))
    k = min(int(quantile * cell * cell), cell * cell - 1)
    blocks = speed.reshape(gh, cell, gw, cell).transpose(0, 2, 1, 3).reshape(gh, gw, cell * cell)
    out = np.empty((4, gh, gw), np.float32)
    out[0:2] = cv2.resize(flow, (gw, gh), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)  # exact block means
    out[2] = np.partition(blocks, k, axis=-1)[..., k]
    out[3] = cv2.resize((speed > moving_px).astype(np.float32), (gw, gh), interpolation=cv2.INTER_AREA)
    return out


def scaled_cell(cell: int, scale: float) -> int:
    """Cell size in pixels of the flow field computed at ``scale``; must be a whole number."""
    px = cell * scale
    if not 0 < scale <= 1 or px != int(px):
        raise ValueError(f"flow scale {scale} must be in (0, 1] and make whole cells of {cell}*scale pixels "
                         f"(e.g. 0.5 or 0.25 for 16-px cells)")
    return int(px)


def borrow_first(stats: np.ndarray) -> np.ndarray:
    """``[F, ...]`` flow stats of one run of consecutive frames with frame 0 replaced by frame 1's
    (what the window ring and calibration do live for ``first="next"``)."""
    if len(stats) > 1:
        stats = stats.copy()
        stats[0] = stats[1]
    return stats


class FlowCells:
    """Per-camera DIS flow between consecutive frames, summarized per cell."""

    def __init__(self, height: int, width: int, cell: int = 16, preset: str = "medium",
                 moving_px: float = 1.0, quantile: float = 0.9, scale: float = 1.0, first: str = "zero",
                 far_rows: int = 0, far_preset: str = "medium") -> None:
        if first not in FIRST_FRAME:
            raise ValueError(f"unknown first-frame flow {first!r}; valid: {', '.join(FIRST_FRAME)}")
        rows = grid_shape(height, width, cell)[0]
        if not 0 <= int(far_rows) <= rows or int(far_rows) != far_rows:
            raise ValueError(f"far_rows {far_rows} must be a whole number of cell rows in [0, {rows}] "
                             f"(the top rows that take the fine far-field flow; 0: none)")
        self.size = (int(width), int(height))
        self.scale = float(scale)
        self.cell, self.moving_px, self.quantile = int(cell), float(moving_px), float(quantile)
        self.cell_px = scaled_cell(self.cell, self.scale)
        self.flow_size = (round(width * self.scale), round(height * self.scale))
        # The window ring and calibration replace a run's first frame by its second (pipeline.camera_state)
        self.borrows_next = first == "next"
        self._dis = create_dis(preset)
        self.far_rows = int(far_rows)
        # pixel rows of the far-field band's DIS pass: the band plus a margin, within the frame
        self.band_px = min(self.far_rows * self.cell + BAND_MARGIN_PX, int(height))
        if far_preset not in _PRESETS:
            raise ValueError(f"unknown far-field DIS preset {far_preset!r}; valid: {', '.join(_PRESETS)}")
        self.far_preset = far_preset
        self._far_dis = create_dis(far_preset) if self.far_rows else None
        self._previous: np.ndarray | None = None
        self._previous_band: np.ndarray | None = None

    def reset(self) -> None:
        self._previous = None
        self._previous_band = None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.stats(self.fields(frame))

    def stats(self, fields: tuple[np.ndarray, np.ndarray | None], moving_px: float | None = None,
              quantile: float | None = None) -> np.ndarray:
        """``fields`` (see ``fields``) -> ``[4, gh, gw]`` cell statistics: the top ``far_rows`` cell rows
        from the far-field band's flow, the rest from the whole-frame flow. ``moving_px`` and ``quantile``
        default to this feature's own."""
        moving_px = self.moving_px if moving_px is None else moving_px
        quantile = self.quantile if quantile is None else quantile
        out = cell_stats(fields[0], self.cell_px, moving_px, quantile)
        if fields[1] is not None:
            band = fields[1][:self.far_rows * self.cell]
            out[:, :self.far_rows] = cell_stats(band, self.cell, moving_px, quantile)[:, :self.far_rows]
        return out

    def fields(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The whole-frame flow (``field``) and, with ``far_rows``, the far-field band's full-resolution
        flow ``[band_px, W, 2]`` (None without), both from the previous frame to ``frame``."""
        frame = self._input(frame)
        band = None
        if self._far_dis is not None:
            gray = self._band_gray(frame)
            if self._previous_band is None:
                band = np.zeros((*gray.shape, 2), np.float32)
            else:
                band = self._far_dis.calc(self._previous_band, gray, None)
            self._previous_band = gray
        return self._whole(frame), band

    def field(self, frame: np.ndarray) -> np.ndarray:
        """The dense DIS flow from the previous frame to ``frame`` (zeros for the first), ``[h, w, 2]``
        at the flow resolution (input size times ``scale``), in input pixels per frame."""
        return self._whole(self._input(frame))

    def observe(self, frame: np.ndarray) -> None:
        """Keep ``frame`` as the previous one (its grey images only): no DIS pass, no statistics."""
        frame = self._input(frame)
        if self._far_dis is not None:
            self._previous_band = self._band_gray(frame)
        self._previous = self._gray(frame)

    def _input(self, frame: np.ndarray) -> np.ndarray:
        if frame.shape[1::-1] != self.size:
            frame = area_resize(frame, self.size)
        return frame

    def _band_gray(self, frame: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(cv2.cvtColor(frame[:self.band_px], cv2.COLOR_RGB2GRAY))

    def _gray(self, frame: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if self.flow_size != self.size:
            gray = cv2.resize(gray, self.flow_size, interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(gray)

    def _whole(self, frame: np.ndarray) -> np.ndarray:
        gray = self._gray(frame)
        if self._previous is None:
            flow = np.zeros((*gray.shape, 2), np.float32)
        else:
            flow = self._dis.calc(self._previous, gray, None)
            if self.scale != 1.0:
                flow *= 1.0 / self.scale
        self._previous = gray
        return flow


def parse_flow(text: str) -> dict[str, Any]:
    """``PRESET[@SCALE][+FAR_PRESET:FAR_ROWS]`` (e.g. ``medium``, ``fast@0.5``, ``ultrafast@1+medium:5``)
    -> ``{"preset", "scale", "far_preset", "far_rows"}``, checked against a 240 x 360 input."""
    whole, _, far = text.partition("+")
    preset, _, scale_text = whole.partition("@")
    far_preset, _, rows_text = far.partition(":")
    try:
        spec = {"preset": preset, "scale": float(scale_text or 1.0), "far_preset": far_preset or "medium",
                "far_rows": int(rows_text or 0)}
    except ValueError:
        raise ValueError(f"flow {text!r} is not PRESET[@SCALE][+FAR_PRESET:FAR_ROWS], "
                         f"e.g. fast@0.5 or ultrafast@1+medium:5") from None
    if far and not rows_text:
        raise ValueError(f"flow {text!r}: the far-field band needs its cell rows, e.g. {whole}+{far_preset}:5")
    FlowCells(240, 360, **spec)  # type: ignore[arg-type]
    return spec


@FRAME_FEATURES.register(KIND)
def _create(params: dict[str, Any]) -> FlowCells:
    return FlowCells(**params)
