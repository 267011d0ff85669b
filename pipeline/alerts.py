"""The alert record every output receives."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Alert:
    """One alert event. ``state`` is ``start`` when raised and ``end`` when it clears; both
    carry the same ``id``. Times are Unix seconds (wall clock)."""

    id: str
    state: str  # "start" | "end"
    camera: str
    rule: str
    kind: str  # the model's task: "action" | "anomaly"
    model: str
    label: str
    score: float  # peak score so far
    start: float
    end: float | None
    snapshot: str | None
    latency_s: float | None = None  # capture of the triggering frame -> decision
    clip: str | None = None  # MP4 from pre_s before start to post_s after end; set on the end record
    clip_error: str | None = None  # why there is no clip, when clips are on and it failed
    reason: str | None = None  # why an end record was written other than by the scores ("sink stopped"...)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def summary(self) -> str:
        span = f"{self.end - self.start:.1f}s" if self.end is not None else "ongoing"
        return (f"ALERT {self.state.upper():5s} camera={self.camera} rule={self.rule} label={self.label} "
                f"score={self.score:.2f} duration={span} snapshot={self.snapshot or '-'}"
                + (f" clip={self.clip}" if self.clip else ""))
