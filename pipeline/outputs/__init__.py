"""Alert outputs by ``type``: each plugin module holds its key, its config class and the output.

The config union below is built from the plugins, so one ``type:`` selects both the schema and
the class (``outputs: [{type: jsonl, path: ...}]``).
"""

from __future__ import annotations

from typing import Protocol

from pipeline.alerts import Alert
from pipeline.outputs.jsonl import JsonlOutput, JsonlOutputConfig
from pipeline.outputs.mqtt import MqttOutput, MqttOutputConfig
from pipeline.outputs.stdout import StdoutOutput, StdoutOutputConfig
from pipeline.outputs.webhook import WebhookOutput, WebhookOutputConfig
from pipeline.registry import Registry


class Output(Protocol):
    def emit(self, alert: Alert) -> None:
        """Deliver one alert; raise on failure (the sink retries and counts it)."""
        ...

    def close(self) -> None: ...


OutputConfig = JsonlOutputConfig | StdoutOutputConfig | MqttOutputConfig | WebhookOutputConfig

OUTPUTS: Registry[type] = Registry("output")
OUTPUTS.register("jsonl")(JsonlOutput)
OUTPUTS.register("stdout")(StdoutOutput)
OUTPUTS.register("mqtt")(MqttOutput)
OUTPUTS.register("webhook")(WebhookOutput)


def create_output(config: OutputConfig) -> Output:
    output: Output = OUTPUTS.get(config.type)(config)
    return output
