"""The one configuration shared by training, evaluation and export of the action model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.backbone import NUM_BLOCKS

Temporal = Literal["mean", "attn", "tconv", "gru"]
MAX_UNFREEZE = NUM_BLOCKS + 1  # conv_head + every block


class ActionConfig(BaseModel):
    """Frozen: a run folder's ``config.json`` is exactly what trained its checkpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: tuple[str, ...] = ("nofight", "fight")
    alert_label: str = "fight"
    # Clips are sampled by time at ``fps`` like the live pipeline samples a camera. The motion
    # stream reads the difference of consecutive samples: 100 ms apart at 10 fps (5 fps, 200 ms,
    # was 4 points worse with frozen features; fists and kicks are fast).
    fps: float = Field(10.0, gt=0)
    frames: int = Field(8, ge=2, description="T: frames per window")
    stride: int = Field(2, ge=1, description="live scoring stride in frames")
    input_size: int = Field(224, ge=32, description="square frame size the package takes (what capture sends)")
    size: int = Field(160, ge=32, description="square size of the difference images the motion stream reads")
    gain: float = Field(3.0, gt=0, description="difference image = 127 + gain * (frame - previous frame)")
    # augmentation strength (random resized crop, brightness/contrast/saturation), one draw per clip
    min_crop_area: float = Field(0.5, gt=0, le=1, description="smallest fraction of the frame a crop keeps")
    jitter: float = Field(0.3, ge=0, lt=1, description="colour factors are drawn in 1 ± jitter")
    aug_views: int = Field(2, ge=0, description="augmented copies of every clip in the stage-1 feature cache")
    temporal: Temporal = "mean"
    hidden: int = Field(128, ge=8)
    dropout: float = Field(0.3, ge=0, lt=1)
    unfreeze: int = Field(12, ge=0, le=MAX_UNFREEZE, description="top backbone units fine-tuned in stage 2: "
                          "1 conv_head, 2 +block 15, ... 12 +blocks 5-15, 17 everything")
    stage1_epochs: int = Field(10, ge=0)
    epochs: int = Field(24, ge=0, description="stage-2 epochs (upper bound with early stopping)")
    batch: int = Field(8, ge=1)
    lr_head: float = Field(1e-3, gt=0)
    lr_backbone: float = Field(3e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    patience: int = Field(5, ge=1)
    val_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, ge=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> ActionConfig:
        _check_alert_label(self)
        _check_sizes(self)
        return self

    @property
    def alert_index(self) -> int:
        return self.labels.index(self.alert_label)


def _check_alert_label(cfg: ActionConfig) -> None:
    if cfg.alert_label not in cfg.labels:
        raise ValueError(f"alert_label {cfg.alert_label!r} is not one of labels {list(cfg.labels)}")


def _check_sizes(cfg: ActionConfig) -> None:
    if cfg.size > cfg.input_size:
        raise ValueError(f"size {cfg.size} (difference images) cannot exceed input_size {cfg.input_size} (frames)")
