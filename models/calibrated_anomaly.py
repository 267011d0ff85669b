"""The demo anomaly package: each camera calibrates itself on its first seconds.

Score of a window = largest per-location mean squared z-score of the window-mean ``c4`` map
against that camera's normal statistics (``pipeline.calibration.fit_window_gaussian``),
scaled so the calibration quantile is 1.0. Cheap (the trunk is shared), no training, no
labels: the stand-in until a camera has a fitted anomaly model of its own.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.backbone import SPEC
from models.onnx_export import export_onnx
from models.packaging import GraphFile, write_package

NAME = "demo-anomaly"
FRAMES = 4
STRIDE = 2
CALIBRATION_SECONDS = 20.0


class WindowGaussianScore(nn.Module):
    """[N,T,C,h,w] window of c4 maps -> score [N,1], per-frame scores [N,T], heat map [N,h,w]."""

    def forward(self, c4: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor,
                scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z2 = ((c4.mean(dim=1) - mean) * inv_std).pow(2).mean(dim=1) * scale  # [N,h,w]
        score = z2.flatten(1).amax(dim=1, keepdim=True)
        per_frame = ((c4 - mean) * inv_std).pow(2).mean(dim=2).flatten(2).amax(dim=2) * scale  # [N,T]
        return score, per_frame, z2


def build(out_dir: Path, trunk_path: Path, height: int, width: int) -> Path:
    h, w = height // SPEC.c4_stride, width // SPEC.c4_stride
    out = out_dir / NAME
    head_path = out_dir / f"{NAME}-score.onnx.tmp"
    example = (torch.zeros(1, FRAMES, SPEC.c4_channels, h, w), torch.zeros(SPEC.c4_channels, h, w),
               torch.ones(SPEC.c4_channels, h, w), torch.ones(1))
    export_onnx(WindowGaussianScore(), example, head_path, ["c4", "mean", "inv_std", "scale"],
                ["score", "frame_scores", "heatmap"],
                {"c4": {0: "n"}, "score": {0: "n"}, "frame_scores": {0: "n"}, "heatmap": {0: "n"}})
    graphs = [
        GraphFile("trunk", trunk_path, "frame", {"frames": "frames"}, ["c4"]),
        GraphFile("score", head_path, "window",
                  {"c4": "trunk.c4", "mean": "state.mean", "inv_std": "state.inv_std", "scale": "state.scale"},
                  ["score", "frame_scores", "heatmap"]),
    ]
    write_package(
        out, graphs, name=NAME, version="1.0.0", task="anomaly",
        description="Self-calibrating scene anomaly: distance of window-mean ImageNet c4 features to the "
                    "camera's own normal statistics, per location.",
        input={"height": height, "width": width, "mean": SPEC.mean, "std": SPEC.std},
        window={"frames": FRAMES, "stride": STRIDE},
        labels=["anomaly"], alert_label="anomaly", scores="score.score", frame_scores="score.frame_scores",
        heatmap="score.heatmap", threshold=1.0,
        calibration={"fit": "window_gaussian", "collect": ["trunk.c4"], "seconds": CALIBRATION_SECONDS,
                     "params": {"source": "trunk.c4", "quantile": 0.995}},
        outputs_doc={"score": "max over locations of the mean squared z-score, 1.0 = calibration quantile",
                     "heatmap": "the same per c4 location (stride 16)"},
    )
    head_path.unlink()
    return out
