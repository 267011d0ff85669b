"""A training run folder: config, split, logs, checkpoints, curves, confusion matrix, metrics.

    RUN/config.json  split.json  train.log  last.pt  best.pt  history.json
        curves.png  confusion.png  metrics.json  predictions.csv
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.action.cache import DEFAULT_CACHE, cached_frames
from models.action.config import ActionConfig
from models.action.data import Clip, class_balance, list_clips, read_split, stratified_split, write_split
from models.action.metrics import classification_metrics, plot_confusion, plot_curves
from models.action.model import ActionModel, build_model
from models.action.train import Frames, Progress, checkpoint_state, clip_probs, fit, save

logger = logging.getLogger(__name__)


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("models").addHandler(handler)
    logging.getLogger("models").setLevel(logging.INFO)
    return handler


def _split(out: Path, clips: list[Clip], cfg: ActionConfig, resuming: bool) -> dict[str, list[int]]:
    path = out / "split.json"
    if resuming and path.exists():
        return read_split(path, clips)
    split = stratified_split([c.label for c in clips], cfg.val_fraction, cfg.test_fraction, cfg.seed)
    write_split(path, clips, split)
    return split


def train_run(data: Path, out: Path, cfg: ActionConfig, resume: Path | None = None,
              cache_dir: Path = DEFAULT_CACHE) -> dict[str, Any]:
    """Train on ``data`` into the run folder ``out``; returns the test-split metrics (may be empty)."""
    out.mkdir(parents=True, exist_ok=True)
    ckpt = torch.load(resume, map_location="cpu", weights_only=False) if resume else None
    if ckpt is not None:
        cfg = ActionConfig.model_validate(ckpt["config"])  # a resumed run keeps its own config
    handler = _log_to(out / "train.log")
    try:
        start = time.time()
        (out / "config.json").write_text(cfg.model_dump_json(indent=1))
        clips = list_clips(data, cfg.labels)
        logger.info("%d clips, per class %s", len(clips), class_balance(clips, cfg.labels))
        split = _split(out, clips, cfg, ckpt is not None)
        labels = np.array([c.label for c in clips])
        model = build_model(cfg)
        frames = cached_frames(clips, cfg, cache_dir)
        progress = fit(model, frames, [c.name for c in clips], labels, {"train": split["train"], "val": split["val"]},
                       cfg, checkpoint=lambda p, m, o, r: save(out / "last.pt", checkpoint_state(p, m, o, r, cfg)),
                       resume=ckpt)
        save(out / "best.pt", {"config": cfg.model_dump(mode="json"), "model": model.state_dict()})
        metrics = _report(out, model, cfg, clips, labels, split, progress, frames)
        metrics["train_seconds"] = time.time() - start
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
        logger.info("run finished in %.0f s: %s", metrics["train_seconds"], out)
        return metrics
    finally:
        logging.getLogger("models").removeHandler(handler)
        handler.close()


def _report(out: Path, model: ActionModel, cfg: ActionConfig, clips: list[Clip], labels: np.ndarray,
            split: dict[str, list[int]], progress: Progress, frames: Frames) -> dict[str, Any]:
    (out / "history.json").write_text(json.dumps(progress.history, indent=1))
    plot_curves(progress.history, out / "curves.png")
    test = split["test"]
    if not test:
        return {"n_train": len(split["train"]), "note": "no test split (trained on every clip)"}
    probs = clip_probs(model, [frames[i] for i in test], cfg)
    metrics = classification_metrics(probs, labels[test], cfg.labels, cfg.alert_index)
    plot_confusion(metrics["confusion"], cfg.labels, out / "confusion.png")
    write_predictions(out / "predictions.csv", [clips[i] for i in test], probs, cfg.labels)
    return {"test": metrics, "n_train": len(split["train"]), "n_val": len(split["val"])}


def write_predictions(path: Path, clips: list[Clip], probs: np.ndarray, labels: tuple[str, ...] | list[str]) -> Path:
    """One row per clip: name, true label, predicted label, probability of every label."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["clip", "label", "predicted", *[f"p_{n}" for n in labels]])
        for clip, p in zip(clips, probs, strict=True):
            writer.writerow([clip.name, labels[clip.label], labels[int(p.argmax())], *[f"{v:.4f}" for v in p]])
    return path
