"""Inference worker on real sockets: garbage is counted and dropped, real frames are scored."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import zmq
from prometheus_client import CollectorRegistry

from pipeline.inference import InferenceWorker
from pipeline.wire import decode_results, encode_frames
from tests.conftest import PEOPLE_CLIP
from tests.pipeline.stage_helpers import make_config, running


def _clip(n: int) -> np.ndarray:
    cap = cv2.VideoCapture(str(PEOPLE_CLIP))
    frames = [cv2.cvtColor(cv2.resize(cap.read()[1], (224, 224)), cv2.COLOR_BGR2RGB) for _ in range(n)]
    return np.stack(frames)


def test_garbled_messages_are_counted_and_the_worker_keeps_scoring(models_dir: Path, tmp_path: Path) -> None:
    cameras = "  - {id: cam, source: x.mp4, models: [{model: demo-anomaly, calibrate_seconds: 1, stride: 5}]}"
    config = make_config(models_dir, tmp_path, cameras)
    ctx = zmq.Context.instance()
    sink = ctx.socket(zmq.PULL)
    sink.bind(config.sink.endpoint)
    registry = CollectorRegistry()
    worker = InferenceWorker(config, 0, registry)
    push = ctx.socket(zmq.PUSH)
    push.connect(config.inference.endpoint)
    frames = _clip(48)
    with running(worker):
        for garbage in ([b"\xde\xad\xbe\xef"], [b'{"v": 1, "kind": "frames"}', b"x" * 10],
                        [b"{}", b""], encode_frames(["intruder"], [0], [0.0], [0.0], frames[:1])):
            push.send_multipart(garbage)
        for i in range(0, 48, 4):
            push.send_multipart(encode_frames(["cam"] * 4, list(range(i, i + 4)), [time.time()] * 4,
                                              [(i + j) / 5 for j in range(4)], frames[i:i + 4]), copy=False)
        results, deadline = [], time.monotonic() + 10
        while time.monotonic() < deadline and len(results) < 5:
            if sink.poll(200):
                records, _ = decode_results(sink.recv_multipart())
                results += [r for r in records if r["camera"] == "cam"]
    push.close(0)
    sink.close(0)
    bad = registry.get_sample_value("vidwatch_messages_rejected_total", {"stage": "inference", "reason": "bad_message"})
    unknown = registry.get_sample_value("vidwatch_messages_rejected_total",
                                        {"stage": "inference", "reason": "unknown_camera"})
    assert bad == 3 and unknown == 1
    assert len(results) >= 5  # calibrated on the first second, then scored windows
    assert results[0]["labels"] == ["anomaly"] and len(results[0]["heatmap"]) == 14
    assert registry.get_sample_value("vidwatch_inference_batch_size_count") >= 1
    # stride 5 over the 4-frame window: one frame in five between windows is in none, and not computed
    # (5 windows: up to 4 such frames; fewer when the batch that ended calibration held one)
    assert registry.get_sample_value("vidwatch_frames_skipped_total", {"model": "demo-anomaly"}) >= 1
