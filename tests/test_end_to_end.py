"""`vidwatch run` as a user runs it: separate processes, a real video file, real sockets, a real
HTTP scrape of /metrics, alerts on disk; a garbled message mid-run changes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import zmq

from tests.conftest import PEOPLE_CLIP, ROOT, free_port, scrape_metrics

REQUIRED_METRICS = (
    "vidwatch_frames_captured_total", "vidwatch_frames_dropped_total", "vidwatch_camera_up",
    "vidwatch_inference_batch_size", "vidwatch_inference_latency_seconds", "vidwatch_end_to_end_latency_seconds",
    "vidwatch_alerts_total",
)


def _config(tmp: Path, models_dir: Path, metrics_port: int, infer_port: int) -> Path:
    path = tmp / "e2e.yaml"
    path.write_text(f"""
state_dir: {tmp}/state
models:
  demo-anomaly: {{path: {models_dir}/demo-anomaly}}
inference: {{endpoint: "tcp://127.0.0.1:{infer_port}", max_wait_ms: 20}}
sink: {{endpoint: "tcp://127.0.0.1:{free_port()}", snapshots_dir: {tmp}/snapshots, status_interval_s: 2}}
cameras:
  - id: lobby
    source: {PEOPLE_CLIP}
    fps: 5
    loop: true
    playback_speed: 4
    models: [{{model: demo-anomaly, calibrate_seconds: 15}}]
rules:
  - {{name: scene, model: demo-anomaly, threshold: 1.5, clear_threshold: 1.0, min_duration_s: 1, cooldown_s: 5}}
outputs:
  - {{type: jsonl, path: {tmp}/alerts.jsonl}}
  - {{type: stdout}}
metrics: {{port: {metrics_port}}}
evidence: {{endpoint: "tcp://127.0.0.1:{free_port()}"}}
""")
    return path


def _value(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")
               or line.startswith(name + " "))


@pytest.mark.slow
def test_vidwatch_run_writes_alerts_and_serves_metrics(models_dir: Path, tmp_path: Path) -> None:
    metrics_port, infer_port = free_port(), free_port()
    config = _config(tmp_path, models_dir, metrics_port, infer_port)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config), "--duration", "35"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        text, deadline = "", time.monotonic() + 60
        while time.monotonic() < deadline and _value(text, "vidwatch_end_to_end_latency_seconds_count") < 5:
            time.sleep(0.5)
            text = scrape_metrics(metrics_port)
        assert _value(text, "vidwatch_end_to_end_latency_seconds_count") >= 5, text[-2000:]
        garbage = zmq.Context.instance().socket(zmq.PUSH)
        garbage.connect(f"tcp://127.0.0.1:{infer_port}")
        garbage.send_multipart([b"\x00garbled", b"\x01\x02"])
        before = _value(text, "vidwatch_end_to_end_latency_seconds_count")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.5)
            text = scrape_metrics(metrics_port)
            if (_value(text, 'vidwatch_messages_rejected_total{reason="bad_message",stage="inference"}') >= 1
                    and _value(text, "vidwatch_end_to_end_latency_seconds_count") > before + 5):
                break
        garbage.close(0)
        for name in REQUIRED_METRICS:
            assert f"\n{name}" in text, f"{name} missing from /metrics"
        assert 'vidwatch_messages_rejected_total{reason="bad_message",stage="inference"} 1.0' in text
        assert _value(text, "vidwatch_end_to_end_latency_seconds_count") > before + 5  # still running
        assert 'vidwatch_camera_up{camera="lobby"} 1.0' in text
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.terminate()  # lets the supervisor stop its stages
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert proc.returncode == 0, out[-3000:]
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    starts = [a for a in alerts if a["state"] == "start"]
    assert starts, out[-3000:]
    assert {a["id"] for a in alerts if a["state"] == "end"} == {a["id"] for a in starts}  # every alert ended
    assert all(Path(a["snapshot"]).exists() for a in starts)
    assert "ALERT START camera=lobby" in out and "[status] camera=lobby fps_in=" in out and "fps_out=" in out
    assert "duration reached" in out
