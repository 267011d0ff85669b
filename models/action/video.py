"""Decode one clip (an mp4 or a folder of JPEG frames) sampled by time at a fixed rate.

Sampling by time, not by frame count, is what the live pipeline does with a camera (and with the
same ``pipeline.sampling.RateSampler``): a 30 fps and a 10 fps clip both give ``fps`` frames per
second, so the model sees the same motion per step.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from models.action.errors import VideoReadError
from pipeline.sampling import RateSampler

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
FOLDER_FPS_FILE = "fps.txt"  # a folder of frames may say its rate; else it is taken as ``rate``


def sample_times(n_frames: int, src_fps: float, rate: float) -> np.ndarray:
    """Indices of the source frames kept at ``rate`` fps by the live pipeline's sampler."""
    sampler = RateSampler(rate)
    return np.array([i for i in range(n_frames) if sampler.keep(i / src_fps)], dtype=int)


def _resize_rgb(frame_bgr: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """BGR -> RGB, resized to ``size`` (w, h) unless it is None (native resolution)."""
    if size is not None:
        frame_bgr = cv2.resize(frame_bgr, size, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)


def read_video(path: Path, rate: float, size: tuple[int, int] | None) -> np.ndarray:
    """RGB uint8 frames ``[F, h, w, 3]`` of a video sampled at ``rate`` fps, resized to ``size`` (w, h).

    Streams: only the sampled frames are kept, so long videos do not fill memory.
    """
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoReadError(str(path), "OpenCV cannot open it")
        src_fps = cap.get(cv2.CAP_PROP_FPS)
        if not src_fps or not np.isfinite(src_fps) or src_fps <= 0:
            raise VideoReadError(str(path), "no frame rate in the container")
        frames = _decode_sampled(cap, src_fps, rate, size)
    finally:
        cap.release()
    if not frames:
        raise VideoReadError(str(path), "no decodable frame")
    return np.stack(frames)


def _decode_sampled(cap: cv2.VideoCapture, src_fps: float, rate: float,
                    size: tuple[int, int] | None) -> list[np.ndarray]:
    sampler = RateSampler(rate)  # the live pipeline's sampler: same frames offline as live
    frames: list[np.ndarray] = []
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        if sampler.keep(index / src_fps):
            frames.append(_resize_rgb(frame, size))
        index += 1


def read_frame_folder(path: Path, rate: float, size: tuple[int, int] | None) -> np.ndarray:
    """Like :func:`read_video` for a folder of frames in sorted file-name order."""
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not files:
        raise VideoReadError(str(path), "folder has no .jpg/.png frames")
    fps_file = path / FOLDER_FPS_FILE
    src_fps = float(fps_file.read_text().strip()) if fps_file.exists() else rate
    frames = []
    for i in sample_times(len(files), src_fps, rate):
        image = cv2.imread(str(files[i]), cv2.IMREAD_COLOR)
        if image is None:
            raise VideoReadError(str(files[i]), "not a readable image")
        frames.append(_resize_rgb(image, size))
    return np.stack(frames)


def read_clip(path: Path, rate: float, size: tuple[int, int] | None) -> np.ndarray:
    """A clip file or frame folder as RGB uint8 ``[F, h, w, 3]`` sampled at ``rate`` fps."""
    if path.is_dir():
        return read_frame_folder(path, rate, size)
    return read_video(path, rate, size)


def loop_pad(frames: np.ndarray, length: int) -> np.ndarray:
    """Repeat a clip shorter than ``length`` frames from its start (clips shorter than a window)."""
    if len(frames) >= length:
        return frames
    reps = -(-length // len(frames))
    return np.concatenate([frames] * reps)[:length]
