"""The loopback RTSP test server serves real H.264 files that OpenCV's FFmpeg backend can read."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from .rtsp import RtspServer, rtsp_available, rtsp_server

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
CAR = DATA / "samples" / "car-detection.mp4"  # 768x432, 12.5 fps, 377 frames, Baseline
FIGHTS = sorted((DATA / "fight" / "train" / "fight").glob("*.mp4"))  # ~2 s clips, B-frames
OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 2000

pytestmark = pytest.mark.rtsp


@pytest.fixture(scope="module")
def videos() -> dict[str, Path]:
    if not CAR.is_file() or len(FIGHTS) < 2:
        pytest.skip(f"real videos not found under {DATA}")
    return {"cam0": CAR, "cam1": FIGHTS[0], "cam2": FIGHTS[1]}


@pytest.fixture(scope="module")
def server(videos: dict[str, Path]) -> Iterator[RtspServer]:
    ok, reason = rtsp_available()
    if not ok:
        pytest.skip(reason)
    with rtsp_server(videos) as running:
        yield running


def open_capture(url: str, read_timeout_ms: int = READ_TIMEOUT_MS) -> cv2.VideoCapture:
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, read_timeout_ms]
    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    assert cap.isOpened(), f"cannot open {url}"
    return cap


def file_frame_shape(path: Path) -> tuple[int, int, int]:
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    assert ok
    return frame.shape


def read_frames(cap: cv2.VideoCapture, count: int) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    for _ in range(count):
        ok, frame = cap.read()
        assert ok, f"read failed after {len(frames)} frames"
        frames.append(frame)
    return frames


def test_reads_frames_of_a_real_h264_file(server: RtspServer, videos: dict[str, Path]) -> None:
    cap = open_capture(server.url("cam0"))
    try:
        frames = read_frames(cap, 25)
    finally:
        cap.release()
    assert {f.shape for f in frames} == {file_frame_shape(videos["cam0"])}
    assert np.std(frames[-1]) > 10, "decoded frames should be real pictures, not a flat colour"


def test_several_mounts_stream_at_once(server: RtspServer, videos: dict[str, Path]) -> None:
    caps = {name: open_capture(server.url(name)) for name in videos}
    try:
        for _ in range(20):
            for name, cap in caps.items():
                ok, frame = cap.read()
                assert ok, f"{name} stopped"
                assert frame.shape == file_frame_shape(videos[name])
    finally:
        for cap in caps.values():
            cap.release()


@pytest.mark.slow
def test_short_clip_loops_forever(server: RtspServer, videos: dict[str, Path]) -> None:
    clip_frames = int(cv2.VideoCapture(str(videos["cam1"])).get(cv2.CAP_PROP_FRAME_COUNT))
    cap = open_capture(server.url("cam1"))
    try:
        read_frames(cap, clip_frames + 30)
    finally:
        cap.release()


@pytest.mark.slow
def test_frozen_server_stalls_reads_and_a_reopen_recovers(videos: dict[str, Path]) -> None:
    ok, reason = rtsp_available()
    if not ok:
        pytest.skip(reason)
    with rtsp_server({"cam1": videos["cam1"]}) as frozen:
        cap = open_capture(frozen.url("cam1"), read_timeout_ms=1000)
        read_frames(cap, 10)
        frozen.freeze()
        start = time.monotonic()
        # Frames already buffered in FFmpeg still come out; then reads fail (about 3x the timeout).
        buffered = 0
        while cap.read()[0]:
            buffered += 1
            assert buffered < 50, "reads should fail once the server stops sending"
        print(f"frozen server noticed after {time.monotonic() - start:.2f} s")
        frozen.thaw()
        cap.release()
        cap = open_capture(frozen.url("cam1"))
        try:
            read_frames(cap, 10)
        finally:
            cap.release()
