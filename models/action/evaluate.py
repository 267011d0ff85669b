"""Evaluate a model package on labelled clips through ``pipeline.runner.score_frames``.

That is the live pipeline's code path: the same sampler, resize, graphs and window assembly, so
the figures hold for production. A clip's score is the mean of its windows' probabilities
(stride 1); a clip shorter than one window is looped to fill it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from models.action.data import Clip, list_clips
from models.action.metrics import classification_metrics, plot_confusion
from models.action.run import write_predictions
from models.action.video import loop_pad, read_clip
from pipeline.modelpkg import ModelPackage
from pipeline.runner import PackageRunner, score_frames

logger = logging.getLogger(__name__)

EVAL_THREADS = 2


def clip_frames(package: ModelPackage, path: Path) -> np.ndarray:
    """A clip sampled at the package's fps and resized to its input, at least one window long."""
    m = package.manifest
    frames = read_clip(path, m.window.fps or 5.0, (m.input.width, m.input.height))
    return loop_pad(frames, m.window.frames)


def clip_probability(package: ModelPackage, frames: np.ndarray, runner: PackageRunner, tta: bool = False) -> np.ndarray:
    """``[K]``: mean window probability of the clip (and of its mirror image with ``tta``)."""
    views = [frames, frames[:, :, ::-1].copy()] if tta else [frames]
    scores = [score_frames(package, list(v), stride=1, runner=runner).window_scores.mean(axis=0) for v in views]
    return np.mean(scores, axis=0)


def evaluate_package(package: ModelPackage, data: Path, out: Path | None = None, tta: bool = False
                     ) -> dict[str, Any]:
    """Metrics of ``package`` on ``DATA/<label>/*`` (labels must be the package's); files into ``out``."""
    m = package.manifest
    clips = list_clips(data, tuple(m.labels))
    runner = PackageRunner([package], engine_options={"intra_op_threads": EVAL_THREADS})
    probs = np.stack([clip_probability(package, clip_frames(package, c.path), runner, tta)
                      for c in tqdm(clips, desc=f"eval {package.name}", unit="clip")])
    labels = np.array([c.label for c in clips])
    threshold = m.threshold if m.threshold is not None else 0.5
    metrics = classification_metrics(probs, labels, m.labels, m.alert_index, threshold)
    if out is not None:
        _write(out, clips, probs, metrics, m.labels)
    return metrics


def _write(out: Path, clips: list[Clip], probs: np.ndarray, metrics: dict[str, Any], labels: list[str]) -> None:
    import json

    out.mkdir(parents=True, exist_ok=True)
    write_predictions(out / "predictions.csv", clips, probs, labels)
    plot_confusion(metrics["confusion"], labels, out / "confusion.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
