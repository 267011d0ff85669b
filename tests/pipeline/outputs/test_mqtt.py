"""MQTT output against a real mosquitto broker on loopback."""

from __future__ import annotations

import json
import queue
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from pipeline.alerts import Alert
from pipeline.errors import VidwatchError
from pipeline.outputs import create_output
from pipeline.outputs.mqtt import MqttOutputConfig
from tests.conftest import free_port
from tests.support.servers import mosquitto

ALERT = Alert(id="abc123", state="start", camera="gate", rule="fight", kind="action", model="fight", label="fight",
              score=0.93, start=1.0, end=None, snapshot="var/snapshots/gate/abc123.jpg", latency_s=0.4)


def _wait_connected(output: object, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not output.client.is_connected():  # type: ignore[attr-defined]
        time.sleep(0.1)


def test_alert_is_published_as_json_on_the_camera_topic(tmp_path: Path) -> None:
    with mosquitto(tmp_path, free_port()) as port:
        received: queue.Queue[tuple[str, bytes]] = queue.Queue()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        sub.on_message = lambda _c, _u, msg: received.put((msg.topic, msg.payload))
        sub.connect("127.0.0.1", port)
        sub.subscribe("vidwatch/alerts/#", qos=1)
        sub.loop_start()
        output = create_output(MqttOutputConfig(port=port))
        try:
            _wait_connected(output)
            time.sleep(0.5)  # the subscription is in place
            output.emit(ALERT)
            topic, payload = received.get(timeout=10)
        finally:
            output.close()
            sub.loop_stop()
    assert topic == "vidwatch/alerts/gate"
    assert json.loads(payload)["id"] == "abc123" and json.loads(payload)["score"] == 0.93


def test_broker_down_then_up_fails_clearly_then_delivers(tmp_path: Path) -> None:
    port = free_port()
    output = create_output(MqttOutputConfig(port=port))  # no broker yet: the sink must still start
    try:
        with pytest.raises(VidwatchError, match=f"127.0.0.1:{port} is not connected"):
            output.emit(ALERT)
        with mosquitto(tmp_path, port):
            _wait_connected(output)
            output.emit(ALERT)  # the retry the sink would make now succeeds
    finally:
        output.close()
