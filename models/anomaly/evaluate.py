"""Evaluate an anomaly package on labelled clips through ``pipeline.runner.score_frames``.

That is the live pipeline's code path (resize, trunk, runtime flow, window graph, assembly of
per-frame scores from the latest window covering each frame), so the figures hold in production.
``frame_auc`` pools every frame of every clip on raw scores: no per-clip normalization.
"""

from __future__ import annotations

import csv
import itertools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from models.anomaly.footage import FootageError, read_clip
from models.anomaly.gallery import error_gallery, plot_clip
from pipeline.modelpkg import ModelPackage
from pipeline.runner import OfflineScores, PackageRunner, score_frames

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


def score_clip(package: ModelPackage, clip: Path, runner: PackageRunner) -> OfflineScores:
    m = package.manifest
    frames = read_clip(clip, m.input.height, m.input.width)
    return score_frames(package, frames, stride=1, runner=runner)


def frame_heatmap(result: OfflineScores, i: int, window_frames: int) -> np.ndarray:
    """The heat map of the window frame ``i``'s score was read from: the latest window covering it
    (as ``score_frames`` assembles scores), or the last before it for forward-filled frames."""
    ends = result.window_end
    covering = np.flatnonzero((ends - window_frames + 1 <= i) & (i <= ends))
    k = int(covering[-1]) if len(covering) else int(np.searchsorted(ends, i, side="right")) - 1
    return result.heatmaps[max(k, 0)]


def evaluate_package(package: ModelPackage, data: Path, labels_path: Path, out: Path,
                     gallery_count: int = 6) -> dict[str, Any]:
    """Frame-level metrics of ``package`` on ``data/<clip>/`` frame folders; a plot per clip in ``out``
    and an error gallery (worst false alarms and misses with their heat maps) in ``out/gallery``."""
    labels = read_labels(labels_path)
    missing = [c for c in labels if not (data / c).is_dir()]
    if missing:
        raise FootageError(data, f"has no frame folder for labelled clip(s) {', '.join(missing)}")
    runner = PackageRunner([package])
    results: dict[str, OfflineScores] = {}
    scores: dict[str, np.ndarray] = {}
    started = time.perf_counter()
    for clip in sorted(labels):
        results[clip] = score_clip(package, data / clip, runner)
        scores[clip] = results[clip].frame_scores
        if len(scores[clip]) != len(labels[clip]):
            raise FootageError(data / clip, f"has {len(scores[clip])} frames but {labels_path.name} labels "
                                            f"{len(labels[clip])}")
    seconds = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    threshold = package.manifest.threshold or 1.0
    plots = [plot_clip(out / f"{clip}.png", clip, scores[clip], labels[clip], threshold) for clip in sorted(labels)]
    m = package.manifest
    gallery = error_gallery(
        out / "gallery", scores, labels, lambda c, i: frame_heatmap(results[c], i, m.window.frames),
        lambda c, i: next(itertools.islice(read_clip(data / c, m.input.height, m.input.width), i, None)),
        threshold, gallery_count) if results[next(iter(results))].heatmaps else {}
    return {**_metrics(scores, labels, threshold), "package": package.name,
            "fps_offline": round(sum(len(s) for s in scores.values()) / seconds, 1),
            "plots": str(out), "plot_files": [str(p) for p in plots], "gallery": gallery}


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
