"""Stable camera -> inference worker assignment: a camera's window state lives in one worker."""

from __future__ import annotations

import hashlib


def worker_for(camera_id: str, workers: int) -> int:
    """Same camera, same worker count -> same worker, in every process and on every host.

    A cryptographic digest rather than crc32: crc32's low bits barely change between ids like
    cam0, cam1, cam2, which sent them all to one worker of two.
    """
    digest = hashlib.blake2b(camera_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % workers
