"""Alerts published as JSON to an MQTT broker (paho-mqtt, imported when used)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.alerts import Alert
from pipeline.errors import VidwatchError

OUTPUT_KEY = "mqtt"


class MqttOutputConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["mqtt"] = "mqtt"
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    topic: str = Field("vidwatch/alerts/{camera}", description="{camera} and {rule} are filled in")
    qos: int = Field(1, ge=0, le=2)


class MqttOutput:
    def __init__(self, config: MqttOutputConfig) -> None:
        try:
            import paho.mqtt.client as mqtt
        except ImportError as exc:
            raise VidwatchError("output 'mqtt' needs paho-mqtt: pip install 'vidwatch[mqtt]'") from exc
        self.config = config
        self.client: Any = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        # Connect in the background and keep reconnecting: a broker that is down at start-up or
        # goes away must not stop the sink; emit() fails meanwhile and the sink retries.
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.connect_async(config.host, config.port)
        self.client.loop_start()

    def emit(self, alert: Alert) -> None:
        where = f"MQTT broker {self.config.host}:{self.config.port}"
        if not self.client.is_connected():
            raise VidwatchError(f"{where} is not connected; the alert stays queued")
        topic = self.config.topic.format(camera=alert.camera, rule=alert.rule)
        info = self.client.publish(topic, alert.to_json(), qos=self.config.qos)
        try:
            info.wait_for_publish(timeout=5)
        except (RuntimeError, ValueError) as exc:  # paho: not queued / disconnected meanwhile
            raise VidwatchError(f"{where} did not take the alert: {exc}") from exc
        if not info.is_published():
            raise VidwatchError(f"{where} did not acknowledge the alert in 5 s")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
