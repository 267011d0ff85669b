"""k-fold cross-validation of action-model configurations on cached features (the comparison tables).

    python -m models.action.experiments --data DIR --out results.json temporal=mean,attn,tconv unfreeze=0,2

Each fold trains on the other folds (with a stratified validation part carved from them for early
stopping) and is scored on its own clips, which no step of training has seen.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.action.cache import cache_features
from models.action.config import ActionConfig
from models.action.data import list_clips, stratified_folds, stratified_split
from models.action.metrics import classification_metrics, mean_std
from models.action.model import build_model
from models.action.train import Items, clip_probs, fit

logger = logging.getLogger(__name__)


def fold_split(labels: np.ndarray, test: list[int], cfg: ActionConfig, fold: int) -> dict[str, list[int]]:
    rest = sorted(set(range(len(labels))) - set(test))
    # validation is carved from the training folds only; the test fold stays unseen
    inner = stratified_split(labels[rest].tolist(), cfg.val_fraction, 0.0, cfg.seed + fold)
    return {"train": [rest[i] for i in inner["train"]], "val": [rest[i] for i in inner["val"]], "test": test}


def cross_validate(cfg: ActionConfig, c4: Items, labels: np.ndarray, k: int = 5,
                   prefix_cache: dict[int, Items] | None = None) -> dict[str, Any]:
    """Per-fold test metrics and their mean ± std for ``cfg``."""
    folds = stratified_folds(labels.tolist(), k, cfg.seed)
    prefix_cache = {} if prefix_cache is None else prefix_cache
    rows, start = [], time.time()
    for f, test in enumerate(folds):
        split = fold_split(labels, test, cfg, f)
        model = build_model(cfg)
        fit(model, c4, labels, {"train": split["train"], "val": split["val"]}, cfg, prefix_cache=prefix_cache)
        units = cfg.unfreeze if cfg.epochs else 0
        probs = clip_probs(model, [prefix_cache[units][i] for i in test], units, cfg)
        rows.append(classification_metrics(probs, labels[test], cfg.labels, cfg.alert_index))
        logger.info("fold %d: acc %.3f auc %.3f", f, rows[-1]["accuracy"], rows[-1]["auc"])
    return {"folds": rows, "summary": mean_std(rows), "seconds": time.time() - start}


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
    parser.add_argument("grid", nargs="*", help="key=v1,v2 ActionConfig fields to compare")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    base = ActionConfig()
    clips = list_clips(args.data, base.labels)
    labels = np.array([c.label for c in clips])
    c4 = cache_features(clips, base)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    caches: dict[str, dict[int, Items]] = {}
    for overrides in _grid(args.grid):
        cfg = base.model_copy(update=overrides)
        name = ",".join(f"{k}={v}" for k, v in overrides.items()) or "default"
        # frozen-neck outputs are shared by configs whose neck outputs the same thing
        res = cross_validate(cfg, c4, labels, args.folds, caches.setdefault(f"spatial={cfg.motion == 'spatial'}", {}))
        results[name] = {"overrides": overrides, **res}
        s = res["summary"]
        print(f"{name}: acc {s['accuracy']['mean']:.3f} ± {s['accuracy']['std']:.3f}  "
              f"auc {s['auc']['mean']:.3f} ± {s['auc']['std']:.3f}  ({res['seconds']:.0f} s)", flush=True)
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
