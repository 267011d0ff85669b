"""Stable camera -> inference worker assignment: a camera's window state lives in one worker."""

from __future__ import annotations

import zlib


def worker_for(camera_id: str, workers: int) -> int:
    """Same camera, same worker count -> same worker, in every process and on every host."""
    return zlib.crc32(camera_id.encode()) % workers
