"""Full-resolution snapshots over a real ZeroMQ socket: capture's frame ring answers the sink."""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np

from pipeline.evidence_ring import FrameRing, SnapshotClient, SnapshotServer, cap_width, group_endpoint, pack, unpack
from tests.conftest import PEOPLE_CLIP, free_port


def _frame(value: int, width: int = 1920, height: int = 1080) -> np.ndarray:
    frame = np.full((height, width, 3), value, np.uint8)
    cv2.putText(frame, str(value), (50, 200), cv2.FONT_HERSHEY_SIMPLEX, 5, (255, 255, 255), 8)
    return frame


def test_cap_width_keeps_aspect_and_leaves_small_frames_alone() -> None:
    big = _frame(10)
    assert cap_width(big, 1280).shape == (720, 1280, 3)
    small = _frame(10, 640, 360)
    assert cap_width(small, 1280) is small


def test_ring_holds_the_last_seconds_and_finds_the_nearest_frame() -> None:
    ring = FrameRing(seconds=1.0, fps=10)  # 11 frames
    for seq in range(30):
        ring.push(seq, 1000.0 + seq / 10, _frame(seq, 64, 36))
    found = ring.find(25)
    assert found is not None and found.seq == 25
    oldest = ring.find(0)  # gone: the nearest one still held
    assert oldest is not None and oldest.seq == 19
    assert FrameRing(1.0, 10).find(3) is None


def test_ring_drops_frames_older_than_its_seconds() -> None:
    ring = FrameRing(seconds=1.0, fps=10)
    for seq in (0, 1, 2):  # a keep-alive burst...
        ring.push(seq, 1000.0 + seq / 10, _frame(seq, 64, 36))
    assert ring.seqs() == [0, 1, 2]  # ...stays while nothing newer comes
    assert ring.nbytes() == 3 * 64 * 36 * 3 // 2
    ring.push(50, 1005.0, _frame(50, 64, 36))  # 5 s later: the burst is older than 1 s
    assert ring.seqs() == [50] and ring.nbytes() == 64 * 36 * 3 // 2
    for seq in range(51, 80):  # past maxlen (11 frames) within the second
        ring.push(seq, 1005.0 + (seq - 50) / 100, _frame(seq, 64, 36))
    assert len(ring.seqs()) == 11 and ring.nbytes() == 11 * 64 * 36 * 3 // 2


def test_frames_are_held_as_i420_half_the_bytes_and_come_back_close() -> None:
    cap = cv2.VideoCapture(str(PEOPLE_CLIP))
    ok, bgr = cap.read()
    cap.release()
    assert ok
    ring = FrameRing(seconds=1.0, fps=10)
    ring.push(0, 1000.0, bgr)
    assert ring.nbytes() == bgr.nbytes // 2
    found = ring.find(0)
    assert found is not None and found.bgr.shape == bgr.shape
    error = np.abs(found.bgr.astype(np.int16) - bgr).astype(np.float32)
    assert error.mean() < 2.0 and np.percentile(error, 99) < 16  # a real frame: chroma 4:2:0, as decoded
    odd = np.zeros((35, 63, 3), np.uint8)  # I420 needs even sides: kept as BGR
    assert pack(odd) is odd and unpack(pack(odd)) is odd


def test_sink_client_gets_the_native_frame_of_a_seq() -> None:
    base = f"tcp://127.0.0.1:{free_port()}"
    ring = FrameRing(seconds=2.0, fps=10)
    for seq in range(5):
        ring.push(seq, time.time(), cap_width(_frame(40 * seq), 1280))
    stop = threading.Event()
    server = SnapshotServer(group_endpoint(base, 0), {"cam": ring}, stop)
    server.start()
    client = SnapshotClient(base, [0], timeout_s=5.0)
    try:
        jpeg, why = client.fetch(0, "cam", 3)
        assert jpeg is not None, why
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (720, 1280, 3)
        assert abs(int(image[10, 10, 0]) - 120) <= 3  # frame 3 (grey level 120), not another one
        missing, why = client.fetch(0, "other", 3)
        assert missing is None and "no frames held" in why
    finally:
        stop.set()
        server.join(5)
        client.close()


def test_client_gives_up_when_no_capture_node_answers() -> None:
    client = SnapshotClient(f"tcp://127.0.0.1:{free_port()}", [0], timeout_s=0.3)
    started = time.monotonic()
    jpeg, why = client.fetch(0, "cam", 1)
    assert jpeg is None and "did not answer" in why
    assert time.monotonic() - started < 3.0
    client.close()
