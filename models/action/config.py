"""The one configuration shared by training, evaluation and export of the action model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Temporal = Literal["mean", "attn", "tconv", "gru"]
Motion = Literal["none", "pooled", "spatial"]


class ActionConfig(BaseModel):
    """Frozen: a run folder's ``config.json`` is exactly what trained its checkpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: tuple[str, ...] = ("nofight", "fight")
    alert_label: str = "fight"
    # Clips are sampled by time at ``fps`` like the live pipeline samples a camera.
    fps: float = Field(5.0, gt=0)
    frames: int = Field(8, ge=2, description="T: frames per window")
    stride: int = Field(2, ge=1, description="live scoring stride in frames")
    size: int = Field(224, ge=64, description="square input size (frames are resized, not cropped)")
    # Frames are cached at ``jitter_phases * fps`` so training can shift the sampling phase.
    jitter_phases: int = Field(2, ge=1)
    aug_views: int = Field(2, ge=0, description="augmented copies of every clip in the feature cache")
    temporal: Temporal = "mean"  # 5-fold CV: mean/attn/tconv/gru are within noise of each other
    # Motion cue fed with each frame's feature: none, |difference| of consecutive pooled
    # features, or the spatial mean of |difference| of consecutive 7x7 feature maps ("where
    # something changed", which pooling first would average away).
    motion: Motion = "spatial"
    hidden: int = Field(128, ge=8)
    dropout: float = Field(0.3, ge=0, lt=1)
    unfreeze: int = Field(2, ge=0, le=6, description="upper units fine-tuned in stage 2: "
                          "0 none, 1 conv_head, 2 +block 15, ... 6 +blocks 11-14")
    stage1_epochs: int = Field(25, ge=0)
    epochs: int = Field(10, ge=0, description="stage-2 epochs (upper bound with early stopping)")
    batch: int = Field(16, ge=1)
    lr_head: float = Field(1e-3, gt=0)
    lr_backbone: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    patience: int = Field(4, ge=1)
    val_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> ActionConfig:
        _check_alert_label(self)
        return self

    @property
    def alert_index(self) -> int:
        return self.labels.index(self.alert_label)

    @property
    def cache_fps(self) -> float:
        return self.fps * self.jitter_phases


def _check_alert_label(cfg: ActionConfig) -> None:
    if cfg.alert_label not in cfg.labels:
        raise ValueError(f"alert_label {cfg.alert_label!r} is not one of labels {list(cfg.labels)}")
