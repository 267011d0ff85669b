"""Events API on a real loopback HTTP server: filters, paging, Range, and no way out of the folders."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.alerts import Alert
from pipeline.config import Config, parse_config
from pipeline.events_api import register_events
from pipeline.http_server import HttpServer
from tests.conftest import ROOT, free_port


def _config(tmp: Path, models_dir: Path) -> Config:
    return parse_config(_config_text(tmp, models_dir))


def _config_text(tmp: Path, models_dir: Path, port: int = 9108) -> str:
    return (f"""
state_dir: {tmp}/state
models: {{a: {{path: {models_dir}/demo-anomaly}}}}
cameras:
  - {{id: north, source: "rtsp://admin:hunter2@10.0.0.9/stream", models: [{{model: a}}]}}
  - {{id: south, source: x.mp4, models: [{{model: a}}]}}
rules: [{{name: crowd, model: a, threshold: 1.5}}, {{name: loiter, model: a, threshold: 2.5}}]
outputs: [{{type: jsonl, path: {tmp}/alerts.jsonl}}]
sink: {{snapshots_dir: {tmp}/snapshots}}
evidence: {{dir: {tmp}/evidence}}
metrics: {{port: {port}}}
""")


def _alerts(tmp: Path, now: float) -> list[Alert]:
    out = []
    for i in range(7):
        camera, rule = ("north", "crowd") if i % 2 == 0 else ("south", "loiter")
        snap = tmp / "snapshots" / camera / f"id{i}.jpg"
        snap.parent.mkdir(parents=True, exist_ok=True)
        snap.write_bytes(b"\xff\xd8jpeg" + bytes([i]))
        start = Alert(id=f"id{i}", state="start", camera=camera, rule=rule, kind="anomaly", model="a",
                      label="anomaly", score=2.0 + i, start=now - 700 + i * 100, end=None, snapshot=str(snap))
        out.append(start)
        if i < 6:
            out.append(Alert(**{**start.__dict__, "state": "end", "end": start.start + 10}))
    clip = tmp / "evidence" / "clips" / "north" / "id0.mp4"
    clip.parent.mkdir(parents=True, exist_ok=True)
    clip.write_bytes(bytes(range(256)) * 40)  # 10240 bytes
    out[1] = Alert(**{**out[1].__dict__, "clip": str(clip)})
    # A record pointing outside the evidence folders (a tampered or foreign file): never served.
    outside = tmp / "secret.txt"
    outside.write_text("secret")
    out.append(Alert(id="evil", state="start", camera="south", rule="crowd", kind="anomaly", model="a",
                     label="anomaly", score=9.0, start=now - 1000, end=None, snapshot=str(outside)))
    return out


@pytest.fixture
def server(tmp_path: Path, models_dir: Path) -> Iterator[tuple[HttpServer, float]]:
    now = time.time()
    config = _config(tmp_path, models_dir)
    (tmp_path / "alerts.jsonl").write_text("".join(a.to_json() + "\n" for a in _alerts(tmp_path, now))
                                           + '{"torn line\n')
    (tmp_path / "evidence" / "status.json").write_text(json.dumps({"updated": now, "cameras": {
        "north": {"fps_in": 10.0, "fps_out": 5.0, "scores": {"a": 0.7}, "last_result": now - 1}}}))
    srv = HttpServer("127.0.0.1", free_port())
    register_events(srv, config)
    srv.start()
    yield srv, now
    srv.stop()


def _get(srv: HttpServer, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("GET", path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def test_events_filter_page_and_merge_start_with_end(server: tuple[HttpServer, float]) -> None:
    srv, now = server
    status, _, body = _get(srv, "/api/events?limit=3")
    data = json.loads(body)
    assert status == 200 and data["total"] == 8
    assert [e["id"] for e in data["events"]] == ["id6", "id5", "id4"]  # newest first
    assert data["events"][0]["state"] == "open" and data["events"][1]["state"] == "ended"
    page2 = json.loads(_get(srv, "/api/events?limit=3&offset=3")[2])
    assert [e["id"] for e in page2["events"]] == ["id3", "id2", "id1"]
    north = json.loads(_get(srv, "/api/events?camera=north&rule=crowd")[2])
    assert {e["camera"] for e in north["events"]} == {"north"} and north["total"] == 4
    recent = json.loads(_get(srv, f"/api/events?since={now - 250}")[2])
    assert [e["id"] for e in recent["events"]] == ["id6", "id5"]
    first = next(e for e in json.loads(_get(srv, "/api/events?camera=north&limit=10")[2])["events"] if e["id"] == "id0")
    assert first["clip_url"] == "/api/events/id0/clip" and first["snapshot_url"] == "/api/events/id0/snapshot"
    assert _get(srv, "/api/events?limit=abc")[0] == 400


def test_cameras_report_status_and_never_the_source(server: tuple[HttpServer, float]) -> None:
    srv, _ = server
    status, _, body = _get(srv, "/api/cameras")
    cameras = {c["id"]: c for c in json.loads(body)["cameras"]}
    assert status == 200 and cameras["north"]["state"] == "up" and cameras["south"]["state"] == "down"
    assert cameras["north"]["fps_out"] == 5.0 and cameras["north"]["scores"] == {"a": 0.7}
    assert b"hunter2" not in body and b"rtsp" not in body


def test_clip_is_served_with_byte_ranges(server: tuple[HttpServer, float]) -> None:
    srv, _ = server
    whole = bytes(range(256)) * 40
    status, headers, body = _get(srv, "/api/events/id0/clip")
    assert status == 200 and body == whole and headers["accept-ranges"] == "bytes"
    assert headers["content-type"] == "video/mp4"
    status, headers, body = _get(srv, "/api/events/id0/clip", {"Range": "bytes=100-199"})
    assert status == 206 and body == whole[100:200] and headers["content-range"] == "bytes 100-199/10240"
    status, headers, body = _get(srv, "/api/events/id0/clip", {"Range": "bytes=10000-"})
    assert status == 206 and body == whole[10000:] and headers["content-range"] == "bytes 10000-10239/10240"
    status, _, body = _get(srv, "/api/events/id0/clip", {"Range": "bytes=-40"})
    assert status == 206 and body == whole[-40:]
    assert _get(srv, "/api/events/id0/clip", {"Range": "bytes=20000-"})[0] == 416
    assert _get(srv, "/api/events/id0/snapshot")[2].startswith(b"\xff\xd8jpeg")


@pytest.mark.parametrize("path", [
    "/api/events/evil/snapshot",  # the record points outside the snapshots folder
    "/api/events/../../secret.txt",
    "/api/events/..%2f..%2fsecret.txt/clip",
    "/api/events/id0/../../../secret.txt",
    "/api/events/%2e%2e/snapshot",
    "/api/events/id0/clip/../../snapshot",
    "/api/events/id6/clip",  # no clip recorded for it
    "/api/events/nosuch/snapshot",
])
def test_nothing_outside_the_evidence_folders_is_served(server: tuple[HttpServer, float], path: str) -> None:
    srv, _ = server
    status, _, body = _get(srv, path)
    assert status == 404 and b"secret" not in body


def test_page_is_served(server: tuple[HttpServer, float]) -> None:
    status, headers, body = _get(server[0], "/events")
    assert status == 200 and headers["content-type"].startswith("text/html") and b"/api/events" in body


def test_events_command_serves_the_page_after_a_run(tmp_path: Path, models_dir: Path) -> None:
    now = time.time()
    (tmp_path / "alerts.jsonl").write_text("".join(a.to_json() + "\n" for a in _alerts(tmp_path, now)))
    port = free_port()
    config = tmp_path / "c.yaml"
    config.write_text(_config_text(tmp_path, models_dir, port))
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "events", str(config), "--duration", "30"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, body = time.monotonic() + 20, b""
        while time.monotonic() < deadline and not body:
            time.sleep(0.3)
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/api/events?camera=north")
                body = conn.getresponse().read()
            except OSError:
                continue
        assert json.loads(body)["total"] == 4
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert f"events page: http://127.0.0.1:{port}/events" in out
