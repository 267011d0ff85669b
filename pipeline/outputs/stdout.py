"""Alerts as one human-readable line each on stdout."""

from __future__ import annotations

import sys
from typing import Literal

from pydantic import BaseModel, ConfigDict

from pipeline.alerts import Alert

OUTPUT_KEY = "stdout"


class StdoutOutputConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["stdout"] = "stdout"


class StdoutOutput:
    def __init__(self, config: StdoutOutputConfig) -> None:
        self.config = config

    def emit(self, alert: Alert) -> None:
        print(alert.summary(), file=sys.stdout, flush=True)

    def close(self) -> None:
        pass
