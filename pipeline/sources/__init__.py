"""Camera sources by kind: ``opencv`` (RTSP/HTTP URLs, video files, USB indexes) and ``images``
(a folder of JPEG/PNG frames). ``open_source`` picks the kind from the camera's ``source``."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from pipeline.registry import Registry


class Source(Protocol):
    """Frames of one camera. ``grab`` advances; ``retrieve`` decodes/converts the grabbed frame,
    so frames that sampling skips cost no colour conversion or copy."""

    live: bool  # a live camera (wall-clock timing) rather than a file
    nominal_fps: float  # what the source says; 0 when unknown

    def grab(self) -> bool:
        """Advance to the next frame; False at the end of a file or when the camera fails."""
        ...

    def timestamp(self) -> float:
        """Stream time of the grabbed frame in seconds."""
        ...

    def retrieve(self) -> np.ndarray:
        """The grabbed frame as BGR uint8 HxWx3."""
        ...

    def release(self) -> None: ...


class SourceFactory(Protocol):
    def __call__(self, location: str | int, open_timeout_s: float, read_timeout_s: float) -> Source: ...


SOURCES: Registry[SourceFactory] = Registry("source")


def source_kind(location: str | int) -> str:
    if isinstance(location, str) and Path(location).is_dir():
        return "images"
    return "opencv"


def open_source(location: str | int, open_timeout_s: float = 10.0, read_timeout_s: float = 5.0) -> Source:
    return SOURCES.get(source_kind(location))(location, open_timeout_s, read_timeout_s)


from pipeline.sources import image_folder as _images  # noqa: E402,F401
from pipeline.sources import opencv_source as _opencv  # noqa: E402,F401
