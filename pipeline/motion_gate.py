"""The motion gate: spend model compute only where and when something moves.

Capture runs the gate on every sampled frame, where the frame is already decoded. A cheap
measure (``MotionDetector``: the frame shrunk to ``width`` pixels wide in grey, against a running
background, the fraction of pixels that changed by more than ``pixel_threshold``, regions under
``masks`` ignored) drives a small state machine (``MotionGate``):

- **closed** (still scene): frames are held back. Every ``keepalive_every_s`` a burst of
  ``keepalive_frames`` consecutive frames still goes out, so appearance models score a full
  window now and then and live calibration keeps seeing the camera (each camera's bursts at its
  own phase of the interval, so cameras started together do not burst together);
- **open** (motion): the ``preroll_frames`` frames held just before the onset go out first, then
  every frame, so a window that ends at the onset frame is complete;
- back to **closed** once no frame has moved for ``hold_s`` (hysteresis against flicker).

A camera whose models calibrate live is held open for its first ``full_rate_s`` seconds (the
longest calibration of its models, ``full_rate_seconds``), so calibration sees the camera at the
rate it will be scored at rather than a few keep-alive bursts.

Frames held back leave a gap in the camera's frame numbers (``seq``); the inference stage treats
every gap as a break (``pipeline.runner``): windows, frame deltas and optical flow restart after it.
"""

from __future__ import annotations

import logging
import zlib
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

import cv2
import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.modelpkg import ModelPackage, load_package

if TYPE_CHECKING:
    from pipeline.config import CameraConfig, Config

logger = logging.getLogger(__name__)

T = TypeVar("T")
Polygon = list[tuple[float, float]]


class MotionGateConfig(BaseModel):
    """``motion_gate:`` at the top level (defaults for every camera) and per camera (overrides)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(False, description="gate this camera's frames on motion")
    width: int = Field(64, ge=16, le=640, description="the motion measure runs on the frame shrunk to this width")
    pixel_threshold: int = Field(12, ge=1, le=255, description="grey-level change that counts a pixel as moved")
    min_area: float = Field(0.003, gt=0, le=1, description="fraction of (unmasked) pixels that must move")
    background_alpha: float = Field(0.05, gt=0, le=1, description="running-background update rate per frame")
    hold_s: float = Field(2.0, ge=0, description="stay open this long after the last moving frame")
    preroll_frames: int = Field(8, ge=0, le=64, description="frames before the onset sent when the gate opens")
    keepalive_every_s: float = Field(10.0, gt=0, description="closed: send a burst this often")
    keepalive_frames: int = Field(8, ge=0, le=64, description="closed: consecutive frames per burst (0: none)")
    masks: list[Polygon] = Field(default_factory=list,
                                 description="polygons to ignore, corners as [x, y] fractions of the frame (0..1)")

    @field_validator("masks")
    @classmethod
    def _polygons(cls, value: list[Polygon]) -> list[Polygon]:
        for i, poly in enumerate(value):
            if len(poly) < 3:
                raise ValueError(f"mask {i} needs at least 3 corners, got {len(poly)}")
            if any(not (0.0 <= c <= 1.0) for point in poly for c in point):
                raise ValueError(f"mask {i}: corners are [x, y] fractions of the frame, each in 0..1, got {poly}")
        return value


class MotionDetector:
    """Changed-area fraction of each frame against a running background (grey, downscaled)."""

    def __init__(self, config: MotionGateConfig) -> None:
        self.config = config
        self._background: np.ndarray | None = None
        self._keep: np.ndarray | None = None  # uint8 0/255 of pixels that count, at the measure size
        self._kept = 0

    def __call__(self, frame: np.ndarray) -> float:
        """Fraction of unmasked pixels that moved; ``frame`` is uint8 HxWx3 (BGR or RGB) or HxW grey."""
        grey = self._small_grey(frame)
        if self._background is None or self._background.shape != grey.shape:
            self._background = grey.astype(np.float32)
            self._keep = self._mask(grey.shape)
            self._kept = max(int(cv2.countNonZero(self._keep)) if self._keep is not None else grey.size, 1)
            return 0.0
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._background))
        _, moved = cv2.threshold(diff, self.config.pixel_threshold, 255, cv2.THRESH_BINARY)
        if self._keep is not None:
            moved = cv2.bitwise_and(moved, self._keep)
        cv2.accumulateWeighted(grey, self._background, self.config.background_alpha)
        return cv2.countNonZero(moved) / self._kept

    def _small_grey(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        width = min(self.config.width, w)
        size = (width, max(1, round(h * width / w)))
        # Shrink first (linear: the blur below smooths what it aliases), then convert: fewer pixels.
        small = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
        grey = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return cv2.GaussianBlur(grey, (3, 3), 0)

    def _mask(self, shape: tuple[int, ...]) -> np.ndarray | None:
        if not self.config.masks:
            return None
        h, w = shape[:2]
        keep = np.full((h, w), 255, np.uint8)
        for poly in self.config.masks:
            points = np.array([[round(x * (w - 1)), round(y * (h - 1))] for x, y in poly], np.int32)
            cv2.fillPoly(keep, [points], 0)
        return keep


@dataclass
class GateStats:
    open: bool = False
    gated: int = 0  # frames held back and never sent
    passed: int = 0
    openings: int = 0
    last_motion: float = 0.0  # changed-area fraction of the latest frame


class MotionGate(Generic[T]):
    """The per-camera state machine. ``offer`` takes each sampled frame in order (its time on the
    sampling clock, its motion fraction, and whatever the caller sends) and returns what to send
    now, oldest first: nothing, the frame, or the pre-roll then the frame."""

    def __init__(self, config: MotionGateConfig, keepalive_phase_s: float = 0.0) -> None:
        self.config = config
        self.keepalive_phase_s = keepalive_phase_s  # delay of the first burst of a camera that starts still
        self.stats = GateStats()
        self._preroll: deque[T] = deque(maxlen=max(config.preroll_frames, 1))
        self._last_moving: float | None = None
        self._burst_left = 0
        self._next_keepalive: float | None = None
        self._forced_until = -np.inf

    def hold_open_until(self, t: float) -> None:
        """Treat every frame before ``t`` as moving (e.g. while the camera's models calibrate)."""
        self._forced_until = t

    @property
    def is_open(self) -> bool:
        return self.stats.open

    def offer(self, t: float, moved: float, item: T) -> list[T]:
        if not self.config.enabled:
            self.stats.passed += 1
            return [item]
        self.stats.last_motion = moved
        if moved >= self.config.min_area or t < self._forced_until:
            self._last_moving = t
        if self.stats.open and (self._last_moving is None or t - self._last_moving > self.config.hold_s):
            self._close(t)
        elif not self.stats.open and self._last_moving == t:
            return self._open(item)
        if self.stats.open:
            return self._pass([item])
        return self._closed(t, item)

    def _open(self, item: T) -> list[T]:
        self.stats.open, self._burst_left = True, 0
        self.stats.openings += 1
        out = list(self._preroll)[-self.config.preroll_frames:] if self.config.preroll_frames else []
        self._preroll.clear()
        return self._pass([*out, item])

    def _close(self, t: float) -> None:
        self.stats.open = False
        self._next_keepalive = t + self.config.keepalive_every_s

    def _closed(self, t: float, item: T) -> list[T]:
        if self._next_keepalive is None:
            self._next_keepalive = t + self.keepalive_phase_s
        if self._burst_left == 0 and self.config.keepalive_frames and t >= self._next_keepalive:
            self._burst_left = self.config.keepalive_frames
            self._next_keepalive = t + self.config.keepalive_every_s
        if self._burst_left > 0:
            self._burst_left -= 1
            self.stats.gated += len(self._preroll)  # what was held is older than a frame now sent
            self._preroll.clear()
            return self._pass([item])
        if len(self._preroll) == self._preroll.maxlen:
            self.stats.gated += 1  # the oldest held frame falls out unsent
        self._preroll.append(item)
        return []

    def _pass(self, items: list[T]) -> list[T]:
        self.stats.passed += len(items)
        return items

    def flush_gated(self) -> int:
        """Frames still held at the end (counted as gated); for a camera that stops."""
        held = len(self._preroll)
        self.stats.gated += held
        self._preroll.clear()
        return held


class GateMetrics:
    """``vidwatch_motion_gate_open{camera}`` and ``vidwatch_frames_gated_total{camera}``."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.open = Gauge("vidwatch_motion_gate_open", "1 while the camera's motion gate is open (frames at "
                          "full rate), 0 while closed (keep-alive bursts only)", ["camera"], registry=registry,
                          multiprocess_mode="livemax")
        self.gated = Counter("vidwatch_frames_gated_total", "Sampled frames the motion gate held back (never sent)",
                             ["camera"], registry=registry)

    def init_camera(self, camera: str, enabled: bool) -> None:
        self.open.labels(camera).set(0 if enabled else 1)
        self.gated.labels(camera)


class CameraGate(Generic[T]):
    """Detector + state machine + metrics of one camera: what capture calls per sampled frame."""

    def __init__(self, camera: str, config: MotionGateConfig, metrics: GateMetrics | None = None,
                 full_rate_s: float = 0.0, keepalive_phase_s: float | None = None) -> None:
        self.camera, self.config, self.metrics = camera, config, metrics
        self.detector = MotionDetector(config)
        if keepalive_phase_s is None:
            # Cameras started together would burst together, every keepalive_every_s, all at once:
            # each camera's bursts get their own phase in the interval, fixed by its id.
            keepalive_phase_s = (zlib.crc32(camera.encode()) % 1000) / 1000 * config.keepalive_every_s
        self.gate: MotionGate[T] = MotionGate(config, keepalive_phase_s)
        self.full_rate_s = full_rate_s
        self._started = False
        if metrics is not None:
            metrics.init_camera(camera, config.enabled)

    def offer(self, t: float, frame: np.ndarray, item: T) -> list[T]:
        """Frames to send now for the sampled ``frame`` (decoded, any size) taken at ``t``."""
        if not self.config.enabled:
            return [item]
        if not self._started and self.full_rate_s > 0:
            self.gate.hold_open_until(t + self.full_rate_s)
        self._started = True
        gated_before, was_open = self.gate.stats.gated, self.gate.is_open
        out = self.gate.offer(t, self.detector(frame), item)
        if self.metrics is not None:
            if self.gate.stats.gated != gated_before:
                self.metrics.gated.labels(self.camera).inc(self.gate.stats.gated - gated_before)
            if self.gate.is_open != was_open:
                self.metrics.open.labels(self.camera).set(1 if self.gate.is_open else 0)
        return out

    def status(self) -> dict[str, float]:
        """For the sink's status line (travels in the frame header's per-camera stats)."""
        if not self.config.enabled:
            return {}
        return {"gate_open": 1.0 if self.gate.is_open else 0.0, "gated": float(self.gate.stats.gated)}


def full_rate_seconds(calibrate_seconds: list[float | None], packages: list[ModelPackage]) -> float:
    """How long a camera's gate stays open at start: the longest live calibration of its models
    (a model ref's ``calibrate_seconds``, else its package's own calibration when it ships no state).
    A camera whose calibration was loaded from disk spends these seconds at full rate for nothing."""
    longest = 0.0
    for seconds, package in zip(calibrate_seconds, packages, strict=True):
        spec = package.manifest.calibration
        if seconds is None and spec is not None and package.shipped_state() is None:
            seconds = spec.seconds
        longest = max(longest, seconds or 0.0)
    return longest


def camera_gate(config: Config, camera: CameraConfig, metrics: GateMetrics | None) -> CameraGate[T]:
    """The gate capture runs for ``camera``, held open while its models calibrate."""
    full_rate_s = 0.0
    if camera.motion_gate.enabled:
        packages = [load_package(config.models[ref.model].path, verify=False) for ref in camera.models]
        full_rate_s = full_rate_seconds([ref.calibrate_seconds for ref in camera.models], packages)
    return CameraGate(camera.id, camera.motion_gate, metrics, full_rate_s)
