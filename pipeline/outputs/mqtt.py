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
        self.client.connect(config.host, config.port)
        self.client.loop_start()

    def emit(self, alert: Alert) -> None:
        topic = self.config.topic.format(camera=alert.camera, rule=alert.rule)
        info = self.client.publish(topic, alert.to_json(), qos=self.config.qos)
        info.wait_for_publish(timeout=5)
        if not info.is_published():
            raise VidwatchError(f"MQTT broker {self.config.host}:{self.config.port} did not take the alert")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
