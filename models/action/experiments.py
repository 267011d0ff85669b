"""k-fold cross-validation of action-model configurations (the comparison tables).

    python -m models.action.experiments --data DIR --out results.json temporal=mean,tconv unfreeze=0,12

Each fold trains on the other folds (with a stratified validation part carved from them for early
stopping) and is scored on its own clips, which no step of training has seen. Stage-1 features
depend only on the clips and the frozen ImageNet stream, so they are computed once for all folds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.action.cache import cached_frames
from models.action.config import ActionConfig
from models.action.data import list_clips, stratified_folds, stratified_split
from models.action.metrics import classification_metrics, mean_std
from models.action.model import build_model
from models.action.train import Frames, Items, clip_probs, fit, stage1_key, view_features

logger = logging.getLogger(__name__)


def fold_split(labels: np.ndarray, test: list[int], cfg: ActionConfig, fold: int) -> dict[str, list[int]]:
    rest = sorted(set(range(len(labels))) - set(test))
    # validation is carved from the training folds only; the test fold stays unseen
    inner = stratified_split(labels[rest].tolist(), cfg.val_fraction, 0.0, cfg.seed + fold)
    return {"train": [rest[i] for i in inner["train"]], "val": [rest[i] for i in inner["val"]], "test": test}


def best_epochs(history: list[dict[str, float]]) -> dict[int, int]:
    """Epochs each stage needed to reach its lowest validation loss (what a run on all clips uses)."""
    out = {}
    for stage in sorted({int(h["stage"]) for h in history}):
        rows = [h for h in history if h["stage"] == stage and "val_loss" in h]
        if rows:
            out[stage] = int(min(rows, key=lambda h: h["val_loss"])["epoch"]) + 1
    return out


def cross_validate(cfg: ActionConfig, frames: Frames, names: list[str], labels: np.ndarray, k: int = 5,
                   features: Items | None = None, only: list[int] | None = None) -> dict[str, Any]:
    """Per-fold test metrics and their mean ± std for ``cfg`` (folds ``only``, default all)."""
    folds = stratified_folds(labels.tolist(), k, cfg.seed)
    features = features if features is not None else view_features(build_model(cfg), frames, names, cfg)
    rows, start = [], time.time()
    for f, test in enumerate(folds):
        if only is not None and f not in only:
            continue
        split = fold_split(labels, test, cfg, f)
        model = build_model(cfg)
        progress = fit(model, frames, names, labels, {"train": split["train"], "val": split["val"]}, cfg,
                       features=features)
        probs = clip_probs(model, [frames[i] for i in test], cfg)
        row = classification_metrics(probs, labels[test], cfg.labels, cfg.alert_index)
        row["fold"], row["best_epochs"] = f, best_epochs(progress.history)
        rows.append(row)
        logger.info("fold %d: acc %.3f auc %.3f", f, row["accuracy"], row["auc"])
    return {"folds": rows, "summary": mean_std(rows), "seconds": time.time() - start}


def merge_folds(previous: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """One result from runs of different folds (``--only``): new folds replace old ones of the same index.

    The summary is recomputed over all folds held; the seconds add up.
    """
    if previous is None:
        return new
    rows = {r["fold"]: r for r in previous["folds"]}
    rows.update({r["fold"]: r for r in new["folds"]})
    merged = [rows[f] for f in sorted(rows)]
    return {"folds": merged, "summary": mean_std(merged), "seconds": previous["seconds"] + new["seconds"]}


def _stage1_features(folder: Path, key: tuple[Any, ...], frames: Frames, names: list[str],
                     cfg: ActionConfig) -> Items:
    """Stage-1 features of every clip, kept beside the results so a rerun skips the minutes they take."""
    digest = hashlib.sha1(repr((key, names)).encode()).hexdigest()[:16]
    path = folder / f"stage1-{digest}.npz"
    if path.exists():
        with np.load(path) as data:
            return [data[f"c{i}"] for i in range(len(names))]
    items = view_features(build_model(cfg), frames, names, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{f"c{i}": item for i, item in enumerate(items)})
    return items


def _grid(specs: list[str]) -> list[dict[str, Any]]:
    grid: list[dict[str, Any]] = [{}]
    for spec in specs:
        key, values = spec.split("=")
        grid = [{**g, key: _parse(v)} for g in grid for v in values.split(",")]
    return grid


def _parse(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--only", default=None,
                        help="comma-separated fold indices to run (default: all); added to the folds already in --out")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 when another job shares the CPU)")
    parser.add_argument("grid", nargs="*", help="key=v1,v2 ActionConfig fields to compare")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    base = ActionConfig()
    clips = list_clips(args.data, base.labels)
    labels, names = np.array([c.label for c in clips]), [c.name for c in clips]
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    features: dict[tuple[Any, ...], Items] = {}
    only = [int(f) for f in args.only.split(",")] if args.only else None
    for overrides in _grid(args.grid):
        cfg = base.model_copy(update=overrides)
        ActionConfig.model_validate(cfg.model_dump())  # model_copy does not validate
        frames = cached_frames(clips, cfg)
        key = stage1_key(cfg)  # configs that see the same difference images share stage-1 features
        if key not in features:
            features[key] = _stage1_features(args.out.parent, key, frames, names, cfg)
        name = ",".join(f"{k}={v}" for k, v in overrides.items()) or "default"
        res = cross_validate(cfg, frames, names, labels, args.folds, features[key], only)
        if only is not None:  # runs of other folds of the same variant add up to one CV
            res = merge_folds(results.get(name), res)
        results[name] = {"overrides": overrides, "config": cfg.model_dump(mode="json"), **res}
        s = res["summary"]
        if len(res["folds"]) < args.folds:
            print(f"{name}: {len(res['folds'])} of {args.folds} folds so far", flush=True)
        print(f"{name}: acc {s['accuracy']['mean']:.3f} ± {s['accuracy']['std']:.3f}  "
              f"auc {s['auc']['mean']:.3f} ± {s['auc']['std']:.3f}  ({res['seconds']:.0f} s)", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
