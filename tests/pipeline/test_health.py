"""Health endpoints and sd_notify, on real sockets; readiness of real stages and of a real
``vidwatch run`` whose stage process is killed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from pipeline.health import (
    LocalStage,
    StageHealth,
    add_health_routes,
    read_report,
    sd_notify,
    watchdog_interval,
    write_report,
)
from pipeline.http_server import serve_metrics
from tests.conftest import PEOPLE_CLIP, ROOT, free_port
from tests.pipeline.stage_helpers import interrupt, make_config, running, write_run_config


def get_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def poll(fn: Any, timeout: float = 60.0, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    return None


# -- sd_notify against a real AF_UNIX datagram socket ----------------------------------------
@pytest.mark.parametrize("abstract", [False, True])
def test_sd_notify_sends_a_datagram_to_the_notify_socket(tmp_path: Path, abstract: bool) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        if abstract:
            name = f"vidwatch-test-{os.getpid()}-{time.monotonic_ns()}"
            listener.bind("\0" + name)
            env = {"NOTIFY_SOCKET": "@" + name}
        else:
            listener.bind(str(tmp_path / "notify"))
            env = {"NOTIFY_SOCKET": str(tmp_path / "notify")}
        listener.settimeout(5)
        assert sd_notify("READY=1\nSTATUS=ok", env)
        assert listener.recv(4096) == b"READY=1\nSTATUS=ok"
        assert sd_notify("WATCHDOG=1", env)
        assert listener.recv(4096) == b"WATCHDOG=1"


def test_sd_notify_is_a_no_op_without_systemd_and_false_when_the_socket_is_gone(tmp_path: Path) -> None:
    assert sd_notify("READY=1", {}) is False
    assert sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "absent")}) is False


def test_watchdog_interval_is_half_the_timeout_and_only_for_this_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({}) is None


# -- reports and routes ----------------------------------------------------------------------
def test_a_report_counts_only_for_its_own_pid_and_while_fresh(tmp_path: Path) -> None:
    write_report(tmp_path, "infer-0", StageHealth(True, [], {"models": ["a"]}))
    mine = read_report(tmp_path, "infer-0", os.getpid())
    assert mine.ready and mine.detail == {"models": ["a"]}
    assert not read_report(tmp_path, "infer-0", os.getpid() + 1).ready  # a previous process's report
    stale = read_report(tmp_path, "infer-0", os.getpid(), now=time.time() + 60)
    assert not stale.ready and "no health report" in stale.problems[0]
    assert not read_report(tmp_path, "sink-0", os.getpid()).ready  # nothing written yet


def test_readyz_is_503_with_reasons_until_ready_and_healthz_always_200() -> None:
    local = LocalStage("infer-0")
    server = serve_metrics("127.0.0.1", 0, CollectorRegistry())
    add_health_routes(server, local.readiness)
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert get_json(base + "/healthz")[0] == 200
        status, body = get_json(base + "/readyz")
        assert status == 503 and "starting" in body["not_ready"]["infer-0"][0]

        class Down:
            def health(self) -> StageHealth:
                return StageHealth.of(["camera door: reader not running",
                                       "failed to start: cannot open rtsp://admin:hunter2@192.0.2.7/live"])

        local.stage = Down()
        status, body = get_json(base + "/readyz")
        assert status == 503 and body["not_ready"] == {"infer-0": [
            "camera door: reader not running", "failed to start: cannot open rtsp://***@192.0.2.7/live"]}
        assert "hunter2" not in json.dumps(body)

        class Up:
            def health(self) -> StageHealth:
                return StageHealth.of([], {"cameras": {"door": "up"}})

        local.stage = Up()
        status, body = get_json(base + "/readyz")
        assert status == 200 and body["status"] == "ready" and body["not_ready"] == {}
        assert body["stages"]["infer-0"]["detail"] == {"cameras": {"door": "up"}}
    finally:
        server.stop()


def test_capture_is_ready_once_its_readers_run_even_while_a_camera_retries(models_dir: Path, tmp_path: Path) -> None:
    from pipeline.capture import CaptureNode

    config = make_config(models_dir, tmp_path, f"""
  - {{id: good, source: {PEOPLE_CLIP}, loop: true, models: [{{model: demo-anomaly}}]}}
  - {{id: dead, source: {tmp_path}/missing.mp4, models: [{{model: demo-anomaly}}]}}""")
    node = CaptureNode(config, 0, CollectorRegistry())
    before = node.health()
    assert not before.ready and "main loop not running yet" in before.problems
    with running(node):
        health = poll(lambda: (h := node.health()).detail["cameras"]["good"] == "up" and h, timeout=30)
        assert health and health.ready, node.health()
        assert health.detail["cameras"]["dead"] == "opening or retrying"


# -- a real `vidwatch run`: readiness follows a killed stage -----------------------------------
@pytest.mark.slow
def test_readyz_follows_a_killed_stage_and_the_supervisor_notifies_systemd(models_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    config = write_run_config(models_dir, tmp_path, metrics_port=port, evidence=False)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(0.2)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "2000000"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    readyz = f"http://127.0.0.1:{port}/readyz"
    messages: list[bytes] = []

    def drain() -> list[bytes]:
        while True:
            try:
                messages.append(notify.recv(4096))
            except TimeoutError:
                return messages

    def answer() -> tuple[int, dict[str, Any]] | None:
        try:
            return get_json(readyz)
        except OSError:
            return None

    try:
        first = poll(answer, timeout=60)
        assert first is not None, "the supervisor never served /readyz"
        assert first[0] == 503, f"ready before any stage could load its models: {first}"
        assert poll(lambda: (a := answer()) and a[0] == 200, timeout=120), f"never ready: {answer()}"
        assert get_json(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert poll(lambda: any(m.startswith(b"READY=1") for m in drain()), timeout=10), messages
        assert poll(lambda: b"WATCHDOG=1" in drain(), timeout=10), messages

        infer_pid = answer()[1]["stages"]["infer-0"]["detail"]["pid"]  # type: ignore[index]
        os.kill(infer_pid, signal.SIGKILL)
        down = poll(lambda: (a := answer()) and a[0] == 503 and "infer-0" in a[1]["not_ready"] and a, timeout=10)
        assert down, f"/readyz did not notice the killed inference worker: {answer()}"
        assert set(down[1]["not_ready"]) == {"infer-0"}, down[1]
        back = poll(lambda: (a := answer()) and a[0] == 200 and a, timeout=120)
        assert back, f"not ready again after the restart: {answer()}"
        assert back[1]["stages"]["infer-0"]["detail"]["pid"] != infer_pid
    finally:
        interrupt(proc)
        drain()
        notify.close()
    assert b"STOPPING=1" in messages, messages


@pytest.mark.slow
def test_a_stage_run_alone_answers_readyz_503_while_loading_then_200(models_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    config = write_run_config(models_dir, tmp_path, evidence=False)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "infer", str(config), "--metrics-port", str(port)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/readyz"
    seen: list[tuple[int, dict[str, Any]]] = []

    def answer() -> bool:
        try:
            seen.append(get_json(url))
        except OSError:
            return False
        return seen[-1][0] == 200

    try:
        assert poll(answer, timeout=120, interval=0.05), seen[-1:] or "never answered"
        assert seen[0][0] == 503 and "starting" in seen[0][1]["not_ready"]["infer-0"][0], seen[0]
        assert seen[-1][1]["stages"]["infer-0"]["detail"]["models"] == ["a"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_readyz_names_a_stage_that_cannot_load_its_model(models_dir: Path, tmp_path: Path) -> None:
    import shutil

    package = tmp_path / "broken-anomaly"
    shutil.copytree(models_dir / "demo-anomaly", package, symlinks=False)
    graph = next(p for p in sorted(package.rglob("*.onnx")) if not p.is_symlink())
    graph.write_bytes(graph.read_bytes() + b"tampered")  # its sha256 no longer matches the manifest
    port = free_port()
    config = tmp_path / "c.yaml"
    config.write_text(f"""
state_dir: {tmp_path}/state
models: {{a: {{path: {package}}}}}
inference: {{endpoint: "tcp://127.0.0.1:{free_port()}"}}
sink: {{endpoint: "tcp://127.0.0.1:{free_port()}", snapshots_dir: {tmp_path}/snap}}
cameras: [{{id: c, source: {PEOPLE_CLIP}, loop: true, models: [{{model: a}}]}}]
metrics: {{port: {port}}}
""")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def failed() -> dict[str, Any] | None:
        try:
            status, body = get_json(f"http://127.0.0.1:{port}/readyz")
        except OSError:
            return None
        problems = " ".join(body["not_ready"].get("infer-0", []))
        others_up = set(body["not_ready"]) == {"infer-0"}
        return body if status == 503 and "failed to start" in problems and others_up else None

    try:
        body = poll(failed, timeout=90)
        assert body, "/readyz never said (only) that the inference worker is down, and why"
        assert "sha256" in " ".join(body["not_ready"]["infer-0"]), body
    finally:
        interrupt(proc)


def test_supervisor_feeds_the_watchdog_only_while_no_stage_stays_unready(models_dir: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.supervisor import UNREADY_LIMIT_S, Supervisor

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(tmp_path / "notify"))
        listener.settimeout(0.5)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        monkeypatch.setenv("WATCHDOG_USEC", "1000")
        camera = f"  - {{id: c, source: {PEOPLE_CLIP}, models: [{{model: demo-anomaly}}]}}"
        config = make_config(models_dir, tmp_path, camera)
        supervisor = Supervisor(config)  # no stage started: every one "not started yet"
        try:
            assert all(h.problems == ["not started yet"] for h in supervisor.readiness().values())
            supervisor._notify_systemd()
            assert listener.recv(64) == b"WATCHDOG=1"  # unready for less than the limit: still fed
            for stage in supervisor.stages:
                stage.ready_at -= UNREADY_LIMIT_S + 1
            time.sleep(0.01)
            supervisor._notify_systemd()
            with pytest.raises(TimeoutError):
                listener.recv(64)  # a stage unready for too long: systemd's watchdog will restart us
        finally:
            supervisor.stop()
        assert listener.recv(64) == b"STOPPING=1"
