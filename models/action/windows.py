"""Windows of T frames cut from a clip's per-frame arrays ``[F, ...]``.

Training draws one random window per clip (random start: the temporal jitter); evaluation takes
every window (stride 1) and averages their probabilities, which is what scoring a clip with
``pipeline.runner`` at stride 1 does. A clip shorter than a window is looped to fill it, as
``vidwatch eval`` does.
"""

from __future__ import annotations

import numpy as np

from models.action.video import loop_pad


def random_start(length: int, frames: int, rng: np.random.Generator) -> int:
    """A window start in a clip of ``length`` frames (after loop padding to ``frames``)."""
    return int(rng.integers(max(length, frames) - frames + 1))


def random_window(items: np.ndarray, frames: int, rng: np.random.Generator) -> np.ndarray:
    """``[T, ...]`` at a random start."""
    seq = loop_pad(np.asarray(items), frames)
    start = random_start(len(seq), frames, rng)
    return seq[start:start + frames]


def all_windows(items: np.ndarray, frames: int) -> np.ndarray:
    """``[W, T, ...]``: every window at stride 1."""
    seq = loop_pad(np.asarray(items), frames)
    return np.stack([seq[s:s + frames] for s in range(len(seq) - frames + 1)])
