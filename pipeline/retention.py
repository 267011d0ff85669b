"""Evidence retention: snapshots and clips under a disk cap and an age limit, oldest deleted first.

The segment rings bound themselves (``pipeline/segment_ring.py``: FFmpeg reuses a fixed number of
file names); they are counted here so ``vidwatch_evidence_bytes`` is the whole footprint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    bytes_by_kind: dict[str, int]
    deleted: int


def _files(root: Path) -> list[tuple[float, int, Path]]:
    found = []
    for path in root.rglob("*") if root.is_dir() else ():
        try:
            if path.is_file() and not path.is_symlink():
                stat = path.stat()
                found.append((stat.st_mtime, stat.st_size, path))
        except OSError:
            continue  # deleted meanwhile
    return found


def enforce(kept: dict[str, Path], counted: dict[str, Path], max_bytes: int, max_age_s: float,
            now: float | None = None) -> Usage:
    """Delete files under ``kept`` roots older than ``max_age_s``, then oldest first until they fit
    ``max_bytes``; report bytes per kind for ``kept`` and ``counted`` (measured, never deleted)."""
    now = time.time() if now is None else now
    files = sorted((f + (kind,) for kind, root in kept.items() for f in _files(root)), key=lambda f: f[0])
    total = sum(size for _, size, _, _ in files)
    deleted = 0
    usage = dict.fromkeys([*kept, *counted], 0)
    for mtime, size, path, kind in files:
        if mtime < now - max_age_s or total > max_bytes:
            if _delete(path):
                total -= size
                deleted += 1
                continue
        usage[kind] += size
    for kind, root in counted.items():
        usage[kind] += sum(size for _, size, _ in _files(root))
    if deleted:
        logger.info("evidence retention: deleted %d old file(s); %d bytes kept", deleted, total)
    return Usage(usage, deleted)


def _delete(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return True
    except OSError as exc:
        logger.warning("evidence retention: cannot delete %s: %s", path, exc)
        return False


def prune_empty_dirs(roots: Iterable[Path]) -> None:
    for root in roots:
        for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                folder.rmdir()
            except OSError:
                pass
