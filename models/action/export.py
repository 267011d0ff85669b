"""Checkpoint -> model package: the motion stream (frame graph, reading the runtime's
``frame_delta`` difference images) and the temporal head (window graph), with torch-vs-ONNX
Runtime parity on real clips.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.action.config import ActionConfig
from models.action.model import ActionModel, build_model
from models.action.train import clean_deltas
from models.action.windows import all_windows
from models.backbone import SPEC, freeze_same_padding
from models.onnx_export import export_onnx, ort_session
from models.packaging import GraphFile, write_package
from pipeline.features.delta import KIND as DELTA_KIND

logger = logging.getLogger(__name__)

PACKAGE_VERSION = "2.0.0"
DELTA = "delta"
FEAT = "feat"
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
    """``motion.onnx`` and ``head.onnx`` in ``folder``, dynamic batch, fixed window length T."""
    delta = torch.full((2, cfg.size, cfg.size, 3), 127, dtype=torch.uint8)
    stream = freeze_same_padding(model.stream.eval(), delta)  # constant pads: smaller graph, fusable
    motion = export_onnx(stream, (delta,), folder / "motion.onnx", [DELTA], [FEAT], {DELTA: {0: "n"}, FEAT: {0: "n"}})
    with torch.no_grad():
        feat_dim = stream(delta).shape[1]
    head = export_onnx(HeadGraph(model), (torch.zeros(2, cfg.frames, feat_dim),), folder / "head.onnx",
                       [FEAT], [SCORES], {FEAT: {0: "n"}, SCORES: {0: "n"}})
    return {"motion": motion, "head": head}


def package_fields(cfg: ActionConfig, name: str, threshold: float, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name, "version": PACKAGE_VERSION, "task": "action",
        "description": f"Action detection ({', '.join(cfg.labels)}) from motion: EfficientNet-Lite0 "
                       f"(ImageNet init, top {cfg.unfreeze} units fine-tuned) on {cfg.size}x{cfg.size} "
                       f"difference images of consecutive frames at {cfg.fps:g} fps, per frame; "
                       f"temporal head ({cfg.temporal}) over windows of {cfg.frames} frames.",
        "input": {"height": cfg.input_size, "width": cfg.input_size, "mean": list(SPEC.mean), "std": list(SPEC.std)},
        "runtime_features": {DELTA: {"kind": DELTA_KIND, "height": cfg.size, "width": cfg.size, "gain": cfg.gain}},
        "window": {"frames": cfg.frames, "stride": cfg.stride, "fps": cfg.fps},
        "labels": list(cfg.labels), "alert_label": cfg.alert_label, "scores": f"head.{SCORES}",
        "threshold": threshold, "metrics": metrics,
        "outputs_doc": {f"motion.{FEAT}": "per-frame 1280-d motion feature",
                        f"head.{SCORES}": f"softmax over {list(cfg.labels)} for the window"},
    }


def export_package(model: ActionModel, cfg: ActionConfig, out: Path, name: str = "fight", threshold: float = 0.5,
                   metrics: dict[str, Any] | None = None) -> Path:
    """Write the package folder ``out`` (replacing any earlier one)."""
    with tempfile.TemporaryDirectory() as tmp:
        graphs = export_graphs(model, cfg, Path(tmp))
        if out.exists():
            shutil.rmtree(out)  # a stale graph from an earlier export must not linger
        return write_package(out, [
            GraphFile("motion", graphs["motion"], "frame", {DELTA: f"runtime.{DELTA}"}, [FEAT]),
            GraphFile("head", graphs["head"], "window", {FEAT: f"motion.{FEAT}"}, [SCORES]),
        ], **package_fields(cfg, name, threshold, metrics or {}))


def torch_window_scores(model: ActionModel, frames: np.ndarray, cfg: ActionConfig) -> np.ndarray:
    """Reference: uint8 frames ``[F, I, I, 3]`` -> ``[W, K]`` window probabilities at stride 1, in torch."""
    with torch.no_grad():
        feats = model.stream.eval()(torch.from_numpy(clean_deltas(frames, cfg))).numpy()
        return torch.softmax(model.head.eval()(torch.from_numpy(all_windows(feats, cfg.frames))), dim=1).numpy()


def ort_window_scores(package: Path, frames: np.ndarray, cfg: ActionConfig, motion: str = "motion.onnx") -> np.ndarray:
    """The same through the package's ONNX graphs with ONNX Runtime (``motion``: which motion graph file)."""
    feats = ort_session(package / motion).run([FEAT], {DELTA: clean_deltas(frames, cfg)})[0]
    return ort_session(package / "head.onnx").run([SCORES], {FEAT: all_windows(feats, cfg.frames)})[0]


def agreement(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, int]:
    """Max abs difference, top-1 agreement and window count over pairs of ``[W, K]`` window scores."""
    diff, agree, total = 0.0, 0, 0
    for a, b in pairs:
        diff = max(diff, float(np.abs(a - b).max()))
        agree, total = agree + int((a.argmax(1) == b.argmax(1)).sum()), total + len(a)
    return diff, agree / total, total


def parity_report(model: ActionModel, cfg: ActionConfig, package: Path, clips: list[np.ndarray]) -> dict[str, float]:
    """Max abs difference of window probabilities and top-1 agreement, torch vs the package."""
    diff, agree, total = agreement((torch_window_scores(model, frames, cfg), ort_window_scores(package, frames, cfg))
                                   for frames in clips)
    return {"max_abs_diff": diff, "top1_agreement": agree, "windows": total}


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

    return loop_pad(read_clip(path, cfg.fps, (cfg.input_size, cfg.input_size)), cfg.frames)


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
