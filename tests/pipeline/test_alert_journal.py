"""A sink that dies with an alert open: the next sink resumes it (one start, one end, same id) and
ends it with a reason when its camera sends nothing; the journal survives a torn last line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pipeline import sink as sink_module
from pipeline.alert_journal import AlertJournal
from pipeline.alerts import Alert
from pipeline.config import Config
from pipeline.sink import Sink
from tests.pipeline.stage_helpers import make_config

RULE = """  - {name: crowd, model: demo-anomaly, threshold: 1.5, clear_threshold: 1.0, min_duration_s: 0.0,
     cooldown_s: 0}"""


def _config(models_dir: Path, tmp: Path) -> Config:
    return make_config(models_dir, tmp, "  - {id: cam, source: x.mp4, models: [{model: demo-anomaly}]}", RULE)


def _feed(sink: Sink, scores: list[float], t0: float = 0.0) -> None:
    for i, score in enumerate(scores):
        sink.handle({"camera": "cam", "package": "demo-anomaly", "labels": ["anomaly"], "alert_label": "anomaly",
                     "scores": [score], "seq": i, "t_capture": time.time(), "t_stream": t0 + i * 0.4}, None)


def _killed(sink: Sink) -> None:
    """What SIGKILL leaves: no shutdown, no end records; only files already written."""
    sink.pull.close(linger=0)
    for lane in sink.delivery.lanes:
        lane.output.close()


def _records(tmp: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp / "alerts.jsonl").read_text().splitlines()]


def test_an_alert_open_at_a_kill_is_resumed_and_ended_once(models_dir: Path, tmp_path: Path) -> None:
    config = _config(models_dir, tmp_path)
    first = Sink(config, CollectorRegistry())
    _feed(first, [0.2, 2.0, 2.4])
    _killed(first)
    assert [r["state"] for r in _records(tmp_path)] == ["start"]
    second = Sink(_config(models_dir, tmp_path), CollectorRegistry())  # same state_dir and outputs
    _feed(second, [2.6, 2.2], t0=100.0)  # the same event goes on: no second start
    assert [r["state"] for r in _records(tmp_path)] == ["start"]
    _feed(second, [0.3], t0=110.0)  # and ends by its scores
    second.shutdown()
    records = _records(tmp_path)
    assert [r["state"] for r in records] == ["start", "end"]
    assert records[0]["id"] == records[1]["id"] and records[1]["score"] == 2.6 and records[1]["reason"] is None


def test_a_resumed_alert_without_scores_ends_with_a_reason(models_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(models_dir, tmp_path)
    first = Sink(config, CollectorRegistry())
    _feed(first, [2.0, 2.4])
    _killed(first)
    monkeypatch.setattr(sink_module, "RESUME_TIMEOUT_S", 0.2)
    second = Sink(_config(models_dir, tmp_path), CollectorRegistry())  # same state_dir and outputs
    time.sleep(0.3)
    second._maybe_expire_resumed()
    records = _records(tmp_path)
    assert [r["state"] for r in records] == ["start", "end"]
    assert records[1]["reason"].startswith("sink restarted; no scores")
    _feed(second, [2.5], t0=50.0)  # a later event on the camera is a new alert
    second.shutdown()
    records = _records(tmp_path)
    assert [r["state"] for r in records] == ["start", "end", "start", "end"]
    assert records[2]["id"] != records[0]["id"] and records[3]["reason"] == "sink stopped"


def test_the_journal_keeps_open_alerts_only_and_skips_a_torn_line(tmp_path: Path) -> None:
    def alert(alert_id: str, state: str) -> Alert:
        return Alert(id=alert_id, state=state, camera="cam", rule="r", kind="anomaly", model="m", label="x",
                     score=2.0, start=1.0, end=None if state == "start" else 2.0, snapshot=None)

    journal = AlertJournal(tmp_path)
    for record in (alert("a1", "start"), alert("a2", "start"), alert("a2", "end")):
        journal.record(record)
    journal._fh.close()  # killed: no compaction
    with journal.path.open("a") as fh:
        fh.write('{"id": "a3", "state": "st')  # a line cut by the crash is skipped
    again = AlertJournal(tmp_path)
    assert [a.id for a in again.open_alerts()] == ["a1"]
    assert len(again.path.read_text().splitlines()) == 1  # compacted at start-up
    again.record(alert("a1", "end"))
    again.close()
    assert AlertJournal(tmp_path).open_alerts() == [] and again.path.read_text() == ""
