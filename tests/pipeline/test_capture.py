"""Capture node on a real video file and real ZeroMQ sockets."""

from __future__ import annotations

import time
from pathlib import Path

import zmq
from prometheus_client import CollectorRegistry

from pipeline.capture import CaptureNode
from pipeline.transport import frames_pull, worker_endpoint
from pipeline.wire import decode_frames
from tests.conftest import PEOPLE_CLIP
from tests.pipeline.stage_helpers import make_config, running


def _receive(sock: zmq.Socket, seconds: float) -> list:
    batches, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.poll(100):
            batches.append(decode_frames(sock.recv_multipart(copy=False)))
    return batches


def test_file_camera_is_sampled_by_time_resized_and_batched(models_dir: Path, tmp_path: Path) -> None:
    cameras = f"""  - {{id: a, source: {PEOPLE_CLIP}, fps: 5, realtime: false, models: [{{model: demo-anomaly}}]}}
  - {{id: b, source: {PEOPLE_CLIP}, fps: 2, realtime: false, resize: [160, 96], models: [{{model: demo-anomaly}}]}}"""
    config = make_config(models_dir, tmp_path, cameras)
    pull = zmq.Context.instance().socket(zmq.PULL)
    pull.bind(config.inference.endpoint)
    registry = CollectorRegistry()
    node = CaptureNode(config, 0, registry)
    with running(node):
        batches = _receive(pull, 4.0)
    pull.close(0)
    frames = {"a": [], "b": []}
    for batch in batches:
        for cam, t, frame in zip(batch.cameras, batch.t_stream, batch.frames, strict=True):
            frames[cam].append((t, frame.shape))
    assert frames["a"] and frames["b"]
    assert {shape for _, shape in frames["a"]} == {(224, 224, 3)}  # the model's input size
    assert {shape for _, shape in frames["b"]} == {(96, 160, 3)}  # resize is [width, height]
    gaps_a = [t2 - t1 for (t1, _), (t2, _) in zip(frames["a"], frames["a"][1:], strict=False)]
    assert abs(sum(gaps_a) / len(gaps_a) - 0.2) < 0.02  # 5 fps of stream time, from a 10 fps file
    captured = registry.get_sample_value("vidwatch_frames_captured_total", {"camera": "a"})
    assert captured and captured > len(frames["a"])  # decoded more than it sent: sampling
    assert registry.get_sample_value("vidwatch_camera_up", {"camera": "a"}) == 1
    last = registry.get_sample_value("vidwatch_last_frame_timestamp_seconds", {"camera": "a"})
    assert last is not None and 0 <= time.time() - last < 30  # the latest decode, in Unix seconds
    assert registry.get_sample_value("vidwatch_camera_reconnects_total", {"camera": "a"}) == 0


def test_no_consumer_drops_oldest_and_never_blocks(models_dir: Path, tmp_path: Path) -> None:
    cameras = f"""  - {{id: a, source: {PEOPLE_CLIP}, fps: 10, realtime: false, models: [{{model: demo-anomaly}}]}}"""
    config = make_config(models_dir, tmp_path, cameras, extra="capture: {queue_clips: 4}")
    registry = CollectorRegistry()
    node = CaptureNode(config, 0, registry)  # nobody binds the inference endpoint
    with running(node):
        time.sleep(3.0)
    sampled = registry.get_sample_value("vidwatch_frames_sampled_total", {"camera": "a"}) or 0
    dropped = {reason: registry.get_sample_value("vidwatch_frames_dropped_total", {"camera": "a", "reason": reason})
               or 0 for reason in ("queue_full", "inference_busy", "worker_down")}
    assert sampled > 30  # the reader kept reading
    assert sum(dropped.values()) > 0.5 * sampled
    assert dropped["worker_down"] > 0  # no worker ever connected: counted as such, nothing queued


def test_dead_camera_does_not_stop_the_others(models_dir: Path, tmp_path: Path) -> None:
    cameras = f"""  - {{id: dead, source: "rtsp://127.0.0.1:9/none", models: [{{model: demo-anomaly}}]}}
  - {{id: ok, source: {PEOPLE_CLIP}, fps: 5, realtime: false, models: [{{model: demo-anomaly}}]}}"""
    config = make_config(models_dir, tmp_path, cameras, extra="capture: {open_timeout_s: 1, reconnect_min_s: 0.5}")
    pull = zmq.Context.instance().socket(zmq.PULL)
    pull.bind(config.inference.endpoint)
    registry = CollectorRegistry()
    with running(CaptureNode(config, 0, registry)):
        batches = _receive(pull, 3.0)
    pull.close(0)
    assert any("ok" in b.cameras for b in batches)
    assert registry.get_sample_value("vidwatch_camera_up", {"camera": "dead"}) == 0
    assert (registry.get_sample_value("vidwatch_camera_reconnects_total", {"camera": "dead"}) or 0) >= 1


def test_motion_gate_holds_back_the_still_start_and_sends_the_preroll(models_dir: Path, tmp_path: Path) -> None:
    cameras = f"""  - id: a
    source: {PEOPLE_CLIP}
    fps: 10
    realtime: true
    playback_speed: 4
    models: [{{model: demo-anomaly, calibrate_seconds: 1}}]
    motion_gate: {{enabled: true, hold_s: 2}}"""
    config = make_config(models_dir, tmp_path, cameras, evidence="clips: false, frame_ring_s: 60")
    pull = zmq.Context.instance().socket(zmq.PULL)
    pull.bind(config.inference.endpoint)
    registry = CollectorRegistry()
    node = CaptureNode(config, 0, registry)
    with running(node):
        batches = _receive(pull, 4.0)  # 16 s of the clip: empty room until ~6 s, then someone walks in
    pull.close(0)
    sent = [(s, t, g) for b in batches for s, t, g in zip(b.seqs, b.t_stream, b.gaps or [], strict=True)]
    seqs = [s for s, _, _ in sent]
    assert sent[0][2] and not any(g for _, _, g in sent[1:])  # a fresh stream is flagged; the rest are seq jumps
    # Open while the model calibrates (1 s) and hold_s after it: 0..3 s at full rate.
    first_run = next(i for i in range(1, len(seqs)) if seqs[i] != seqs[i - 1] + 1)
    assert seqs[:first_run] == list(range(first_run)) and 2.8 <= sent[first_run - 1][1] <= 3.1
    # Then the still room is held back; the pre-roll (8 frames before the walk-in at ~6 s) and every frame after.
    onset = seqs[first_run]
    assert 4.5 < sent[first_run][1] < 6.0
    assert seqs[first_run:] == list(range(onset, onset + len(seqs) - first_run))
    gated = registry.get_sample_value("vidwatch_frames_gated_total", {"camera": "a"})
    assert gated == onset - first_run
    assert registry.get_sample_value("vidwatch_motion_gate_open", {"camera": "a"}) == 1
    assert (registry.get_sample_value("vidwatch_frames_sampled_total", {"camera": "a"}) or 0) >= len(seqs)
    # Snapshots are kept of the frames sent (an alert names one of them), not of the held-back ones.
    held = node.evidence["a"].ring.seqs()
    assert held[:len(seqs)] == seqs and not set(range(first_run, onset)) & set(held)
    ring_bytes = registry.get_sample_value("vidwatch_evidence_frame_ring_bytes", {"camera": "a"})
    assert ring_bytes == len(held) * 768 * 432 * 3 // 2  # I420 frames of the 768x432 clip


def test_the_connection_events_of_a_worker_no_camera_sends_to_are_read(models_dir: Path, tmp_path: Path) -> None:
    """Every worker's connection events are read on every loop, not only when frames go to it:
    libzmq blocks its I/O thread once a monitor's unread events fill its pipe (a dead worker's
    reconnect attempts do within minutes), and every socket of the process stalls with it."""
    cameras = f"  - {{id: a, source: {PEOPLE_CLIP}, worker: 0, models: [{{model: demo-anomaly}}]}}"
    config = make_config(models_dir, tmp_path, cameras)
    config = config.model_copy(update={"inference": config.inference.model_copy(update={"workers": 2})})
    node = CaptureNode(config, 0, CollectorRegistry())
    worker1 = frames_pull(zmq.Context.instance(), worker_endpoint(config.inference.endpoint, 1))
    try:
        assert node.peers[1].monitor.poll(10_000), "no connection event from worker 1"
        time.sleep(0.5)  # connected and handshaken: no further events while worker 1 stays up
        assert node.send_pending() == 0  # nothing queued: no camera runs, and none is routed to worker 1
        assert not node.peers[1].monitor.poll(0), "worker 1's events were left unread"
    finally:
        node.close()
        worker1.close(0)
