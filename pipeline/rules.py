"""Alert rules: threshold, minimum duration, hysteresis and per-camera cooldown.

A rule tracks each camera separately, on the cameras' own capture times, so the same scores
give the same alerts whatever the processing delay:

    idle --score >= threshold--> pending --held min_duration_s--> active (alert start)
    active --score < clear_threshold--> cooldown (alert end) --cooldown_s--> idle
    pending --score < threshold--> idle
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import Enum

from pipeline.config import RuleConfig


class Phase(Enum):
    IDLE = "idle"
    PENDING = "pending"
    ACTIVE = "active"
    COOLDOWN = "cooldown"


@dataclass(frozen=True)
class Transition:
    """What a score did to an alert: ``start`` or ``end``, with the alert's span and peak."""

    kind: str
    alert_id: str
    start: float
    end: float | None
    peak: float


@dataclass
class _CameraRule:
    phase: Phase = Phase.IDLE
    since: float = 0.0
    alert_id: str = ""
    peak: float = 0.0
    cooldown_until: float = 0.0


class Rule:
    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self.clear = config.clear_threshold if config.clear_threshold is not None else config.threshold
        self._cameras: dict[str, _CameraRule] = {}

    def applies_to(self, camera: str, model: str) -> bool:
        return model == self.config.model and (not self.config.cameras or camera in self.config.cameras)

    def phase(self, camera: str) -> Phase:
        return self._cameras.get(camera, _CameraRule()).phase

    def update(self, camera: str, score: float, t: float) -> Transition | None:
        """Feed one score observed at time ``t`` (seconds); return a start/end transition or None."""
        st = self._cameras.setdefault(camera, _CameraRule())
        cfg = self.config
        if st.phase is Phase.COOLDOWN and t >= st.cooldown_until:
            st.phase = Phase.IDLE
        if st.phase is Phase.IDLE and score >= cfg.threshold:
            st.phase, st.since, st.peak = Phase.PENDING, t, score
        if st.phase is Phase.PENDING:
            if score < cfg.threshold:
                st.phase = Phase.IDLE
                return None
            st.peak = max(st.peak, score)
            if t - st.since >= cfg.min_duration_s:
                st.phase, st.alert_id = Phase.ACTIVE, uuid.uuid4().hex[:12]
                return Transition("start", st.alert_id, st.since, None, st.peak)
            return None
        if st.phase is Phase.ACTIVE:
            st.peak = max(st.peak, score)
            if score < self.clear:
                st.phase, st.cooldown_until = Phase.COOLDOWN, t + cfg.cooldown_s
                return Transition("end", st.alert_id, st.since, t, st.peak)
        return None

    def alert_id(self, camera: str) -> str:
        """The id of the camera's active alert, or ""."""
        st = self._cameras.get(camera)
        return st.alert_id if st is not None and st.phase is Phase.ACTIVE else ""

    def resume(self, camera: str, alert_id: str, peak: float) -> None:
        """Continue an alert that was open when the sink stopped (pipeline.alert_journal): the next
        scores end it (or keep it going) as if the sink had never gone away."""
        st = self._cameras.setdefault(camera, _CameraRule())
        st.phase, st.alert_id, st.peak, st.since = Phase.ACTIVE, alert_id, peak, 0.0

    def forget(self, camera: str) -> None:
        """Drop the camera's state (its resumed alert was ended without scores)."""
        self._cameras.pop(camera, None)

    def close_all(self, t: float) -> list[tuple[str, Transition]]:
        """End every active alert (at shutdown), so each start has an end."""
        ended = []
        for camera, st in self._cameras.items():
            if st.phase is Phase.ACTIVE:
                st.phase = Phase.COOLDOWN
                ended.append((camera, Transition("end", st.alert_id, st.since, t, st.peak)))
        return ended
