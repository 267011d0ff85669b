"""Webhook output against a real HTTP server on loopback: what it sends, how it fails, and the
sink's queue delivering every alert after the receiver answered 500, then refused connections."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from pipeline.alerts import Alert
from pipeline.cli import _output_env_warnings
from pipeline.config import parse_config
from pipeline.errors import ConfigError, VidwatchError
from pipeline.outputs import create_output
from pipeline.outputs.webhook import SIGNATURE_HEADER, WebhookOutputConfig
from pipeline.sink import Sink
from pipeline.wire import encode_results
from tests.conftest import free_port
from tests.pipeline.stage_helpers import make_config, running
from tests.support.http_receiver import HttpReceiver

TOKEN = "s3cr3t-token-value"
ALERT = Alert(id="abc123", state="start", camera="gate", rule="fight", kind="action", model="fight", label="fight",
              score=0.93, start=1.0, end=None, snapshot=None, latency_s=0.4)


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    rx = HttpReceiver(free_port()).start()
    try:
        yield rx
    finally:
        rx.stop()


def test_posts_the_alert_json_with_headers_from_env_and_a_signature(receiver: HttpReceiver,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDWATCH_TEST_TOKEN", TOKEN)
    config = WebhookOutputConfig(url=receiver.url, headers={"Authorization": "Bearer ${VIDWATCH_TEST_TOKEN}"},
                                 secret="signing-key")
    create_output(config).emit(ALERT)
    (got,) = receiver.accepted()
    assert got.method == "POST" and got.path == "/hooks/vidwatch"
    assert json.loads(got.body) == json.loads(ALERT.to_json())
    assert got.headers["Authorization"] == f"Bearer {TOKEN}"
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["Idempotency-Key"] == "abc123:start" and got.headers["X-Vidwatch-Event"] == "alert.start"
    expected = hmac.new(b"signing-key", got.body, hashlib.sha256).hexdigest()
    assert got.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert TOKEN not in repr(config) and "signing-key" not in repr(config)
    create_output(WebhookOutputConfig(url=receiver.url.replace("http://", "http://user:p%40ss@"))).emit(ALERT)
    assert receiver.accepted()[-1].headers["Authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()


def test_failures_raise_clear_errors_without_secrets(receiver: HttpReceiver) -> None:
    url = receiver.url.replace("http://", "http://user:pw@") + "?token=qs-secret"
    output = create_output(WebhookOutputConfig(url=url, headers={"Authorization": TOKEN}, timeout_s=0.5))
    receiver.status = 500
    with pytest.raises(VidwatchError, match="answered HTTP 500; the alert stays queued") as err:
        output.emit(ALERT)
    messages = [str(err.value)]
    receiver.status, receiver.redirect_to = 302, f"http://127.0.0.1:{free_port()}/elsewhere"
    with pytest.raises(VidwatchError, match="HTTP 302") as err:  # never follows: it would resend the headers
        output.emit(ALERT)
    messages.append(str(err.value))
    receiver.status, receiver.delay_s = 200, 2.0
    started = time.monotonic()
    with pytest.raises(VidwatchError, match="could not be reached") as err:
        output.emit(ALERT)
    assert time.monotonic() - started < 1.9  # the timeout holds the sink at most timeout_s
    messages.append(str(err.value))
    receiver.stop()
    with pytest.raises(VidwatchError, match="could not be reached") as err:
        output.emit(ALERT)
    messages.append(str(err.value))
    basic = receiver.requests[0].headers["Authorization"]
    assert basic == TOKEN  # the configured header wins over the URL's user info
    for message in messages:
        assert f"webhook http://127.0.0.1:{receiver.port}/hooks/vidwatch" in message
        assert TOKEN not in message and "pw" not in message and "qs-secret" not in message


def test_config_errors_name_the_field_and_hide_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"outputs\[0\]\.url \(line 4\): must be an http") as err:
        parse_config("models: {}\ncameras: [{id: a, source: x.mp4, models: [{model: m}]}]\n"
                     "outputs:\n  - {type: webhook, url: 'ftp://u:hunter2@example.org/x'}\n")
    assert "hunter2" not in str(err.value)
    monkeypatch.delenv("VIDWATCH_TEST_UNSET", raising=False)
    config = WebhookOutputConfig(url="http://127.0.0.1:9/x", headers={"X-Key": "${VIDWATCH_TEST_UNSET}"})
    with pytest.raises(VidwatchError, match=r"header X-Key refers to \$\{VIDWATCH_TEST_UNSET\}, which is not set"):
        create_output(config)
    checked = parse_config("models: {m: {path: x}}\ncameras: [{id: a, source: x.mp4, models: [{model: m}]}]\n"
                           "outputs:\n  - {type: webhook, url: 'http://h/x',"
                           " headers: {X-Key: '${VIDWATCH_TEST_UNSET}'}}\n")
    assert _output_env_warnings(checked) == [  # what `vidwatch check` prints
        "outputs[0] (webhook): ${VIDWATCH_TEST_UNSET} is not set here; the sink will not start without it"]


# -- the sink's queue: alerts raised while the receiver fails all arrive afterwards -----------
RULE = ("  - {name: crowd, model: demo-anomaly, threshold: 1.5, clear_threshold: 1.0, min_duration_s: 0.5,"
        " cooldown_s: 60}")
CAMERAS = ["c0", "c1", "c2", "c3"]


def _raise_alert(endpoint: str, camera: str) -> None:
    """Scores that start one alert on ``camera`` and end it: two events (start, end)."""
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(endpoint)
    jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
    for i, score in enumerate([1.8, 2.5, 2.0, 0.4]):
        record = {"camera": camera, "package": "demo-anomaly", "labels": ["anomaly"], "alert_label": "anomaly",
                  "scores": [score], "seq": i, "first_seq": i, "t_capture": time.time(), "t_stream": i * 0.4}
        snaps = [jpeg] if score >= 1.5 else []
        if snaps:
            record["snapshot_part"] = 0
        push.send_multipart(encode_results([record], snaps))
    push.close(2000)


def _poll(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_alerts_raised_while_the_receiver_fails_are_all_delivered_after(
        models_dir: Path, tmp_path: Path, receiver: HttpReceiver, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDWATCH_TEST_TOKEN", TOKEN)
    cameras = "\n".join(f"  - {{id: {c}, source: x.mp4, models: [{{model: demo-anomaly}}]}}" for c in CAMERAS)
    config = make_config(models_dir, tmp_path, cameras, RULE)
    hook = WebhookOutputConfig(url=receiver.url, timeout_s=2, headers={"Authorization": "${VIDWATCH_TEST_TOKEN}"})
    config = config.model_copy(update={"outputs": [*config.outputs, hook]})
    registry = CollectorRegistry()
    errors = lambda: registry.get_sample_value("vidwatch_output_errors_total", {"output": "webhook"})  # noqa: E731
    sink = Sink(config, registry)
    sink.delivery.backoff = (0.3, 1.0)  # the shipped 1 s .. 30 s, shortened for the test
    caplog.set_level(logging.INFO)
    receiver.status = 500
    with running(sink):
        # Phase 1: the receiver answers 500 to everything.
        for camera in CAMERAS[:2]:
            _raise_alert(config.sink.endpoint, camera)
        assert _poll(lambda: len(receiver.requests) >= 2, 20), "the webhook was never tried"
        # Phase 2: the receiver is gone; connections are refused.
        receiver.stop()
        answered_500 = len(receiver.requests)
        for camera in CAMERAS[2:]:
            _raise_alert(config.sink.endpoint, camera)
        assert _poll(lambda: errors() > answered_500 + 1, 20), "no refused attempt was counted"
        raised = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
        assert len(raised) == 2 * len(CAMERAS)  # every alert was raised (and written to JSONL) meanwhile
        assert registry.get_sample_value("vidwatch_alerts_pending") == len(raised)
        assert not receiver.accepted()
        # Phase 3: the receiver recovers on the same address.
        receiver.status = 200
        receiver.start()
        delivered = receiver.wait_for(len(raised), 30)
        assert _poll(lambda: registry.get_sample_value("vidwatch_alerts_pending") == 0, 10)
    bodies = [json.loads(r.body) for r in delivered]
    keys = [r.headers["Idempotency-Key"] for r in delivered]
    assert len(delivered) == len(raised) == 8
    assert sorted(keys) == sorted(f"{a['id']}:{a['state']}" for a in raised)  # each once, none lost
    assert bodies == raised  # the same records, in the order they were raised
    assert all(r.headers["Authorization"] == TOKEN for r in delivered)
    assert errors() >= answered_500 + 2
    assert TOKEN not in caplog.text and "failed" in caplog.text


def test_alerts_still_queued_when_the_sink_stops_are_delivered_by_the_next_sink(models_dir: Path,
                                                                                tmp_path: Path) -> None:
    port = free_port()  # nothing listens yet: every attempt is refused
    cameras = "\n".join(f"  - {{id: {c}, source: x.mp4, models: [{{model: demo-anomaly}}]}}" for c in CAMERAS[:2])
    config = make_config(models_dir, tmp_path, cameras, RULE)
    hook = WebhookOutputConfig(url=f"http://127.0.0.1:{port}/hooks/vidwatch", timeout_s=2)
    config = config.model_copy(update={"outputs": [*config.outputs, hook]})
    outbox = tmp_path / "state" / "outbox"
    with running(Sink(config, CollectorRegistry())):
        for camera in CAMERAS[:2]:
            _raise_alert(config.sink.endpoint, camera)
        assert _poll(lambda: len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 4, 20)
        spooled = list(outbox.glob("webhook-*.jsonl"))
        # On disk while the sink runs, so a crash or a kill -9 would not lose them either.
        assert len(spooled) == 1 and len(spooled[0].read_text().splitlines()) == 4
    assert not list(outbox.glob("jsonl-*.jsonl"))  # the JSONL output took everything: nothing kept for it
    raised = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    receiver = HttpReceiver(port).start()
    try:
        registry = CollectorRegistry()
        with running(Sink(config, registry)):  # a new sink, as after a restart
            delivered = receiver.wait_for(4, 20)
            assert _poll(lambda: not spooled[0].exists(), 10)
        assert registry.get_sample_value("vidwatch_alerts_pending") == 0
    finally:
        receiver.stop()
    assert [json.loads(r.body) for r in delivered] == raised
    assert len((tmp_path / "alerts.jsonl").read_text().splitlines()) == 4  # not written twice to JSONL
