"""Two-stage fine-tuning on cached per-frame features.

Stage 1 trains the temporal head on frozen ImageNet features (the whole neck is run once per
cached frame, so an epoch takes seconds). Stage 2 unfreezes the top ``cfg.unfreeze`` neck units
with a lower learning rate than the head (discriminative LRs); the frozen part below them is
again run once and cached. Both stages stop early on validation loss and keep the best weights.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from models.action.config import ActionConfig
from models.action.model import ActionModel
from models.action.windows import all_windows, random_window

logger = logging.getLogger(__name__)

PREFIX_BATCH = 64
EVAL_BATCH = 256  # windows per forward when scoring clips
Items = list[np.ndarray]  # per clip [V, F, ...]: what the trainable part reads


def prefix_items(model: ActionModel, c4: Items, units: int) -> Items:
    """Run the frozen part of the neck once over every cached frame (float16 to save memory).

    The frozen part is always the ImageNet weights, so when ``c4`` comes memory-mapped from the
    feature cache its output is stored beside it and read back by later runs.
    """
    model.eval()
    return [_prefix_clip(model, clip, units) for clip in tqdm(c4, desc=f"frozen neck (unfreeze={units})",
                                                                unit="clip", leave=False)]


def _prefix_clip(model: ActionModel, clip: np.ndarray, units: int) -> np.ndarray:
    source = getattr(clip, "filename", None)
    kind = "s" if model.neck.spatial and units == 0 else ""
    path = Path(source).with_suffix(f".neck{units}{kind}.npy") if source else None
    if path is not None and path.exists():
        return np.load(path, mmap_mode="r")
    flat = np.asarray(clip).reshape(-1, *clip.shape[2:])
    parts = [model.neck.prefix(torch.from_numpy(flat[i:i + PREFIX_BATCH].astype(np.float32)), units)
             for i in range(0, len(flat), PREFIX_BATCH)]
    out = torch.cat(parts).numpy().astype(np.float16).reshape(*clip.shape[:2], *parts[0].shape[1:])
    if path is not None:
        np.save(path, out)
    return out


@dataclass
class Progress:
    """Everything a checkpoint needs to resume: where we are and the best weights so far."""

    stage: int = 1
    epoch: int = 0
    best_loss: float = float("inf")
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def clip_probs(model: ActionModel, items: Items, units: int, cfg: ActionConfig, view: int = 0) -> np.ndarray:
    """``[N, K]``: mean window probability of every clip (clean view, stride 1)."""
    model.eval()
    windows = [all_windows(clip, cfg, view) for clip in items]
    flat = np.concatenate(windows)
    with torch.no_grad():
        probs = torch.cat([torch.softmax(model.forward_from(torch.from_numpy(flat[i:i + EVAL_BATCH].astype(np.float32)),
                                                            units), dim=1)
                           for i in range(0, len(flat), EVAL_BATCH)]).numpy()
    ends = np.cumsum([len(w) for w in windows])
    return np.stack([p.mean(axis=0) for p in np.split(probs, ends[:-1])])


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-7, 1)).mean())


def class_weights(labels: np.ndarray, k: int) -> torch.Tensor:
    counts = np.bincount(labels, minlength=k).astype(np.float32)
    return torch.from_numpy(counts.sum() / (k * np.maximum(counts, 1)))


def train_epoch(model: ActionModel, units: int, items: Items, labels: np.ndarray, cfg: ActionConfig,
                rng: np.random.Generator, optimizer: torch.optim.Optimizer, loss_fn: nn.Module) -> float:
    """One random window per clip, in shuffled batches; returns the mean training loss."""
    model.train()
    order = rng.permutation(len(items))
    losses = []
    for i in range(0, len(order), cfg.batch):
        batch = order[i:i + cfg.batch]
        x = torch.from_numpy(np.stack([random_window(items[j], cfg, rng) for j in batch]).astype(np.float32))
        loss = loss_fn(model.forward_from(x, units), torch.from_numpy(labels[batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses))


@dataclass
class StageSpec:
    stage: int
    units: int
    epochs: int
    patience: int
    groups: list[dict[str, Any]]


def stage_specs(model: ActionModel, cfg: ActionConfig) -> list[StageSpec]:
    model.neck.unfreeze(0)
    head = {"params": list(model.head.parameters()), "lr": cfg.lr_head}
    specs = [StageSpec(1, 0, cfg.stage1_epochs, 2 * cfg.patience, [head])]
    if cfg.unfreeze and cfg.epochs:
        specs.append(StageSpec(2, cfg.unfreeze, cfg.epochs, cfg.patience, [
            {"params": list(model.head.parameters()), "lr": cfg.lr_head * 0.3},
            {"params": "neck", "lr": cfg.lr_backbone}]))
    return specs


Checkpointer = Callable[[Progress, ActionModel, torch.optim.Optimizer, np.random.Generator], None]


def run_stage(model: ActionModel, spec: StageSpec, data: dict[str, tuple[Items, np.ndarray]], cfg: ActionConfig,
              rng: np.random.Generator, progress: Progress, checkpoint: Checkpointer | None,
              optimizer_state: dict[str, Any] | None = None) -> None:
    """Train one stage from ``progress.epoch``; early stopping on val loss when there is a val set."""
    neck_params = model.neck.unfreeze(spec.units)
    groups = [{**g, "params": neck_params} if g["params"] == "neck" else g for g in spec.groups]
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    train_items, y_train = data["train"]
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(y_train, len(cfg.labels)), label_smoothing=0.1)
    bar = tqdm(range(progress.epoch, spec.epochs), desc=f"stage {spec.stage}", unit="epoch", leave=False)
    for epoch in bar:
        row = {"stage": spec.stage, "epoch": epoch,
               "train_loss": train_epoch(model, spec.units, train_items, y_train, cfg, rng, optimizer, loss_fn)}
        row.update(_validate(model, spec.units, data.get("val"), cfg))
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


def _validate(model: ActionModel, units: int, val: tuple[Items, np.ndarray] | None,
              cfg: ActionConfig) -> dict[str, float]:
    if val is None or not len(val[1]):
        return {}
    probs = clip_probs(model, val[0], units, cfg)
    return {"val_loss": nll(probs, val[1]), "val_acc": float((probs.argmax(1) == val[1]).mean())}


def _track_best(progress: Progress, model: ActionModel, loss: float, patience: int) -> bool:
    """Keep the best weights; True when ``patience`` epochs passed without improvement."""
    if loss < progress.best_loss - 1e-4:
        progress.best_loss, progress.bad_epochs = loss, 0
        progress.best_state = copy.deepcopy(model.state_dict())
        return False
    progress.bad_epochs += 1
    return progress.bad_epochs >= patience


def fit(model: ActionModel, c4: Items, labels: np.ndarray, split: dict[str, list[int]], cfg: ActionConfig,
        checkpoint: Checkpointer | None = None, resume: dict[str, Any] | None = None,
        prefix_cache: dict[int, Items] | None = None) -> Progress:
    """Both stages on the clips of ``split['train']``, early stopping on ``split['val']``."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    progress, opt_state = Progress(), None
    if resume is not None:
        progress, opt_state = _restore(model, rng, resume)
    prefix_cache = {} if prefix_cache is None else prefix_cache
    for spec in stage_specs(model, cfg):
        if spec.stage < progress.stage:
            continue
        if spec.stage > progress.stage:
            # stage 2 starts from stage 1's best and keeps it unless it beats it on val loss
            progress = Progress(stage=spec.stage, best_loss=progress.best_loss, best_state=progress.best_state,
                                history=progress.history)
            opt_state = None
        if spec.units not in prefix_cache:
            prefix_cache[spec.units] = prefix_items(model, c4, spec.units)
        items = prefix_cache[spec.units]
        data = {k: ([items[i] for i in v], labels[v]) for k, v in split.items() if v}
        run_stage(model, spec, data, cfg, rng, progress, checkpoint, opt_state)
    return progress


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
