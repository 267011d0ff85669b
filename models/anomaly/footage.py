"""Find and read normal footage: video files or folders of image frames, searched recursively."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import VidwatchError

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"})


class FootageError(VidwatchError):
    """Footage to fit or evaluate on is missing, empty or unreadable; ``folder`` names where."""

    def __init__(self, folder: Path, problem: str) -> None:
        self.folder = folder
        super().__init__(f"{folder}: {problem}")


def find_clips(root: Path) -> list[Path]:
    """Every video file and every folder holding image frames under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FootageError(root, "is not a folder; pass a folder of videos or of JPEG frame folders")
    try:
        files = sorted(p for p in root.rglob("*") if p.is_file())
    except OSError as exc:
        raise FootageError(root, f"cannot be listed ({exc})") from exc
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    frame_dirs = sorted({p.parent for p in files if p.suffix.lower() in IMAGE_SUFFIXES})
    clips = sorted(videos + frame_dirs)
    if not clips:
        raise FootageError(root, f"holds no video ({', '.join(sorted(VIDEO_SUFFIXES))}) and no image frames "
                                 f"({', '.join(sorted(IMAGE_SUFFIXES))}), searched recursively")
    return clips


def read_clip(clip: Path, height: int, width: int, fps: float | None = None) -> Iterator[np.ndarray]:
    """uint8 RGB frames of one clip resized to ``height x width``; videos are subsampled to ``fps``."""
    frames = _read_video(clip, fps) if clip.is_file() else _read_folder(clip)
    count = 0
    for bgr in frames:
        if bgr.shape[:2] != (height, width):
            bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
        count += 1
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if count == 0:
        raise FootageError(clip, "has no readable frame")


def _read_folder(folder: Path) -> Iterator[np.ndarray]:
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise FootageError(folder, f"image {path.name} cannot be decoded (corrupt or not an image)")
        yield image


def _read_video(path: Path, fps: float | None) -> Iterator[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise FootageError(path, "cannot be opened as a video")
    source_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    step = source_fps / fps if fps and source_fps > fps else 1.0
    index, next_kept = 0, 0.0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index >= next_kept - 1e-6:
                next_kept += step
                yield frame
            index += 1
    finally:
        capture.release()
