"""Clip-consistent augmentation: one random draw per clip, applied to every frame of it.

Drawing per frame would make crops and colours flicker, which the temporal head would read as
motion; a fight detector must not learn that flicker means "fight".
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CROP_RATIO = (3 / 4, 4 / 3)  # aspect change relative to the frame's own aspect


@dataclass(frozen=True)
class ClipAugment:
    """Crop box (fractions of width/height), flip and colour factors for one clip."""

    x0: float
    y0: float
    w: float
    h: float
    flip: bool
    brightness: float
    contrast: float
    saturation: float

    @classmethod
    def draw(cls, rng: np.random.Generator, min_crop_area: float, jitter: float) -> ClipAugment:
        """The crop keeps ``min_crop_area``..1 of the frame; colour factors lie in ``1 ± jitter``.

        The strengths come from ``ActionConfig`` (its defaults are the shipped ones).
        """
        area = rng.uniform(min_crop_area, 1.0)
        ratio = np.exp(rng.uniform(np.log(CROP_RATIO[0]), np.log(CROP_RATIO[1])))
        w, h = min(1.0, np.sqrt(area * ratio)), min(1.0, np.sqrt(area / ratio))
        factors = rng.uniform(1 - jitter, 1 + jitter, size=3)
        return cls(float(rng.uniform(0, 1 - w)), float(rng.uniform(0, 1 - h)), float(w), float(h),
                   bool(rng.random() < 0.5), *map(float, factors))

    def apply(self, frames: np.ndarray, size: int) -> np.ndarray:
        """RGB uint8 ``[F, H, W, 3]`` at any resolution -> augmented ``[F, size, size, 3]``."""
        return np.stack([self._frame(f, size) for f in frames])

    def _frame(self, frame: np.ndarray, size: int) -> np.ndarray:
        height, width = frame.shape[:2]
        x0, y0 = int(self.x0 * width), int(self.y0 * height)
        crop = frame[y0:y0 + max(1, int(self.h * height)), x0:x0 + max(1, int(self.w * width))]
        out = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        if self.flip:
            out = out[:, ::-1]
        return self._colour(out)

    def _colour(self, rgb: np.ndarray) -> np.ndarray:
        grey = to_grey(rgb)
        rgb = rgb * self.brightness
        rgb = (rgb - grey.mean() * self.brightness) * self.contrast + grey.mean() * self.brightness
        grey = to_grey(rgb)
        rgb = grey[..., None] + (rgb - grey[..., None]) * self.saturation
        return np.clip(rgb, 0, 255).astype(np.uint8)


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """float32 luma (ITU-R 601 weights) of RGB ``[..., 3]``."""
    return np.asarray(rgb, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """The clean view: the whole frame resized to ``size x size``, as the live pipeline does."""
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames])
