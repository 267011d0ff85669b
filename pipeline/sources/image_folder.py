"""A folder of still frames (JPEG/PNG, sorted by name) played as a camera at a fixed rate."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import SourceError
from pipeline.sources import SOURCES, Source

SOURCE_KEY = "images"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
DEFAULT_FPS = 10.0  # UCSD Ped2 and most frame dumps; the folder itself carries no rate


class ImageFolderSource:
    live = False

    def __init__(self, location: str | int, open_timeout_s: float, read_timeout_s: float) -> None:
        folder = Path(str(location))
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.files:
            raise SourceError(f"folder {folder} has no image frames ({', '.join(sorted(IMAGE_SUFFIXES))})")
        rate_file = folder / "fps.txt"
        self.nominal_fps = float(rate_file.read_text().strip()) if rate_file.exists() else DEFAULT_FPS
        self._index = -1

    def grab(self) -> bool:
        self._index += 1
        return self._index < len(self.files)

    def timestamp(self) -> float:
        return self._index / self.nominal_fps

    def retrieve(self) -> np.ndarray:
        frame = cv2.imread(str(self.files[self._index]), cv2.IMREAD_COLOR)
        if frame is None:
            raise SourceError(f"{self.files[self._index]} is not a readable image")
        return frame

    def release(self) -> None:
        pass


def _factory(location: str | int, open_timeout_s: float, read_timeout_s: float) -> Source:
    return ImageFolderSource(location, open_timeout_s, read_timeout_s)


SOURCES.register(SOURCE_KEY)(_factory)
