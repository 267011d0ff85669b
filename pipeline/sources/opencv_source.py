"""OpenCV ``VideoCapture`` for RTSP/HTTP streams, video files and USB device indexes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from pipeline.errors import SourceError
from pipeline.secrets import redact
from pipeline.sources import SOURCES, Source

logger = logging.getLogger(__name__)

SOURCE_KEY = "opencv"
# FFmpeg's own log goes straight to stderr, past our redacting log filter, and may quote the URL
# with its password: keep it quiet unless the operator asks for it (they then see raw URLs).
# Read by OpenCV when it first opens an FFmpeg capture, i.e. after this import.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
_STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://", "udp://", "tcp://")


def is_stream(location: str | int) -> bool:
    return isinstance(location, str) and location.lower().startswith(_STREAM_SCHEMES)


class OpenCVSource:
    def __init__(self, location: str | int, open_timeout_s: float, read_timeout_s: float) -> None:
        self.location = location
        self.live = is_stream(location) or isinstance(location, int) or str(location).isdigit()
        if isinstance(location, str) and not self.live and not Path(location).is_file():
            raise SourceError(f"video file {redact(location)!r} does not exist")
        # One decoder thread per camera: with many cameras, per-stream thread pools only contend.
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000), cv2.CAP_PROP_N_THREADS, 1]
        target: str | int = int(location) if str(location).isdigit() else location
        backend = cv2.CAP_ANY if isinstance(target, int) else cv2.CAP_FFMPEG
        self.cap = cv2.VideoCapture(target, backend, params)
        if not self.cap.isOpened():
            raise SourceError(f"OpenCV could not open {redact(location)!r}: check the URL/path, credentials, and that "
                              f"the camera is reachable")
        self.nominal_fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if not 0 < self.nominal_fps < 240:
            self.nominal_fps = 0.0
        self._frames = 0

    def grab(self) -> bool:
        ok = bool(self.cap.grab())
        self._frames += ok
        return ok

    def timestamp(self) -> float:
        msec = float(self.cap.get(cv2.CAP_PROP_POS_MSEC))
        if msec > 0:
            return msec / 1000.0
        # Some streams report no position: fall back to the frame count at the nominal rate.
        return self._frames / self.nominal_fps if self.nominal_fps else float(self._frames)

    def retrieve(self) -> np.ndarray:
        ok, frame = self.cap.retrieve()
        if not ok or frame is None:
            raise SourceError(f"{redact(self.location)!r}: grabbed frame could not be decoded")
        return frame

    def release(self) -> None:
        self.cap.release()


def _factory(location: str | int, open_timeout_s: float, read_timeout_s: float) -> Source:
    return OpenCVSource(location, open_timeout_s, read_timeout_s)


SOURCES.register(SOURCE_KEY)(_factory)
