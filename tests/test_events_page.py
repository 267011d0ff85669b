"""The events page in a real browser (Debian's Chromium, headless) while ``vidwatch run`` serves it:
cameras and an alert are listed, its clip plays (H.264 MP4) and its snapshot is the camera's own
640x360 frame. Screenshots go to the test's tmp folder (their paths are printed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, free_port
from tests.support.video import decode_errors, ffmpeg_missing, probe

CHROMIUM = Path("/usr/bin/chromium")
FIGHT_CLIP = ROOT / "deploy" / "samples" / "fight-demo.mp4"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
PRE_S, POST_S = 2.0, 2.0


def _browser_missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} not installed (deploy/install-system-deps.sh installs Debian's chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return ffmpeg_missing()


def _config(tmp: Path, models_dir: Path, port: int) -> Path:
    path = tmp / "events.yaml"
    path.write_text(f"""
state_dir: {tmp}/state
models: {{fight: {{path: {models_dir}/fight}}}}
inference: {{endpoint: "tcp://127.0.0.1:{free_port()}"}}
sink: {{endpoint: "tcp://127.0.0.1:{free_port()}", snapshots_dir: {tmp}/snapshots, status_interval_s: 1}}
cameras:
  - {{id: yard, source: {FIGHT_CLIP}, fps: 10, loop: true, models: [{{model: fight}}]}}
rules:
  - {{name: yard-fight, model: fight, label: fight, threshold: 0.7, clear_threshold: 0.5, min_duration_s: 1,
     cooldown_s: 5}}
outputs: [{{type: jsonl, path: {tmp}/alerts.jsonl}}]
evidence: {{endpoint: "tcp://127.0.0.1:{free_port()}", dir: {tmp}/evidence, pre_s: {PRE_S}, post_s: {POST_S}}}
metrics: {{port: {port}}}
""")
    return path


def _ended_with_clip(alerts: Path) -> dict[str, Any] | None:
    try:
        records = [json.loads(line) for line in alerts.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    return next((r for r in records if r["state"] == "end" and r.get("clip")), None)


@pytest.mark.slow
def test_events_page_lists_alert_and_plays_its_clip(models_dir: Path, tmp_path: Path) -> None:
    missing = _browser_missing()
    if missing:
        pytest.skip(missing)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(_config(tmp_path, models_dir, port))],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, ended = time.monotonic() + 150, None
        while ended is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(1)
            ended = _ended_with_clip(tmp_path / "alerts.jsonl")
        assert ended is not None, "no fight alert with a clip within 150 s"
        _check_clip(ended)
        _drive_browser(f"http://127.0.0.1:{port}/events", ended, tmp_path)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert f"events page: http://127.0.0.1:{port}/events" in out


def _check_clip(ended: dict[str, Any]) -> None:
    clip = Path(ended["clip"])
    info = probe(clip)
    expected = (ended["end"] + POST_S) - (ended["start"] - PRE_S)
    assert abs(info["duration"] - expected) <= 1.0, (info, expected)
    assert (info["codec_name"], info["pix_fmt"], info["width"], info["height"]) == ("h264", "yuv420p", 640, 360)
    assert decode_errors(clip) == ""


def _drive_browser(url: str, ended: dict[str, Any], tmp: Path) -> None:
    from playwright.sync_api import sync_playwright

    profile = tmp / "chromium-profile"
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector(f'.event[data-id="{ended["id"]}"] img', timeout=20_000)
            page.wait_for_function("() => document.querySelector('#cameras tr[data-camera=\"yard\"]') !== null")
            assert "yard" in page.inner_text("#cameras")
            page.wait_for_function(f"() => document.querySelector('.event[data-id=\"{ended['id']}\"] img').complete")
            _screenshot(page, tmp / "events-page.png")
            page.click(f'.event[data-id="{ended["id"]}"]')
            page.wait_for_function("() => document.getElementById('clip').readyState >= 3", timeout=20_000)
            first = page.evaluate("() => document.getElementById('clip').currentTime")
            page.wait_for_function(f"() => document.getElementById('clip').currentTime > {first} + 0.5",
                                   timeout=20_000)
            assert page.evaluate("() => document.getElementById('clip').error") is None
            page.wait_for_function("() => document.getElementById('snapshot').complete")
            natural = page.evaluate("() => [document.getElementById('snapshot').naturalWidth, "
                                    "document.getElementById('snapshot').naturalHeight]")
            assert natural == [640, 360], natural  # the camera's own frame, not the 224x224 model input
            _screenshot(page, tmp / "event-open.png")
        finally:
            browser.close()
    shutil.rmtree(profile, ignore_errors=True)


def _screenshot(page: Any, path: Path) -> None:
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
