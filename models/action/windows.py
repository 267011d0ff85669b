"""Windows of T frames cut from a clip's cached per-frame arrays ``[V, F, ...]``.

Training draws one random window per clip (random view, sampling phase and start: the temporal
jitter); evaluation takes every window of the clean view at phase 0 and averages their
probabilities, which is what scoring a clip with ``pipeline.runner`` at stride 1 does.
"""

from __future__ import annotations

import numpy as np

from models.action.config import ActionConfig
from models.action.video import loop_pad


def at_rate(clip: np.ndarray, view: int, phase: int, cfg: ActionConfig) -> np.ndarray:
    """One view's frames at ``cfg.fps`` (every ``jitter_phases``-th cached frame from ``phase``)."""
    return loop_pad(np.asarray(clip[view, phase::cfg.jitter_phases]), cfg.frames)


def random_window(clip: np.ndarray, cfg: ActionConfig, rng: np.random.Generator) -> np.ndarray:
    """``[T, ...]`` from a random view, phase and start."""
    phase = int(rng.integers(min(cfg.jitter_phases, clip.shape[1])))
    seq = at_rate(clip, int(rng.integers(clip.shape[0])), phase, cfg)
    start = int(rng.integers(len(seq) - cfg.frames + 1))
    return seq[start:start + cfg.frames]


def all_windows(clip: np.ndarray, cfg: ActionConfig, view: int = 0) -> np.ndarray:
    """``[W, T, ...]``: every window (stride 1) of ``view`` at phase 0."""
    seq = at_rate(clip, view, 0, cfg)
    return np.stack([seq[s:s + cfg.frames] for s in range(len(seq) - cfg.frames + 1)])
