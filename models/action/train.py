"""Two-stage fine-tuning of the motion stream and temporal head.

Stage 1 trains the temporal head on frozen ImageNet features of the difference images (the
stream runs once per cached frame, for the clean clip and ``aug_views`` augmented copies), so
an epoch takes a second. Stage 2 unfreezes the top ``cfg.unfreeze`` backbone units with a lower
learning rate than the head (discriminative LRs, cosine decay) and trains on windows augmented
afresh every batch. Both stages stop early on validation loss and keep the best weights.
"""

from __future__ import annotations

import copy
import logging
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.action.augment import ClipAugment, resize_frames
from models.action.config import ActionConfig
from models.action.model import ActionModel, TemporalHead
from models.action.video import loop_pad
from models.action.windows import all_windows, random_start, random_window
from pipeline.features.delta import encode_clip

logger = logging.getLogger(__name__)

STREAM_BATCH = 64  # frames per forward when computing features without gradients
Frames = list[np.ndarray]  # per clip uint8 [F, I, I, 3]: decoded at the package input size
Items = list[np.ndarray]  # per clip float16 [V, F, D]: stage-1 features of V views


# -- inputs ------------------------------------------------------------------------------
def clean_deltas(frames: np.ndarray, cfg: ActionConfig) -> np.ndarray:
    """What the runtime computes for a clip: whole frames resized, then differences (uint8)."""
    return encode_clip(resize_frames(loop_pad(np.asarray(frames), cfg.frames), cfg.size), cfg.gain)


def random_delta_window(frames: np.ndarray, cfg: ActionConfig, rng: np.random.Generator) -> np.ndarray:
    """``[T, S, S, 3]`` differences of a random window, one augmentation for all its frames."""
    seq = loop_pad(np.asarray(frames), cfg.frames)
    start = random_start(len(seq), cfg.frames, rng)
    first = max(start - 1, 0)  # the frame before the window: its first difference needs it
    part = ClipAugment.draw(rng, cfg.min_crop_area, cfg.jitter).apply(seq[first:start + cfg.frames], cfg.size)
    return encode_clip(part, cfg.gain)[start - first:]


def stream_features(model: ActionModel, deltas: np.ndarray) -> np.ndarray:
    """float32 ``[F, D]`` per-frame features of uint8 differences ``[F, S, S, 3]``, no gradients."""
    model.stream.eval()
    with torch.no_grad():
        parts = [model.stream(torch.from_numpy(np.ascontiguousarray(deltas[i:i + STREAM_BATCH])))
                 for i in range(0, len(deltas), STREAM_BATCH)]
    return torch.cat(parts).numpy()


def stage1_key(cfg: ActionConfig) -> tuple[Any, ...]:
    """Every setting :func:`view_features` depends on: configs with equal keys share stage-1 features."""
    return (cfg.fps, cfg.input_size, cfg.size, cfg.gain, cfg.aug_views, cfg.min_crop_area, cfg.jitter, cfg.seed)


def view_features(model: ActionModel, frames: Frames, names: list[str], cfg: ActionConfig) -> Items:
    """Stage-1 features ``[1 + aug_views, F, D]`` per clip: view 0 clean, then augmented views."""
    items = []
    for clip, name in zip(tqdm(frames, desc="frozen features", unit="clip", leave=False), names, strict=True):
        # seeded by the clip's name, so a clip gets the same views whatever the order of the folder
        rng = np.random.default_rng([cfg.seed, zlib.crc32(name.encode())])
        padded = loop_pad(np.asarray(clip), cfg.frames)
        views = [clean_deltas(padded, cfg)]
        draws = [ClipAugment.draw(rng, cfg.min_crop_area, cfg.jitter) for _ in range(cfg.aug_views)]
        views += [encode_clip(aug.apply(padded, cfg.size), cfg.gain) for aug in draws]
        items.append(np.stack([stream_features(model, v) for v in views]).astype(np.float16))
    return items


# -- scoring -----------------------------------------------------------------------------
def head_probs(head: TemporalHead, feats: list[np.ndarray], cfg: ActionConfig) -> np.ndarray:
    """``[N, K]``: mean window probability of every clip from per-frame features ``[F, D]``."""
    head.eval()
    windows = [all_windows(f, cfg.frames) for f in feats]
    with torch.no_grad():
        probs = torch.softmax(head(torch.from_numpy(np.concatenate(windows).astype(np.float32))), dim=1).numpy()
    ends = np.cumsum([len(w) for w in windows])
    return np.stack([p.mean(axis=0) for p in np.split(probs, ends[:-1])])


def clip_probs(model: ActionModel, frames: Frames, cfg: ActionConfig) -> np.ndarray:
    """``[N, K]``: mean window probability of every clip (stride 1), the whole model in torch."""
    feats = [stream_features(model, clean_deltas(f, cfg)) for f in frames]
    return head_probs(model.head, feats, cfg)


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1)).mean())


def class_weights(labels: np.ndarray, k: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=k).astype(np.float32)
    return torch.from_numpy(counts.sum() / (k * np.maximum(counts, 1)))


# -- one epoch ---------------------------------------------------------------------------
Batcher = Callable[[list[int], np.random.Generator], torch.Tensor]


def train_epoch(forward: Callable[[torch.Tensor], torch.Tensor], batcher: Batcher, labels: np.ndarray,
                cfg: ActionConfig, rng: np.random.Generator, optimizer: torch.optim.Optimizer,
                loss_fn: nn.Module, schedule: Callable[[float], None] | None = None) -> float:
    """One random window per clip, in shuffled batches; returns the mean training loss.

    ``schedule`` is called before every batch with the fraction of the epoch done (LR schedules).
    """
    order = rng.permutation(len(labels))
    losses = []
    for i in tqdm(range(0, len(order), cfg.batch), desc="batches", unit="batch", leave=False):
        if schedule is not None:
            schedule(i / len(order))
        batch = order[i:i + cfg.batch].tolist()
        loss = loss_fn(forward(batcher(batch, rng)), torch.from_numpy(labels[batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


def feature_batcher(items: Items, cfg: ActionConfig) -> Batcher:
    """Stage 1: a random window of a random cached view."""
    def batch(idx: list[int], rng: np.random.Generator) -> torch.Tensor:
        views = [items[j][int(rng.integers(items[j].shape[0]))] for j in idx]
        return torch.from_numpy(np.stack([random_window(v, cfg.frames, rng) for v in views]).astype(np.float32))
    return batch


def frame_batcher(frames: Frames, cfg: ActionConfig) -> Batcher:
    """Stage 2: a random window of raw frames, augmented afresh, as difference images."""
    def batch(idx: list[int], rng: np.random.Generator) -> torch.Tensor:
        return torch.from_numpy(np.stack([random_delta_window(frames[j], cfg, rng) for j in idx]))
    return batch


# -- stages ------------------------------------------------------------------------------
@dataclass
class Progress:
    """Everything a checkpoint needs to resume: where we are and the best weights so far."""

    stage: int = 1
    epoch: int = 0
    best_loss: float = float("inf")
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    # stage 1's best, kept while stage 2 runs: stage 2 dips for an epoch or two while the unfrozen
    # blocks adapt, so it gets its own early stopping and replaces stage 1 only if it beats it
    fallback_loss: float = float("inf")
    fallback_state: dict[str, torch.Tensor] | None = None


@dataclass
class Data:
    """One split's clips: decoded frames, their labels and (stage 1) cached features."""

    frames: Frames
    labels: np.ndarray
    items: Items


@dataclass
class StageSpec:
    stage: int
    epochs: int
    patience: int


Checkpointer = Callable[[Progress, ActionModel, torch.optim.Optimizer, np.random.Generator], None]


def stage_specs(cfg: ActionConfig) -> list[StageSpec]:
    specs = [StageSpec(1, cfg.stage1_epochs, 2 * cfg.patience)]
    if cfg.unfreeze and cfg.epochs:
        specs.append(StageSpec(2, cfg.epochs, cfg.patience))
    return specs


def _optimizer(model: ActionModel, stage: int, cfg: ActionConfig) -> torch.optim.Optimizer:
    if stage == 1:
        model.stream.unfreeze(0)
        return torch.optim.AdamW(model.head.parameters(), lr=cfg.lr_head, weight_decay=cfg.weight_decay)
    stream = model.stream.unfreeze(cfg.unfreeze)
    return torch.optim.AdamW([{"params": list(model.head.parameters()), "lr": cfg.lr_head * 0.3},
                              {"params": stream, "lr": cfg.lr_backbone}], weight_decay=cfg.weight_decay)


WARMUP_EPOCHS = 1.0


def lr_scale(progress: float, epochs: int) -> float:
    """Stage-2 LR factor at ``progress`` epochs: linear warm-up, then cosine decay to zero.

    Without the warm-up the first full-LR steps on the unfrozen blocks wreck the features the
    stage-1 head was fitted to (validation fell to chance), and early stopping then keeps stage 1.
    """
    if progress < WARMUP_EPOCHS:
        return max(progress / WARMUP_EPOCHS, 0.02)
    span = max(epochs - WARMUP_EPOCHS, 1e-9)
    return 0.5 * (1 + math.cos(math.pi * min((progress - WARMUP_EPOCHS) / span, 1.0)))


def _set_lr(optimizer: torch.optim.Optimizer, scale: float) -> None:
    """The LR follows from the epoch position alone, so a resumed run continues on the same schedule."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * scale


def run_stage(model: ActionModel, spec: StageSpec, train: Data, val: Data | None, cfg: ActionConfig,
              rng: np.random.Generator, progress: Progress, checkpoint: Checkpointer | None,
              optimizer_state: dict[str, Any] | None = None) -> None:
    """Train one stage from ``progress.epoch``; early stopping on val loss when there is a val set."""
    optimizer = _optimizer(model, spec.stage, cfg)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(train.labels, len(cfg.labels)), label_smoothing=0.1)
    forward: Callable[[torch.Tensor], torch.Tensor] = model.head if spec.stage == 1 else model
    batcher = feature_batcher(train.items, cfg) if spec.stage == 1 else frame_batcher(train.frames, cfg)
    bar = tqdm(range(progress.epoch, spec.epochs), desc=f"stage {spec.stage}", unit="epoch", leave=False)
    for epoch in bar:
        def schedule(frac: float, epoch: int = epoch) -> None:
            _set_lr(optimizer, lr_scale(epoch + frac, spec.epochs))

        model.train()
        row = {"stage": spec.stage, "epoch": epoch,
               "train_loss": train_epoch(forward, batcher, train.labels, cfg, rng, optimizer, loss_fn,
                                         schedule if spec.stage == 2 else None)}
        row.update(_validate(model, spec.stage, val, cfg))
        progress.history.append(row)
        progress.epoch = epoch + 1
        stop = _track_best(progress, model, row.get("val_loss", -float(epoch)), spec.patience)
        bar.set_postfix({k: round(v, 3) for k, v in row.items() if "loss" in k or "acc" in k})
        logger.info("stage %d epoch %d %s", spec.stage, epoch, row)
        if checkpoint:
            checkpoint(progress, model, optimizer, rng)
        if stop:
            break
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)


def _validate(model: ActionModel, stage: int, val: Data | None, cfg: ActionConfig) -> dict[str, float]:
    if val is None or not len(val.labels):
        return {}
    # stage 1 leaves the stream frozen: its cached clean-view features are exact
    probs = (head_probs(model.head, [v[0].astype(np.float32) for v in val.items], cfg) if stage == 1
             else clip_probs(model, val.frames, cfg))
    return {"val_loss": nll(probs, val.labels), "val_acc": float((probs.argmax(1) == val.labels).mean())}


def _track_best(progress: Progress, model: ActionModel, loss: float, patience: int) -> bool:
    """Keep the best weights; True when ``patience`` epochs passed without improvement."""
    if loss < progress.best_loss - 1e-4:
        progress.best_loss, progress.bad_epochs = loss, 0
        progress.best_state = copy.deepcopy(model.state_dict())
        return False
    progress.bad_epochs += 1
    return progress.bad_epochs >= patience


def fit(model: ActionModel, frames: Frames, names: list[str], labels: np.ndarray, split: dict[str, list[int]],
        cfg: ActionConfig, checkpoint: Checkpointer | None = None, resume: dict[str, Any] | None = None,
        features: Items | None = None) -> Progress:
    """Both stages on the clips of ``split['train']``, early stopping on ``split['val']``.

    ``features`` are stage-1 features of every clip (:func:`view_features`) when a caller already
    has them (cross-validation computes them once for all folds).
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    progress, opt_state = Progress(), None
    if resume is not None:
        progress, opt_state = _restore(model, rng, resume)
    if features is None:
        # a run resumed in stage 2 needs no stage-1 features
        features = view_features(model, frames, names, cfg) if progress.stage == 1 else [np.empty(0)] * len(frames)
    data = {k: Data([frames[i] for i in v], labels[v], [features[i] for i in v]) for k, v in split.items() if v}
    for spec in stage_specs(cfg):
        if spec.stage < progress.stage:
            continue
        if spec.stage > progress.stage:
            progress = Progress(stage=spec.stage, history=progress.history,
                                fallback_loss=progress.best_loss, fallback_state=progress.best_state)
            opt_state = None
        run_stage(model, spec, data["train"], data.get("val"), cfg, rng, progress, checkpoint, opt_state)
        opt_state = None
    _keep_better_stage(model, progress, "val" in data)
    return progress


def _keep_better_stage(model: ActionModel, progress: Progress, validated: bool) -> None:
    """Stage 1's weights win when stage 2 never reached a lower validation loss."""
    if validated and progress.fallback_state is not None and progress.fallback_loss <= progress.best_loss:
        logger.info("stage 2 did not beat stage 1 on validation (%.4f vs %.4f): keeping stage 1",
                    progress.best_loss, progress.fallback_loss)
        model.load_state_dict(progress.fallback_state)
        progress.best_loss, progress.best_state = progress.fallback_loss, progress.fallback_state


def checkpoint_state(progress: Progress, model: ActionModel, optimizer: torch.optim.Optimizer,
                     rng: np.random.Generator, cfg: ActionConfig) -> dict[str, Any]:
    return {"config": cfg.model_dump(mode="json"), "progress": progress.__dict__, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "rng": rng.bit_generator.state,
            "torch_rng": torch.get_rng_state()}


def _restore(model: ActionModel, rng: np.random.Generator, ckpt: dict[str, Any]) -> tuple[Progress, dict[str, Any]]:
    model.load_state_dict(ckpt["model"])
    rng.bit_generator.state = ckpt["rng"]
    torch.set_rng_state(ckpt["torch_rng"])
    return Progress(**ckpt["progress"]), ckpt["optimizer"]


def save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # a crash mid-write must not destroy the last good checkpoint
