"""Checkpoint -> model package: the shared trunk, the fine-tuned neck (frame graph) and the
temporal head (window graph), with torch-vs-ONNX-Runtime parity on real clips.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.action.config import ActionConfig
from models.action.model import ActionModel, build_model
from models.backbone import SPEC
from models.onnx_export import export_onnx, ort_session
from models.packaging import GraphFile, write_package
from models.trunk import TRUNK_OUTPUT, Trunk, build_trunk

logger = logging.getLogger(__name__)

PACKAGE_VERSION = "1.0.0"
NECK_OUTPUT = "feat"
SCORES = "scores"


class HeadGraph(nn.Module):
    """Per-frame features stacked over a window ``[N, T, D]`` -> probabilities ``[N, K]``."""

    def __init__(self, model: ActionModel) -> None:
        super().__init__()
        self.head = model.head

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(feats), dim=1)


def load_checkpoint(path: Path) -> tuple[ActionConfig, ActionModel]:
    """A ``best.pt`` (or ``last.pt``: its best weights so far) as config + eval-mode model."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ActionConfig.model_validate(ckpt["config"])
    model = build_model(cfg)
    best = ckpt.get("progress", {}).get("best_state")
    model.load_state_dict(best if best is not None else ckpt["model"])
    return cfg, model.eval()


def export_graphs(model: ActionModel, cfg: ActionConfig, folder: Path) -> dict[str, Path]:
    """``neck.onnx`` and ``head.onnx`` in ``folder``, dynamic batch, fixed window length T."""
    side = -(-cfg.size // SPEC.c4_stride)
    c4 = torch.zeros(2, SPEC.c4_channels, side, side)
    neck = export_onnx(model.neck, (c4,), folder / "neck.onnx",
                       [TRUNK_OUTPUT], [NECK_OUTPUT], {TRUNK_OUTPUT: {0: "n"}, NECK_OUTPUT: {0: "n"}})
    with torch.no_grad():
        feat_shape = model.neck.eval()(c4).shape[1:]
    head = export_onnx(HeadGraph(model), (torch.zeros(2, cfg.frames, *feat_shape),), folder / "head.onnx",
                       [NECK_OUTPUT], [SCORES], {NECK_OUTPUT: {0: "n"}, SCORES: {0: "n"}})
    return {"neck": neck, "head": head}


def package_fields(cfg: ActionConfig, name: str, threshold: float, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name, "version": PACKAGE_VERSION, "task": "action",
        "description": "Fight detection: EfficientNet-Lite0 trunk (ImageNet, shared), "
                       f"{'fine-tuned' if cfg.unfreeze and cfg.epochs else 'ImageNet'} upper blocks "
                       f"per frame, temporal head ({cfg.temporal}) over a window of frame features with "
                       f"{cfg.motion} motion cues.",
        "input": {"height": cfg.size, "width": cfg.size, "mean": list(SPEC.mean), "std": list(SPEC.std)},
        "window": {"frames": cfg.frames, "stride": cfg.stride, "fps": cfg.fps},
        "labels": list(cfg.labels), "alert_label": cfg.alert_label, "scores": f"head.{SCORES}",
        "threshold": threshold, "metrics": metrics,
        "outputs_doc": {f"neck.{NECK_OUTPUT}": "per-frame 1280-d feature (7x7 map with spatial motion)",
                        f"head.{SCORES}": f"softmax over {list(cfg.labels)} for the window"},
    }


def export_package(model: ActionModel, cfg: ActionConfig, out: Path, trunk_path: Path | None = None,
                   name: str = "fight", threshold: float = 0.5, metrics: dict[str, Any] | None = None) -> Path:
    """Write the package folder ``out``; the trunk is copied from ``trunk_path`` or exported fresh."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        graphs = export_graphs(model, cfg, folder)
        trunk = trunk_path or build_trunk(folder / "trunk.onnx", cfg.size, cfg.size)
        if out.exists():
            shutil.rmtree(out)  # a stale graph from an earlier export must not linger
        return write_package(out, [
            GraphFile("trunk", trunk, "frame", {"frames": "frames"}, [TRUNK_OUTPUT]),
            GraphFile("neck", graphs["neck"], "frame", {TRUNK_OUTPUT: f"trunk.{TRUNK_OUTPUT}"}, [NECK_OUTPUT]),
            GraphFile("head", graphs["head"], "window", {NECK_OUTPUT: f"neck.{NECK_OUTPUT}"}, [SCORES]),
        ], **package_fields(cfg, name, threshold, metrics or {}))


def torch_window_scores(trunk: Trunk, model: ActionModel, frames: np.ndarray, cfg: ActionConfig) -> np.ndarray:
    """Reference: uint8 frames ``[F, S, S, 3]`` -> ``[W, K]`` window probabilities at stride 1, in torch."""
    with torch.no_grad():
        feats = model.neck(trunk(torch.from_numpy(frames)))
        wins = torch.stack([feats[s:s + cfg.frames] for s in range(len(frames) - cfg.frames + 1)])
        return torch.softmax(model.head(wins), dim=1).numpy()


def ort_window_scores(package: Path, frames: np.ndarray, cfg: ActionConfig) -> np.ndarray:
    """The same through the package's ONNX graphs with ONNX Runtime."""
    c4 = ort_session(package / "trunk.onnx").run([TRUNK_OUTPUT], {"frames": frames})[0]
    feats = ort_session(package / "neck.onnx").run([NECK_OUTPUT], {TRUNK_OUTPUT: c4})[0]
    wins = np.stack([feats[s:s + cfg.frames] for s in range(len(frames) - cfg.frames + 1)])
    return ort_session(package / "head.onnx").run([SCORES], {NECK_OUTPUT: wins})[0]


def parity_report(model: ActionModel, cfg: ActionConfig, package: Path, clips: list[np.ndarray]) -> dict[str, float]:
    """Max abs difference of window probabilities and top-1 agreement, torch vs the package."""
    from models.backbone import load_pretrained

    trunk = Trunk(load_pretrained()).eval()
    diffs, agree, total = [], 0, 0
    for frames in clips:
        ref, got = torch_window_scores(trunk, model, frames, cfg), ort_window_scores(package, frames, cfg)
        diffs.append(float(np.abs(ref - got).max()))
        agree += int((ref.argmax(1) == got.argmax(1)).sum())
        total += len(ref)
    return {"max_abs_diff": max(diffs), "top1_agreement": agree / total, "windows": total}


PARITY_CLIPS = 4


def parity_clip_paths(run_dir: Path, calibration: Path | None, cfg: ActionConfig) -> list[Path]:
    """Real clips for parity: from ``calibration`` if given, else the run's validation/test split."""
    import json

    from models.action.data import list_clips
    from models.action.errors import EmptyDatasetError

    if calibration is not None:
        clips = list_clips(calibration, cfg.labels)
        # both classes: take clips alternately from the start and the end of the sorted list
        paths = [c.path for pair in zip(clips, reversed(clips), strict=True) for c in pair]
        return list(dict.fromkeys(paths))[:PARITY_CLIPS]
    split = run_dir / "split.json"
    if not split.exists():
        raise EmptyDatasetError(f"{run_dir}: no split.json to take parity clips from; pass --calibration DIR")
    raw = json.loads(split.read_text())
    paths = raw.get("test", []) + raw.get("val", []) + raw.get("train", [])
    return [Path(p) for p in paths[:PARITY_CLIPS]]


def read_window_clip(path: Path, cfg: ActionConfig) -> np.ndarray:
    from models.action.video import loop_pad, read_clip

    return loop_pad(read_clip(path, cfg.fps, (cfg.size, cfg.size)), cfg.frames)


def export_checkpoint(checkpoint: Path, out: Path, int8: bool = False, calibration: Path | None = None
                      ) -> dict[str, Any]:
    """Checkpoint -> package at ``out``; returns the parity report (and the INT8 one with ``int8``)."""
    import json

    cfg, model = load_checkpoint(checkpoint)
    metrics_file = checkpoint.parent / "metrics.json"
    metrics = json.loads(metrics_file.read_text()).get("test", {}) if metrics_file.exists() else {}
    metrics = {k: v for k, v in metrics.items() if k in ("accuracy", "precision", "recall", "f1", "auc", "n")}
    export_package(model, cfg, out, metrics={"test_split": metrics} if metrics else {})
    clips = [read_window_clip(p, cfg) for p in parity_clip_paths(checkpoint.parent, calibration, cfg)]
    report: dict[str, Any] = {"package": str(out), "parity": parity_report(model, cfg, out, clips)}
    print(f"parity torch vs ONNX Runtime on {len(clips)} real clips: max abs diff "
          f"{report['parity']['max_abs_diff']:.2e}, top-1 agreement {report['parity']['top1_agreement']:.3f}")
    if int8:
        from models.action.quantize import quantize_package

        if calibration is None:
            from models.action.errors import EmptyDatasetError

            raise EmptyDatasetError("--int8 needs --calibration DIR: real clips to calibrate activation ranges")
        report["int8"] = quantize_package(out, calibration, cfg)
    return report
