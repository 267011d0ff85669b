"""Event clips from a real FFmpeg segment ring: duration, codec, playability, faststart."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.alerts import Alert
from pipeline.clips import ClipError, ClipWorker, cut_clip, read_index
from pipeline.config import EvidenceConfig
from pipeline.evidence_ring import SnapshotClient, SnapshotServer, group_endpoint
from pipeline.retention import Usage
from pipeline.segment_ring import SegmentRecorder, ring_dir
from tests.conftest import free_port
from tests.support.video import decode_errors, ffmpeg_missing, is_faststart, probe

pytestmark = pytest.mark.skipif(ffmpeg_missing() is not None, reason=str(ffmpeg_missing()))
FPS = 10.0


def record(evidence_dir: Path, seconds: float, settings: EvidenceConfig, camera: str = "cam") -> tuple[float, float]:
    """Feed a recorder ``seconds`` of 320x180 frames at 10 fps, paced like a camera; (first, last) wall times."""
    recorder = SegmentRecorder(camera, "file.mp4", FPS, evidence_dir, settings)
    recorder.start()
    first = time.time()
    n = int(seconds * FPS)
    for i in range(n):
        frame = np.zeros((180, 320, 3), np.uint8)
        cv2.rectangle(frame, (i * 3 % 300, 60), (i * 3 % 300 + 20, 120), (0, 200, 255), -1)
        recorder.write(frame)
        time.sleep(max(0.0, first + (i + 1) / FPS - time.time()))
    last = time.time()
    recorder.close()
    assert recorder.dropped <= n // 3, f"{recorder.dropped} of {n} frames dropped"  # a loaded box drops some
    return first, last


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float, float]:
    evidence_dir = tmp_path_factory.mktemp("evidence")
    first, last = record(evidence_dir, 8.0, EvidenceConfig(segment_s=1.0))
    return evidence_dir, first, last


def test_ring_lists_segments_in_wall_time(ring: tuple[Path, float, float]) -> None:
    evidence_dir, first, last = ring
    segments = read_index(ring_dir(evidence_dir, "cam"))
    assert len(segments) >= 5
    assert 0 < segments[0].start - first < 2.5  # the ring's first segment is skipped (see read_index)
    assert abs(segments[-1].end - last) < 1.0
    for before, after in zip(segments, segments[1:], strict=False):
        assert 0 <= after.start - before.end < 0.5  # contiguous: no lost video between segments


def test_clip_covers_the_span_and_plays(ring: tuple[Path, float, float], tmp_path: Path) -> None:
    evidence_dir, first, _ = ring
    out = cut_clip(ring_dir(evidence_dir, "cam"), first + 2.0, first + 6.0, tmp_path / "clip.mp4")
    info = probe(out)
    assert abs(info["duration"] - 4.0) <= 1.0, info
    assert (info["codec_name"], info["pix_fmt"], info["width"], info["height"]) == ("h264", "yuv420p", 320, 180)
    assert decode_errors(out) == ""
    assert is_faststart(out)


def test_clip_outside_the_ring_is_an_error_not_a_file(ring: tuple[Path, float, float], tmp_path: Path) -> None:
    evidence_dir, first, _ = ring
    with pytest.raises(ClipError, match="no recorded video"):
        cut_clip(ring_dir(evidence_dir, "cam"), first - 100, first - 90, tmp_path / "none.mp4")
    assert not (tmp_path / "none.mp4").exists()


def _alert(start: float, end: float, camera: str = "cam") -> Alert:
    return Alert(id=f"{camera}{int(start * 1000) % 100000}", state="end", camera=camera, rule="r", kind="anomaly",
                 model="m", label="x", score=2.0, start=start, end=end, snapshot=None)


def test_worker_attaches_clip_or_reason_to_end_records(ring: tuple[Path, float, float], tmp_path: Path) -> None:
    evidence_dir, first, _ = ring
    settings = EvidenceConfig(pre_s=1.0, post_s=1.0)
    usages: list[Usage] = []
    worker = ClipWorker(evidence_dir, settings, tmp_path / "snapshots", usages.append)
    worker.start()
    worker.submit(_alert(first + 3.0, first + 5.0))  # [2, 6]: recorded already
    worker.submit(_alert(first + 3.0, first + 5.0, camera="nocamera"))  # no ring for that camera
    worker.submit(_alert(first + 3.5, first + 4.5, camera="cam2"), pre_s=0.5, post_s=2.0)  # a rule's own margins
    shutil.copytree(ring_dir(evidence_dir, "cam"), ring_dir(evidence_dir, "cam2"))
    got = {a.camera: a for a in (worker.done.get(timeout=30) for _ in range(3))}
    assert worker.finish(5) == []
    ok, failed, own = got["cam"], got["nocamera"], got["cam2"]
    assert ok.clip is not None and ok.clip_error is None
    assert abs(probe(Path(ok.clip))["duration"] - 4.0) <= 1.0
    assert own.clip is not None and abs(probe(Path(own.clip))["duration"] - 3.5) <= 1.0
    assert failed.clip is None and "no recorded video" in str(failed.clip_error)
    clips_bytes = Path(ok.clip).stat().st_size + Path(own.clip).stat().st_size
    assert usages and usages[-1].bytes_by_kind["clips"] == clips_bytes  # measured after the last clip


def test_ring_stays_bounded(tmp_path: Path) -> None:
    settings = EvidenceConfig(segment_s=0.25, max_clip_s=0.5, pre_s=0, post_s=0, ring_s=1.0)
    record(tmp_path, 5.0, settings)
    folder = ring_dir(tmp_path, "cam")
    files = list(folder.glob("seg-*.mp4"))
    listed = read_index(folder)
    assert len(files) <= 8 and 1 <= len(listed) <= 6, (len(files), len(listed))  # ~20 segments were written


def test_ring_on_another_host_is_cut_by_its_capture_node(ring: tuple[Path, float, float], tmp_path: Path) -> None:
    """The sink's folder has no ring (capture on another host): the clip comes over the socket."""
    evidence_dir, first, _ = ring
    base = f"tcp://127.0.0.1:{free_port()}"
    stop = threading.Event()
    server = SnapshotServer(group_endpoint(base, 0), {}, stop, {"cam": ring_dir(evidence_dir, "cam")})
    server.start()
    client = SnapshotClient(base, [0], timeout_s=5.0)
    worker = ClipWorker(tmp_path / "sink-evidence", EvidenceConfig(pre_s=1.0, post_s=1.0), tmp_path / "snapshots",
                        remote=lambda cam, a, b, final: client.fetch_clip(0, cam, a, b, final))
    worker.start()
    try:
        worker.submit(_alert(first + 3.0, first + 5.0))
        worker.submit(_alert(first + 3.0, first + 5.0, camera="elsewhere"))
        got = {a.camera: a for a in (worker.done.get(timeout=60) for _ in range(2))}
    finally:
        worker.finish(5)
        stop.set()
        server.join(5)
        client.close()
    clip = got["cam"].clip
    assert clip is not None and Path(clip).is_relative_to(tmp_path / "sink-evidence" / "clips")
    assert abs(probe(Path(clip))["duration"] - 4.0) <= 1.0 and decode_errors(Path(clip)) == ""
    assert got["elsewhere"].clip is None and "not recorded on this capture node" in str(got["elsewhere"].clip_error)
    assert not list(ring_dir(evidence_dir, "cam").glob("clip-*"))  # the capture node cleaned up
