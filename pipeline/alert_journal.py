"""Which alerts are open, on disk, so a sink that was killed picks up where it was.

``<state_dir>/_sink/open-alerts.jsonl`` holds alert records (JSON lines, appended and fsync'ed
before any output is offered the record): a ``start`` opens an alert, its ``end`` closes it.
A restarted sink reads back the alerts with a start and no end and resumes them (the same event
keeps its id and gets exactly one end, never a second start). Delivering records to outputs,
including again after a crash, is ``pipeline.delivery``'s job (its outbox); this file only says
what is open. It is compacted (rewritten with the open alerts only) at start-up, at a clean
shutdown and every ``COMPACT_EVERY`` appended lines, so it stays small.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, fields
from pathlib import Path

from pipeline.alerts import Alert

logger = logging.getLogger(__name__)

JOURNAL_NAME = Path("_sink") / "open-alerts.jsonl"
COMPACT_EVERY = 1000
_ALERT_FIELDS = {f.name for f in fields(Alert)}


class AlertJournal:
    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / JOURNAL_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._open = self._read()
        self._compact()
        self._fh = self.path.open("a", encoding="utf-8")
        self._appended = 0

    def open_alerts(self) -> list[Alert]:
        """The start records of the alerts that have no end yet."""
        return list(self._open.values())

    def record(self, alert: Alert) -> None:
        """Make ``alert`` (a start or an end) durable; call before outputs are offered it."""
        if alert.state == "start":
            self._open[alert.id] = alert
        else:
            self._open.pop(alert.id, None)
        try:
            self._fh.write(json.dumps(asdict(alert), sort_keys=True) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())
        except OSError as exc:  # a full disk: outputs still get the alert; a crash now may leave it open
            logger.error("sink: cannot journal alert %s:%s to %s (%s)", alert.id, alert.state, self.path, exc)
        self._appended += 1
        if self._appended >= COMPACT_EVERY:
            self._fh.close()
            self._compact()
            self._fh = self.path.open("a", encoding="utf-8")
            self._appended = 0

    def close(self) -> None:
        self._fh.close()
        self._compact()

    def _compact(self) -> None:
        """Rewrite the journal atomically with only the open alerts."""
        try:
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.writelines(json.dumps(asdict(a), sort_keys=True) + "\n" for a in self._open.values())
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            logger.error("sink: cannot compact %s (%s); it keeps growing until this is fixed", self.path, exc)

    def _read(self) -> dict[str, Alert]:
        opened: dict[str, Alert] = {}
        if not self.path.exists():
            return opened
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                alert = Alert(**{k: v for k, v in json.loads(line).items() if k in _ALERT_FIELDS})
            except (ValueError, TypeError) as exc:  # a line torn by the crash: skip it
                logger.warning("sink: %s line %d is not an alert record (%s); skipped", self.path, number, exc)
                continue
            if alert.state == "start":
                opened[alert.id] = alert
            else:
                opened.pop(alert.id, None)
        return opened
