"""The metrics as Prometheus sees them: promtool on rules and exposition, a real server scraping."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.exposition import generate_latest

from pipeline.capture import CaptureNode
from tests.conftest import PEOPLE_CLIP, ROOT, free_port
from tests.pipeline.stage_helpers import make_config, running
from tests.support.servers import prometheus, query, require

RULES = ROOT / "deploy" / "prometheus"


def test_alerting_rules_are_valid_and_fire_as_documented() -> None:
    promtool = require("promtool")
    check = subprocess.run([promtool, "check", "rules", str(RULES / "vidwatch-rules.yml")], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", str(RULES / "vidwatch-rules.test.yml")], capture_output=True,
                          text=True)
    assert test.returncode == 0, test.stdout + test.stderr


def test_real_prometheus_scrapes_a_capture_node(models_dir: Path, tmp_path: Path) -> None:
    promtool = require("promtool")
    cameras = f"  - {{id: door, source: {PEOPLE_CLIP}, fps: 5, loop: true, models: [{{model: demo-anomaly}}]}}"
    config = make_config(models_dir, tmp_path, cameras)
    registry = CollectorRegistry()
    node = CaptureNode(config, 0, registry)  # no inference bound: frames are dropped and counted
    metrics_port = free_port()
    server, _ = start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
    try:
        with running(node), prometheus(tmp_path, free_port(), [f"127.0.0.1:{metrics_port}"]) as url:
            up, deadline = [], time.monotonic() + 30
            while time.monotonic() < deadline and not up:
                time.sleep(1)
                up = query(url, 'vidwatch_camera_up{camera="door"} == 1')
            captured = query(url, 'vidwatch_frames_captured_total{camera="door"}')
            exposition = generate_latest(registry)
    finally:
        server.shutdown()
    assert up, "Prometheus never saw camera 'door' up"
    assert float(captured[0]["value"][1]) > 0
    lint = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True)
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
