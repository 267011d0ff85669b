"""Sample frames to a target rate by timestamp, never by counting frames (streams drop and
repeat frames, and files have variable frame rates)."""

from __future__ import annotations


class RateSampler:
    """Keeps a frame when its timestamp reaches the next slot of a ``fps`` grid."""

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self._next: float | None = None

    def keep(self, t: float) -> bool:
        if self._next is None or t + 1e-6 >= self._next:
            # Snap to the grid, skipping slots that were missed, so a stall does not cause a burst.
            base = t if self._next is None else self._next
            steps = max(1, int((t - base) / self.period) + 1)
            self._next = base + steps * self.period
            return True
        if t < self._next - 10 * self.period:
            self._next = t + self.period  # timestamps jumped backwards (a looped file, a reset stream)
            return True
        return False
