"""Every alert to every output, in order per output; a failing output keeps its alerts queued.

Each output has its own queue. An alert goes straight out when the output's queue is empty;
when a delivery fails (disk full, broker away, webhook answering 500 or refusing connections)
the alert is queued and the output is retried with exponential backoff, oldest alert first, so
alerts reach each output in the order they were raised and a slow or dead receiver costs the
sink at most one attempt per backoff period. Nothing is dropped while the sink runs; at
shutdown every queue gets one last try. Delivery is at-least-once: an output whose answer was
lost may see an alert again (``Alert.id`` + ``state`` identify it).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from pipeline.alerts import Alert
from pipeline.outputs import Output

logger = logging.getLogger(__name__)

RETRY_BACKOFF_S = (1.0, 30.0)  # first retry after 1 s, doubling up to 30 s between tries


@dataclass
class _Lane:
    name: str
    output: Output
    queue: deque[Alert] = field(default_factory=deque)
    failures: int = 0
    next_try: float = 0.0


class Delivery:
    """Per-output queues with backoff. ``errors`` counts failed attempts by output type,
    ``pending`` is the number of (output, alert) deliveries still to make."""

    def __init__(self, outputs: list[tuple[str, Output]], errors: Counter, pending: Gauge,
                 backoff: tuple[float, float] = RETRY_BACKOFF_S) -> None:
        self.lanes = [_Lane(name, output) for name, output in outputs]
        self.errors, self.pending, self.backoff = errors, pending, backoff
        for lane in self.lanes:  # the series exist (at 0) before anything fails
            errors.labels(lane.name)

    def deliver(self, alert: Alert) -> None:
        for lane in self.lanes:
            if lane.queue:  # keep the order: behind the alerts already waiting for this output
                lane.queue.append(alert)
            elif not self._try(lane, alert):
                lane.queue.append(alert)
        self._update_pending()

    def retry_due(self, now: float | None = None) -> None:
        """Retry every output whose backoff has passed, oldest alert first."""
        now = time.monotonic() if now is None else now
        for lane in self.lanes:
            if lane.queue and now >= lane.next_try:
                self._drain(lane)
        self._update_pending()

    def flush(self) -> None:
        """One last try of every queue, backoff ignored (shutdown)."""
        for lane in self.lanes:
            self._drain(lane)
        self._update_pending()
        for lane in self.lanes:
            if lane.queue:
                logger.error("output %s: %d alert(s) could not be delivered before shutdown: %s", lane.name,
                             len(lane.queue), ", ".join(f"{a.id}:{a.state}" for a in lane.queue))

    def queued(self) -> int:
        return sum(len(lane.queue) for lane in self.lanes)

    def _drain(self, lane: _Lane) -> None:
        while lane.queue:
            if not self._try(lane, lane.queue[0]):
                return
            lane.queue.popleft()

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
