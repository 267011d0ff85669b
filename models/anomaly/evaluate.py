"""Evaluate an anomaly package on labelled clips through ``pipeline.runner.score_frames``.

That is the live pipeline's code path (resize, trunk, runtime flow, window graph, assembly of
per-frame scores from the latest window covering each frame), so the figures hold in production.
``frame_auc`` pools every frame of every clip on raw scores: no per-clip normalization.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from models.anomaly.footage import FootageError, read_clip
from pipeline.modelpkg import ModelPackage
from pipeline.runner import PackageRunner, score_frames

logger = logging.getLogger(__name__)


def read_labels(path: Path) -> dict[str, np.ndarray]:
    """``clip,frame,label`` rows -> per-clip 0/1 arrays indexed by frame."""
    if not path.is_file():
        raise FootageError(path.parent, f"labels file {path.name} does not exist")
    rows: dict[str, dict[int, int]] = {}
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            rows.setdefault(row["clip"], {})[int(row["frame"])] = int(row["label"])
    return {clip: np.array([frames[i] for i in sorted(frames)], np.int64) for clip, frames in rows.items()}


def score_clip(package: ModelPackage, clip: Path, runner: PackageRunner) -> np.ndarray:
    m = package.manifest
    frames = read_clip(clip, m.input.height, m.input.width)
    return score_frames(package, frames, stride=1, runner=runner).frame_scores


def evaluate_package(package: ModelPackage, data: Path, labels_path: Path, out: Path) -> dict[str, Any]:
    """Frame-level metrics of ``package`` on ``data/<clip>/`` frame folders; a plot per clip in ``out``."""
    labels = read_labels(labels_path)
    missing = [c for c in labels if not (data / c).is_dir()]
    if missing:
        raise FootageError(data, f"has no frame folder for labelled clip(s) {', '.join(missing)}")
    runner = PackageRunner([package])
    scores: dict[str, np.ndarray] = {}
    started = time.perf_counter()
    for clip in sorted(labels):
        scores[clip] = score_clip(package, data / clip, runner)
        if len(scores[clip]) != len(labels[clip]):
            raise FootageError(data / clip, f"has {len(scores[clip])} frames but {labels_path.name} labels "
                                            f"{len(labels[clip])}")
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    plots = [_plot(out / f"{clip}.png", clip, scores[clip], labels[clip], package.manifest.threshold)
             for clip in sorted(labels)]
    return {**_metrics(scores, labels, package.manifest.threshold or 1.0), "package": package.name,
            "fps_offline": round(sum(len(s) for s in scores.values()) / seconds, 1),
            "plots": str(out), "plot_files": [str(p) for p in plots]}


def _metrics(scores: dict[str, np.ndarray], labels: dict[str, np.ndarray], threshold: float) -> dict[str, Any]:
    y = np.concatenate([labels[c] for c in sorted(labels)])
    s = np.concatenate([scores[c] for c in sorted(labels)])
    alarms = s > threshold
    per_clip = {c: round(float(roc_auc_score(labels[c], scores[c])), 4) for c in sorted(labels)
                if 0 < labels[c].sum() < len(labels[c])}
    return {
        "frame_auc": round(float(roc_auc_score(y, s)), 4) if 0 < y.sum() < len(y) else None,
        "n_frames": int(len(y)), "n_anomalous": int(y.sum()), "n_clips": len(labels),
        "per_clip_auc": per_clip,
        "at_threshold": {"threshold": threshold, "recall": round(float(alarms[y == 1].mean()), 4) if y.any() else None,
                         "false_alarm_rate": round(float(alarms[y == 0].mean()), 4) if (y == 0).any() else None},
    }


def _plot(path: Path, clip: str, scores: np.ndarray, labels: np.ndarray, threshold: float | None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.6))
    frames = np.arange(len(scores))
    ax.fill_between(frames, 0, labels * max(float(scores.max()), 1.0) * 1.05, step="mid", color="tab:red",
                    alpha=0.15, label="ground truth anomalous")
    ax.plot(frames, scores, color="tab:blue", lw=1.2, label="anomaly score")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=0.8, label="threshold")
    ax.set(title=clip, xlabel="frame", ylabel="score", xlim=(0, len(scores) - 1))
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
