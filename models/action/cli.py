"""What ``vidwatch train action``, ``vidwatch eval action`` and ``vidwatch export`` call.

Each function returns a process exit code: 0 on success, 2 when a :class:`VidwatchError` says
the input is unusable (its message is printed to stderr).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import torch

from pipeline.errors import VidwatchError

logger = logging.getLogger(__name__)

SHIPPED = {"fight": Path("build/models/fight")}
THREADS = 2


def _fail(exc: VidwatchError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def train(data: Path, out: Path, epochs: int | None, frames: int | None, size: int | None,
          resume: Path | None = None, seed: int = 0) -> int:
    """Train a fight detector on ``DATA/<label>/*.mp4`` into the run folder ``out``.

    ``epochs`` bounds stage 2 (fine-tuning; it stops early on validation loss), ``frames`` is the
    window length T, ``size`` the square size of the difference images the motion stream reads.
    """
    from models.action.config import ActionConfig
    from models.action.run import train_run

    torch.set_num_threads(THREADS)
    overrides = {k: v for k, v in {"epochs": epochs, "frames": frames, "size": size}.items() if v is not None}
    try:
        metrics = train_run(data, out, ActionConfig(seed=seed, **overrides), resume)
    except VidwatchError as exc:
        return _fail(exc)
    test = metrics.get("test")
    if test:
        print(f"test split: accuracy {test['accuracy']:.3f}  f1 {test['f1']:.3f}  auc {test['auc']:.3f} "
              f"(n={test['n']})")
    print(f"run folder: {out}  (best checkpoint {out / 'best.pt'}, {metrics['train_seconds']:.0f} s)")
    return 0


def _resolve(model: str) -> Path:
    """A package folder, or a shipped model name built on first use."""
    if model in SHIPPED:
        target = SHIPPED[model]
        if not (target / "manifest.json").exists():
            from models.action.shipped import build_shipped

            build_shipped(target.parent)
        return target
    return Path(model)


def evaluate(model: str, data: Path, as_json: bool, out: Path | None = None, tta: bool = False) -> int:
    """Score a package (or the shipped ``fight``) on labelled clips; prints the metrics JSON last."""
    from models.action.evaluate import evaluate_package
    from pipeline.modelpkg import load_package

    try:
        package = load_package(_resolve(model))
        metrics = evaluate_package(package, data, out, tta)
    except VidwatchError as exc:
        return _fail(exc)
    if not as_json:
        print(f"{package.name}: accuracy {metrics['accuracy']:.3f}  precision {metrics['precision']:.3f}  "
              f"recall {metrics['recall']:.3f}  f1 {metrics['f1']:.3f}  auc {metrics['auc']:.3f}  "
              f"(n={metrics['n']})")
    print(json.dumps(metrics))
    return 0


def export(checkpoint: Path, out: Path, int8: bool, calibration: Path | None) -> int:
    """Write a model package from a training checkpoint; prints torch-vs-ORT parity on real clips."""
    from models.action.export import export_checkpoint

    torch.set_num_threads(THREADS)
    try:
        report = export_checkpoint(checkpoint, out, int8, calibration)
    except VidwatchError as exc:
        return _fail(exc)
    print(json.dumps(report))
    return 0


def build_shipped(out_dir: Path, int8: bool = False) -> Path:
    """Build the shipped ``fight`` package into ``out_dir/fight`` (committed weights, no training)."""
    from models.action.shipped import build_shipped as build

    return build(out_dir, int8)
