"""Cameras on a real GStreamer RTSP server: frames flow, a frozen server is noticed, the camera
is reopened, and the other camera never stops."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import zmq
from prometheus_client import CollectorRegistry

from pipeline.capture import CaptureNode
from pipeline.wire import decode_frames
from tests.conftest import PEOPLE_CLIP
from tests.pipeline.stage_helpers import make_config, running
from tests.support.rtsp import rtsp_available, rtsp_server

pytestmark = pytest.mark.rtsp


@pytest.fixture(autouse=True)
def _needs_rtsp() -> None:
    ok, reason = rtsp_available()
    if not ok:
        pytest.skip(reason)


def _count(sock: zmq.Socket, seconds: float) -> dict[str, int]:
    counts: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.poll(100):
            for cam in decode_frames(sock.recv_multipart(copy=False)).cameras:
                counts[cam] = counts.get(cam, 0) + 1
    return counts


def _wait(predicate, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_rtsp_cameras_stream_then_a_frozen_server_is_reopened(models_dir: Path, tmp_path: Path) -> None:
    with rtsp_server({"cam0": PEOPLE_CLIP}) as server:
        cameras = f"""  - {{id: street, source: "{server.url('cam0')}", fps: 5, models: [{{model: demo-anomaly}}]}}
  - {{id: file, source: {PEOPLE_CLIP}, fps: 5, loop: true, models: [{{model: demo-anomaly}}]}}"""
        config = make_config(models_dir, tmp_path, cameras,
                             extra="capture: {read_timeout_s: 1, open_timeout_s: 5, reconnect_min_s: 0.5}")
        pull = zmq.Context.instance().socket(zmq.PULL)
        pull.bind(config.inference.endpoint)
        registry = CollectorRegistry()

        def up() -> float | None:
            return registry.get_sample_value("vidwatch_camera_up", {"camera": "street"})

        with running(CaptureNode(config, 0, registry)):
            assert _wait(lambda: up() == 1, 20), "the RTSP camera never came up"
            live = _count(pull, 3.0)
            assert live.get("street", 0) >= 10 and live.get("file", 0) >= 10  # ~5 fps each
            server.freeze()
            assert _wait(lambda: up() == 0, 15), "a frozen server was never noticed"
            during = _count(pull, 1.0)
            assert during.get("file", 0) >= 3  # the other camera kept going
            server.thaw()
            assert _wait(lambda: up() == 1, 30), "the camera did not recover after the server thawed"
            after = _count(pull, 3.0)
        pull.close(0)
    assert after.get("street", 0) >= 5
    assert (registry.get_sample_value("vidwatch_camera_reconnects_total", {"camera": "street"}) or 0) >= 1
