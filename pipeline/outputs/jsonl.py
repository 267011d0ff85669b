"""Alerts appended to a JSON-lines file, flushed and fsync'ed before the sink moves on, so an
alert that was reported is on disk."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from pipeline.alerts import Alert

OUTPUT_KEY = "jsonl"


class JsonlOutputConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["jsonl"] = "jsonl"
    path: Path = Path("var/alerts.jsonl")


class JsonlOutput:
    def __init__(self, config: JsonlOutputConfig) -> None:
        config.path.parent.mkdir(parents=True, exist_ok=True)
        self.path = config.path
        self._fh = config.path.open("a", encoding="utf-8")

    def emit(self, alert: Alert) -> None:
        self._fh.write(alert.to_json() + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()
