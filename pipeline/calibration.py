"""Fitters: turn features collected from normal footage into a package's ``state`` arrays.

A fitter runs in the inference stage when a camera calibrates live, and in ``models/`` when a
package is fitted offline, so it is numpy only (no torch). It receives the per-frame sources
named in the manifest's ``calibration.collect``, each stacked over the collected frames as
``[F, ...]``, and returns the arrays the graphs read as ``state.<key>``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pipeline.registry import Registry

Fitter = Callable[[Mapping[str, np.ndarray], int, Mapping[str, Any]], dict[str, np.ndarray]]

FITTERS: Registry[Fitter] = Registry("fitter")


def sliding_window_means(frames: np.ndarray, length: int) -> np.ndarray:
    """Means of every run of ``length`` consecutive rows: ``[F, ...] -> [F - length + 1, ...]``."""
    if frames.shape[0] < length:
        raise ValueError(f"need at least {length} frames to fit, got {frames.shape[0]}")
    csum = np.cumsum(frames.astype(np.float64), axis=0)
    csum = np.concatenate([np.zeros_like(csum[:1]), csum], axis=0)
    return ((csum[length:] - csum[:-length]) / length).astype(np.float32)


@FITTERS.register("window_gaussian")
def fit_window_gaussian(collected: Mapping[str, np.ndarray], window_frames: int,
                        params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per-location diagonal Gaussian of window-mean feature maps ``[C, h, w]``.

    The score of a window is the largest per-location mean squared z-score; ``scale`` maps the
    ``quantile`` of calibration scores to 1.0, so a score above 1 is "less normal than
    ``quantile`` of what the camera showed while calibrating".
    """
    source = str(params.get("source", next(iter(collected))))
    quantile = float(params.get("quantile", 0.995))
    var_floor = float(params.get("var_floor", 1e-2))
    windows = sliding_window_means(collected[source], window_frames)  # [W, C, h, w]
    mean = windows.mean(axis=0)
    inv_std = 1.0 / np.sqrt(windows.var(axis=0) + var_floor)
    z2 = (((windows - mean) * inv_std) ** 2).mean(axis=1)  # [W, h, w]
    scores = z2.reshape(len(z2), -1).max(axis=1)
    threshold = max(float(np.quantile(scores, quantile)), 1e-6)
    return {"mean": mean.astype(np.float32), "inv_std": inv_std.astype(np.float32),
            "scale": np.array([1.0 / threshold], dtype=np.float32)}
