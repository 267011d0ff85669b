"""Stages as separate commands over tcp (as on separate hosts), two inference workers with
stable camera routing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from pipeline.routing import assign_workers
from tests.conftest import PEOPLE_CLIP, ROOT, free_port, scrape_metrics


@pytest.mark.slow
def test_stage_commands_with_two_routed_workers(models_dir: Path, tmp_path: Path) -> None:
    base = free_port()
    cameras = ["north", "south", "east", "west"]
    routes = assign_workers(cameras, 2)
    assert sorted(routes.values()) == [0, 0, 1, 1]  # balanced
    camera_lines = "\n".join(
        f"  - {{id: {c}, source: {PEOPLE_CLIP}, fps: 5, loop: true, playback_speed: 4, "
        f"models: [{{model: a, calibrate_seconds: 3}}]}}" for c in cameras)
    config = tmp_path / "dist.yaml"
    config.write_text(f"""
state_dir: {tmp_path}/state
models: {{a: {{path: {models_dir}/demo-anomaly}}}}
inference: {{workers: 2, endpoint: "tcp://127.0.0.1:{base}"}}
sink: {{endpoint: "tcp://127.0.0.1:{free_port()}", snapshots_dir: {tmp_path}/snap}}
cameras:
{camera_lines}
rules: [{{name: r, model: a, threshold: 1.5, clear_threshold: 1.0, cooldown_s: 5}}]
outputs: [{{type: jsonl, path: {tmp_path}/alerts.jsonl}}]
evidence: {{endpoint: "tcp://127.0.0.1:{free_port()}"}}
""")
    ports = {name: free_port() for name in ("sink", "infer0", "infer1", "capture")}
    commands = {"sink": ["sink"], "infer0": ["infer", "--worker", "0"], "infer1": ["infer", "--worker", "1"],
                "capture": ["capture", "--group", "0"]}
    procs = [subprocess.Popen([sys.executable, "-m", "pipeline.cli", "--log-level", "warning", *cmd, str(config),
                               "--metrics-port", str(ports[name]), "--duration", "40"], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for name, cmd in commands.items()]
    try:
        deadline, scored = time.monotonic() + 40, {0: "", 1: ""}
        while time.monotonic() < deadline:
            time.sleep(1)
            scored = {i: scrape_metrics(ports[f"infer{i}"]) for i in (0, 1)}
            if all(f'camera="{c}"' in scored[routes[c]] and "vidwatch_windows_scored_total{" in
                   scored[routes[c]] for c in cameras):
                break
        sink_text = scrape_metrics(ports["sink"])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
    for camera in cameras:
        mine, other = scored[routes[camera]], scored[1 - routes[camera]]
        assert f'vidwatch_windows_scored_total{{camera="{camera}"' in mine
        assert f'camera="{camera}"' not in other  # routed to exactly one worker
    assert "vidwatch_end_to_end_latency_seconds_count" in sink_text
    alerts = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert {a["camera"] for a in alerts} <= set(cameras) and alerts
    # Snapshots crossed from the capture process to the sink process: the camera's 768x432 frame.
    widths = [cv2.imread(a["snapshot"]).shape[1] for a in alerts if a["state"] == "start" and a["snapshot"]]
    assert 768 in widths, widths
    assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]
