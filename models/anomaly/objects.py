"""Prototype, not in the runtime: object-level evidence from background subtraction, measured under
the nested CV as one more variant axis (models/anomaly/README.md, round 3, object-level evidence).

    .venv/bin/python -m models.anomaly.objects --normal ../shared/data/ucsd_ped2/train \
        --data ../shared/data/ucsd_ped2/test --labels ../shared/data/ucsd_ped2/test/labels.csv

Per frame: OpenCV MOG2 foreground (warmed up on the last ``WARMUP`` frames of normal footage, as a
camera's calibration footage would), opened 3x3, connected components of ≥ ``MIN_AREA`` px. Per
object: its foot row (bottom of its box, in 16-px buckets: depth under a ground-plane camera), log
height, log aspect (w/h) and speed per body height (peak flow-cell speed under its box / height).
Each is a z-score against the statistics of normal objects with their foot in the same row bucket
(two-sided for height and aspect, more speed only); an object scores its largest z; a frame its
largest object (0 with none), scaled so 1.0 = the 0.995 quantile of held-out normal frames. The
variant's frame score is then ``score + object_weight * object score`` (windowed like the score).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from models.anomaly.cache import DEFAULT_CACHE, FeatureCache
from models.anomaly.fit import AnomalyConfig

MIN_AREA = 20  # px at 360x240
WARMUP = 200  # normal frames the background model sees before a clip
BUCKET = 16  # px of foot row per statistics bucket (the cell grid's rows)
MIN_SAMPLES = 20  # a row bucket with fewer normal objects uses the statistics of all rows
WEIGHTS = (0.0, 0.5, 1.0)
_KERNEL = np.ones((3, 3), np.uint8)


def _subtractor() -> cv2.BackgroundSubtractorMOG2:
    return cv2.createBackgroundSubtractorMOG2(history=WARMUP, varThreshold=16, detectShadows=False)


def clip_objects(frames: Sequence[np.ndarray], flow: np.ndarray, warmup: Iterable[np.ndarray]) -> list[np.ndarray]:
    """Per frame ``[n, 4]`` objects: foot bucket, log height, log aspect, speed per height."""
    bg = _subtractor()
    for frame in warmup:
        bg.apply(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
    out = []
    for frame, cells in zip(frames, flow, strict=True):
        mask = bg.apply(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _KERNEL)
        n, _, stats, _ = cv2.connectedComponentsWithStats((mask > 0).astype(np.uint8), connectivity=8)
        rows = []
        for x, y, w, h, area in stats[1:n]:
            if area < MIN_AREA:
                continue
            speed = float(cells[2, y // 16:(y + h - 1) // 16 + 1, x // 16:(x + w - 1) // 16 + 1].max())
            rows.append(((y + h - 1) // BUCKET, np.log(h), np.log(w / h), speed / h))
        out.append(np.array(rows, np.float64).reshape(-1, 4))
    return out


class ObjectModel:
    """Per foot-row-bucket mean and std of the three object features of normal footage."""

    def __init__(self, objects: Sequence[np.ndarray], buckets: int) -> None:
        every = np.concatenate(objects)
        self.mean = np.tile(every[:, 1:].mean(0), (buckets, 1))
        self.std = np.tile(every[:, 1:].std(0) + 1e-3, (buckets, 1))
        for b in range(buckets):
            rows = every[every[:, 0] == b, 1:]
            if len(rows) >= MIN_SAMPLES:
                self.mean[b], self.std[b] = rows.mean(0), rows.std(0) + 1e-3
        self.scale = 1.0

    def frame_scores(self, objects: Sequence[np.ndarray]) -> np.ndarray:
        out = np.zeros(len(objects), np.float32)
        for i, obj in enumerate(objects):
            if len(obj):
                b = np.minimum(obj[:, 0].astype(int), len(self.mean) - 1)
                z = (obj[:, 1:] - self.mean[b]) / self.std[b]
                out[i] = max(np.abs(z[:, 0]).max(), np.abs(z[:, 1]).max(), z[:, 2].max(), 0.0) / self.scale
        return out


def _objects_of(cache: FeatureCache, clip: Path, spec: dict[str, object], warmup: list[np.ndarray]) -> list[np.ndarray]:
    return clip_objects(cache.frames(clip), cache.flow(clip, spec), warmup)


def run(normal: Path, data: Path, labels_path: Path, out: Path, cache_dir: Path = DEFAULT_CACHE) -> dict[str, object]:
    from models.anomaly.cv import family, live_frame_scores, nested_cv, score_variants, summary, with_flow
    from models.anomaly.evaluate import read_labels
    from models.anomaly.footage import find_clips
    from models.build import trunk_path

    config = AnomalyConfig()
    cache = FeatureCache(cache_dir, trunk_path(Path("build/models"), config.height, config.width))
    spec = config.flow_spec
    clips = find_clips(normal)
    normal_frames = [cache.frames(c) for c in clips]
    fit_clips, held_clips = range(len(clips) - 4), range(len(clips) - 4, len(clips))
    # each normal clip's background warms up on the clip before it; test clips on the last normal clip
    normal_objects = [clip_objects(normal_frames[i], cache.flow(clips[i], spec), normal_frames[i - 1][-WARMUP:])
                      for i in range(len(clips))]
    buckets = -(-config.height // BUCKET)
    model = ObjectModel([o for i in fit_clips for o in normal_objects[i]], buckets)
    held = np.concatenate([model.frame_scores(normal_objects[i]) for i in held_clips])
    model.scale = max(float(np.quantile(held, 0.995)), 1e-6)
    labels = read_labels(labels_path)
    test = {c: data / c for c in sorted(labels)}
    warm = normal_frames[-1][-WARMUP:]
    started = time.process_time()
    test_objects = {c: _objects_of(cache, p, spec, warm) for c, p in test.items()}
    frames_done = sum(len(o) for o in test_objects.values())
    object_ms = 1000 * (time.process_time() - started) / frames_done  # MOG2 + components (+ frame decode)
    obj = {c: model.frame_scores(o) for c, o in test_objects.items()}
    base = score_variants(cache, clips, test, with_flow(family("perspective"), first=config.flow_first))
    names, scores = [], []
    for w in WEIGHTS:
        for r in base:
            names.append(f"{r.variant.name}-obj{w:g}")
            scores.append({c: r.scores[c] + w * live_frame_scores(obj[c], r.variant.window) for c in labels})
    cv = nested_cv(scores, labels)
    for fold in cv["folds"]:
        fold["variant"] = names[fold["variant"]]
    objects_only = summary(obj, labels)
    report = {"protocol": "nested leave-one-clip-out within the perspective family x object weight "
                          f"{WEIGHTS} ({len(names)} variants), shipped flow",
              "nested_cv": {k: v for k, v in cv.items() if k != "oof_scores"},
              "object_score_alone": objects_only, "object_ms_per_frame_incl_decode": round(object_ms, 2)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "objects.json").write_text(json.dumps(report, indent=1))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--normal", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("runs/anomaly-eval/objects"))
    args = parser.parse_args()
    report = run(args.normal, args.data, args.labels, args.out)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
