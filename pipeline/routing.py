"""Stable camera -> inference worker assignment: a camera's window state lives in one worker.

Every process computes the same assignment from the same config: cameras are ordered by a
digest of their id and dealt round-robin, so workers get equal shares (within one camera),
whatever the ids look like. A camera may also be pinned with ``worker:`` in the config.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence


def _digest(camera_id: str) -> bytes:
    return hashlib.blake2b(camera_id.encode(), digest_size=8).digest()


def assign_workers(camera_ids: Sequence[str], workers: int, pinned: Mapping[str, int] | None = None) -> dict[str, int]:
    """Worker index of every camera: pinned ones where pinned, the others dealt evenly.

    Dealing in digest order rather than taking ``hash % workers`` matters: with a handful of
    cameras a hash leaves one worker with twice the load of another (seen: 16 cameras on two
    workers split 10/6, saturating one core while the other idled).
    """
    pinned = dict(pinned or {})
    load = [0] * workers
    for worker in pinned.values():
        load[worker] += 1
    assignment = dict(pinned)
    for camera in sorted((c for c in camera_ids if c not in pinned), key=_digest):
        worker = min(range(workers), key=lambda w: (load[w], w))
        assignment[camera] = worker
        load[worker] += 1
    return assignment
