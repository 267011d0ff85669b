"""Every alert to every output, in order per output; a failing output keeps its alerts queued.

Each output has its own queue. A new alert joins every queue, and each queue is sent oldest
first unless its output is backing off: when a delivery fails (disk full, broker away, webhook
answering 500 or refusing connections) the output is retried with exponential backoff, so alerts
reach each output in the order they were raised and a slow or dead receiver costs the sink at
most one attempt per backoff period.

The queues are durable when a spool folder is given (the sink uses ``<state_dir>/outbox``): each
output's queue is mirrored in ``<key>.jsonl`` there, written (fsync + rename) *before* the
alert is offered and again once alerts are taken, and read back at start-up. So an alert queued
when the sink stops, crashes or is killed is delivered by the next sink that starts with the
same config. Delivery is at-least-once: an output whose answer was lost, or that took an alert
just before a crash, may see it again (``Alert.id`` + ``state`` identify it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Counter, Gauge

from pipeline.alerts import Alert
from pipeline.outputs import Output

logger = logging.getLogger(__name__)

RETRY_BACKOFF_S = (1.0, 30.0)  # first retry after 1 s, doubling up to 30 s between tries


def output_key(kind: str, settings_json: str) -> str:
    """A stable name for an output's spool file: its type and a digest of its settings."""
    return f"{kind}-{hashlib.sha256(settings_json.encode()).hexdigest()[:12]}"


@dataclass
class _Lane:
    name: str
    key: str
    output: Output
    queue: deque[Alert] = field(default_factory=deque)
    failures: int = 0
    next_try: float = 0.0


class Delivery:
    """Per-output queues with backoff. ``outputs`` are (type, spool key, output); ``errors``
    counts failed attempts by output type, ``pending`` the (output, alert) deliveries still to make."""

    def __init__(self, outputs: Sequence[tuple[str, str, Output]], errors: Counter, pending: Gauge,
                 backoff: tuple[float, float] = RETRY_BACKOFF_S, spool_dir: Path | None = None) -> None:
        self.lanes = [_Lane(name, key, output) for name, key, output in outputs]
        self.errors, self.pending, self.backoff, self.spool_dir = errors, pending, backoff, spool_dir
        for lane in self.lanes:  # the series exist (at 0) before anything fails
            errors.labels(lane.name)
        if spool_dir is not None:
            self._load_spool(spool_dir)
        self._update_pending()

    def deliver(self, alert: Alert) -> None:
        for lane in self.lanes:
            lane.queue.append(alert)
            self._save(lane)  # on disk before anything is tried: a crash now loses nothing
        self.retry_due()

    def retry_due(self, now: float | None = None) -> None:
        """Send the queue of every output that is not backing off, oldest alert first."""
        now = time.monotonic() if now is None else now
        for lane in self.lanes:
            if lane.queue and now >= lane.next_try:
                self._drain(lane)
        self._update_pending()

    def flush(self) -> None:
        """One last try of every queue, backoff ignored (shutdown); what is left stays spooled."""
        for lane in self.lanes:
            self._drain(lane)
        self._update_pending()
        for lane in self.lanes:
            if lane.queue:
                kept = f"kept in {self.spool_dir} for the next start" if self.spool_dir else "LOST (no spool)"
                logger.error("output %s: %d alert(s) not delivered at shutdown, %s: %s", lane.name, len(lane.queue),
                             kept, ", ".join(f"{a.id}:{a.state}" for a in lane.queue))

    def queued(self) -> int:
        return sum(len(lane.queue) for lane in self.lanes)

    def _drain(self, lane: _Lane) -> None:
        taken = 0
        while lane.queue and self._try(lane, lane.queue[0]):
            lane.queue.popleft()
            taken += 1
        if taken:
            self._save(lane)

    def _try(self, lane: _Lane, alert: Alert) -> bool:
        try:
            lane.output.emit(alert)
        except Exception as exc:  # any output failure: keep the alert, back off, never lose it
            self.errors.labels(lane.name).inc()
            delay = min(self.backoff[0] * 2 ** lane.failures, self.backoff[1])
            lane.failures += 1
            lane.next_try = time.monotonic() + delay
            logger.error("output %s failed (%s); alert %s:%s queued, next try in %.1f s", lane.name, exc,
                         alert.id, alert.state, delay)
            return False
        if lane.failures:
            logger.info("output %s delivers again after %d failed attempt(s)", lane.name, lane.failures)
        lane.failures = 0
        return True

    def _update_pending(self) -> None:
        self.pending.set(self.queued())

    # -- the spool: one JSON-lines file per output mirroring its queue ------------------------
    def _save(self, lane: _Lane) -> None:
        if self.spool_dir is None:
            return
        path = self.spool_dir / f"{lane.key}.jsonl"
        try:
            if not lane.queue:
                path.unlink(missing_ok=True)
                return
            tmp = path.with_suffix(".tmp")
            with tmp.open("w", encoding="utf-8") as fh:
                fh.writelines(alert.to_json() + "\n" for alert in lane.queue)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:  # a full disk: the queue still holds the alert in memory
            logger.error("output %s: cannot write its queue to %s (%s); it is kept in memory only",
                         lane.name, path, exc)

    def _load_spool(self, spool_dir: Path) -> None:
        spool_dir.mkdir(parents=True, exist_ok=True)
        keys = {lane.key for lane in self.lanes}
        for lane in self.lanes:
            path = spool_dir / f"{lane.key}.jsonl"
            if path.exists():
                lane.queue.extend(_read_alerts(path))
                logger.warning("output %s: %d alert(s) queued by a previous run will be delivered first",
                               lane.name, len(lane.queue))
        for path in sorted(spool_dir.glob("*.jsonl")):
            if path.stem not in keys:
                logger.warning("%s holds alerts for an output that is no longer configured; they are not sent",
                               path)


def _read_alerts(path: Path) -> list[Alert]:
    alerts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            alerts.append(Alert(**json.loads(line)))
        except (ValueError, TypeError) as exc:  # a torn or edited line: keep the others
            logger.error("%s line %d is not an alert (%s); skipped", path, number, exc)
    return alerts
