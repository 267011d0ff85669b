"""Retention on real files: age limit, disk cap oldest-first, rings measured but never deleted."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pipeline.retention import enforce, prune_empty_dirs


def _file(path: Path, size: int, age_s: float, now: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (now - age_s, now - age_s))
    return path


def test_old_files_go_then_oldest_first_until_under_the_cap(tmp_path: Path) -> None:
    now = time.time()
    snaps, clips, ring = tmp_path / "snapshots", tmp_path / "clips", tmp_path / "ring"
    ancient = _file(snaps / "cam" / "a.jpg", 100, 40 * 86400, now)  # past the 30-day limit
    old_clip = _file(clips / "cam" / "b.mp4", 1000, 3600, now)
    mid_snap = _file(snaps / "cam" / "c.jpg", 100, 1800, now)
    new_clip = _file(clips / "cam" / "d.mp4", 1000, 60, now)
    segment = _file(ring / "cam" / "seg-000.mp4", 5000, 7200, now)
    usage = enforce({"snapshots": snaps, "clips": clips}, {"ring": ring}, max_bytes=1200,
                    max_age_s=30 * 86400, now=now)
    assert not ancient.exists() and not old_clip.exists()  # too old; then the oldest of the rest
    assert mid_snap.exists() and new_clip.exists() and segment.exists()
    assert usage.deleted == 2
    assert usage.bytes_by_kind == {"snapshots": 100, "clips": 1000, "ring": 5000}


def test_nothing_deleted_within_limits_and_missing_folders_count_zero(tmp_path: Path) -> None:
    now = time.time()
    kept = _file(tmp_path / "clips" / "x.mp4", 10, 10, now)
    usage = enforce({"clips": tmp_path / "clips", "snapshots": tmp_path / "absent"}, {}, 10_000, 86400, now)
    assert kept.exists() and usage.deleted == 0
    assert usage.bytes_by_kind == {"clips": 10, "snapshots": 0}


def test_empty_camera_folders_are_removed_but_roots_stay(tmp_path: Path) -> None:
    (tmp_path / "clips" / "gone").mkdir(parents=True)
    _file(tmp_path / "clips" / "kept" / "a.mp4", 1, 0, time.time())
    prune_empty_dirs([tmp_path / "clips"])
    assert (tmp_path / "clips").is_dir() and not (tmp_path / "clips" / "gone").exists()
    assert (tmp_path / "clips" / "kept" / "a.mp4").exists()
