"""Sink on real sockets: rules raise alerts with snapshots; a failing output loses nothing."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import zmq
from prometheus_client import CollectorRegistry

from pipeline.evidence_ring import FrameRing, SnapshotServer, group_endpoint
from pipeline.sink import Sink
from pipeline.wire import encode_results
from tests.pipeline.stage_helpers import make_config, running

RULE = """  - {name: crowd, model: demo-anomaly, threshold: 1.5, clear_threshold: 1.0, min_duration_s: 0.5,
     cooldown_s: 60}"""


def _result(score: float, t: float, seq: int) -> dict:
    return {"camera": "cam", "package": "demo-anomaly", "labels": ["anomaly"], "alert_label": "anomaly",
            "scores": [score], "seq": seq, "first_seq": seq - 3, "t_capture": time.time() - 0.3, "t_stream": t,
            "heatmap": (np.eye(14) * 3).tolist()}


def _send_scores(endpoint: str, scores: list[float]) -> None:
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(endpoint)
    jpeg = cv2.imencode(".jpg", np.full((224, 224, 3), 128, np.uint8))[1].tobytes()
    for i, score in enumerate(scores):
        record = _result(score, i * 0.4, i)
        snaps = [jpeg] if score >= 1.5 else []
        if snaps:
            record["snapshot_part"] = 0
        push.send_multipart(encode_results([record], snaps))
    push.send_multipart([b"garbage"])
    push.close(2000)


def test_scores_become_one_alert_with_snapshot_and_metrics(models_dir: Path, tmp_path: Path) -> None:
    config = make_config(models_dir, tmp_path, "  - {id: cam, source: x.mp4, models: [{model: demo-anomaly}]}",
                         RULE)
    registry = CollectorRegistry()
    with running(Sink(config, registry)):
        _send_scores(config.sink.endpoint, [0.2, 1.8, 2.5, 2.0, 1.2, 0.4, 2.2, 0.1])
        time.sleep(1.5)
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert [a["state"] for a in alerts] == ["start", "end"]  # cooldown swallows the 2.2
    start, end = alerts
    assert start["id"] == end["id"]
    assert start["score"] == 2.5 and end["score"] == 2.5  # peak while pending and active
    assert end["end"] > start["start"] and start["kind"] == "anomaly"
    snapshot = cv2.imread(start["snapshot"])
    assert snapshot is not None and snapshot.shape == (224, 224, 3)
    assert not np.all(snapshot == snapshot[0, 0])  # the heat map was drawn on the grey frame
    assert registry.get_sample_value("vidwatch_alerts_total", {"camera": "cam", "kind": "anomaly"}) == 1
    assert registry.get_sample_value("vidwatch_end_to_end_latency_seconds_count") == 8
    rejected = {"stage": "sink", "reason": "bad_message"}
    assert registry.get_sample_value("vidwatch_messages_rejected_total", rejected) == 1


def test_full_disk_output_keeps_the_alert_and_retries(models_dir: Path, tmp_path: Path) -> None:
    """/dev/full fails every write with ENOSPC, like a full disk; the alert must not be lost."""
    config = make_config(models_dir, tmp_path, "  - {id: cam, source: x.mp4, models: [{model: demo-anomaly}]}",
                         RULE)
    config = config.model_copy(update={"outputs": [*config.outputs,
                                                   type(config.outputs[0])(type="jsonl", path=Path("/dev/full"))]})
    registry = CollectorRegistry()
    sink = Sink(config, registry)
    with running(sink):
        _send_scores(config.sink.endpoint, [1.8, 2.5, 2.0])
        time.sleep(1.0)
        assert registry.get_sample_value("vidwatch_alerts_pending") == 1  # queued for /dev/full
        full = sink.delivery.lanes[1].output
        full.path, full._fh = tmp_path / "recovered.jsonl", (tmp_path / "recovered.jsonl").open("a")  # disk freed
        time.sleep(3.5)  # retries after 1 s, then 2 s more (backoff)
    assert registry.get_sample_value("vidwatch_output_errors_total", {"output": "jsonl"}) >= 1
    recovered = [json.loads(line) for line in (tmp_path / "recovered.jsonl").read_text().splitlines()]
    assert recovered[0]["state"] == "start"
    assert [json.loads(x)["state"] for x in (tmp_path / "alerts.jsonl").read_text().splitlines()][0] == "start"


def test_snapshot_is_the_native_frame_from_capture_and_end_waits_for_clip(models_dir: Path, tmp_path: Path) -> None:
    """Capture's frame ring answers at 1280x720 (the model frame is 224x224); clips on but no ring
    recorded here or on the capture node: the end record still goes out, with ``clip: null`` and why."""
    config = make_config(models_dir, tmp_path, "  - {id: cam, source: x.mp4, models: [{model: demo-anomaly}]}",
                         RULE, evidence="clips: true, snapshot_timeout_s: 5")
    ring = FrameRing(seconds=10, fps=10)
    for seq in range(8):
        ring.push(seq, time.time(), np.full((720, 1280, 3), 20 * seq, np.uint8))
    stop = threading.Event()
    server = SnapshotServer(group_endpoint(config.evidence.endpoint, 0), {"cam": ring}, stop)
    server.start()
    registry = CollectorRegistry()
    try:
        with running(Sink(config, registry)):
            _send_scores(config.sink.endpoint, [0.2, 1.8, 2.5, 2.0, 1.2, 0.4])
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and (tmp_path / "alerts.jsonl").read_text().count("\n") < 2:
                time.sleep(0.2)
    finally:
        stop.set()
        server.join(5)
    start, end = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    snapshot = cv2.imread(start["snapshot"])
    assert snapshot is not None and snapshot.shape == (720, 1280, 3)
    # Frame seq 3 (grey 60): the window that held the score 0.5 s; off the heat map's diagonal.
    assert abs(int(snapshot[550, 100, 0]) - 60) <= 3
    assert snapshot[-40:, :400].max() > 200 and snapshot[-3:, 800:900].max() < 40  # caption: white on a dark band
    assert start["clip"] is None and end["state"] == "end"
    assert end["clip"] is None and "not recorded on this capture node" in end["clip_error"]
    assert registry.get_sample_value("vidwatch_snapshots_total", {"resolution": "full"}) == 1
    assert registry.get_sample_value("vidwatch_clips_total", {"result": "failed"}) == 1


def test_status_line_shows_the_motion_gate(models_dir: Path, tmp_path: Path) -> None:
    config = make_config(models_dir, tmp_path, """  - {id: cam, source: x.mp4, models: [{model: demo-anomaly}]}
  - {id: plain, source: x.mp4, models: [{model: demo-anomaly}]}""")
    sink = Sink(config, CollectorRegistry())
    try:
        record = {"camera": "", "package": "", "scores": [], "labels": [], "t_capture": 0.0, "seq": -1, "status": {},
                  "stats": {"cam": {"fps_in": 25.0, "fps_out": 0.8, "dropped": 0, "gate_open": 0.0, "gated": 412.0},
                            "plain": {"fps_in": 25.0, "fps_out": 10.0, "dropped": 0}}}
        sink._update_status(record)
        lines = dict(zip(("cam", "plain"), sink.status_lines(), strict=True))
    finally:
        sink.shutdown()
    assert "gate=closed gated=412" in lines["cam"]
    assert "gate=" not in lines["plain"]  # a camera without the gate shows nothing about it
