"""The dataset: clips in class folders (``DATA/<label>/*.mp4`` or ``DATA/<label>/<clip>/*.jpg``).

Splits are stratified and seeded, and written to JSON so a run can be reproduced or resumed.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.action.errors import EmptyDatasetError, LabelMismatchError
from models.action.video import FRAME_SUFFIXES, VIDEO_SUFFIXES

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Clip:
    path: Path
    label: int  # index into the model's labels

    @property
    def name(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"


def _is_clip(path: Path) -> bool:
    if path.is_dir():
        return any(p.suffix.lower() in FRAME_SUFFIXES for p in path.iterdir())
    return path.suffix.lower() in VIDEO_SUFFIXES


def class_folders(root: Path) -> list[str]:
    if not root.is_dir():
        raise EmptyDatasetError(f"{root}: no such data folder; expected DATA/<label>/*.mp4")
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise EmptyDatasetError(f"{root}: no class folders; put clips in DATA/<label>/*.mp4 "
                                f"(one folder per label)")
    return names


def list_clips(root: Path, labels: tuple[str, ...]) -> list[Clip]:
    """Every clip under ``root``, labelled by folder; folders must be exactly ``labels``."""
    found = class_folders(root)
    if sorted(found) != sorted(labels):
        raise LabelMismatchError(str(root), found, list(labels))
    clips = []
    for index, label in enumerate(labels):
        folder_clips = [Clip(p, index) for p in sorted((root / label).iterdir()) if _is_clip(p)]
        if not folder_clips:
            raise EmptyDatasetError(f"{root / label}: no clips (.mp4/.avi/... or folders of .jpg); "
                                    f"every label needs examples")
        clips.extend(folder_clips)
    return clips


def class_balance(clips: list[Clip], labels: tuple[str, ...]) -> dict[str, int]:
    """Clips per label; logs a warning when the largest class is over 1.5x the smallest."""
    counts = Counter(c.label for c in clips)
    balance = {label: counts.get(i, 0) for i, label in enumerate(labels)}
    if max(balance.values()) > 1.5 * max(min(balance.values()), 1):
        logger.warning("class imbalance %s: the loss is class-weighted to compensate", balance)
    return balance


def stratified_split(labels: Sequence[int], val: float, test: float, seed: int) -> dict[str, list[int]]:
    """Indices of ``train``/``val``/``test`` clips, the same fractions within every class."""
    rng = np.random.default_rng(seed)
    split: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label in sorted(set(labels)):
        idx = rng.permutation([i for i, y in enumerate(labels) if y == label]).tolist()
        n_test, n_val = round(len(idx) * test), round(len(idx) * val)
        split["test"] += idx[:n_test]
        split["val"] += idx[n_test:n_test + n_val]
        split["train"] += idx[n_test + n_val:]
    return {k: sorted(v) for k, v in split.items()}


def stratified_folds(labels: Sequence[int], k: int, seed: int) -> list[list[int]]:
    """``k`` disjoint test folds covering every clip, each with the class mix of the whole."""
    rng = np.random.default_rng(seed)
    folds: list[list[int]] = [[] for _ in range(k)]
    for label in sorted(set(labels)):
        idx = rng.permutation([i for i, y in enumerate(labels) if y == label]).tolist()
        for j, i in enumerate(idx):
            folds[j % k].append(i)
    return [sorted(f) for f in folds]


def write_split(path: Path, clips: list[Clip], split: dict[str, list[int]]) -> Path:
    path.write_text(json.dumps({k: [str(clips[i].path) for i in v] for k, v in split.items()}, indent=1))
    return path


def read_split(path: Path, clips: list[Clip]) -> dict[str, list[int]]:
    """A split written by :func:`write_split`, as indices into ``clips``."""
    where = {str(c.path): i for i, c in enumerate(clips)}
    raw = json.loads(path.read_text())
    missing = [p for v in raw.values() for p in v if p not in where]
    if missing:
        raise EmptyDatasetError(f"{path}: {len(missing)} clip(s) of the saved split are not in the data "
                                f"folder (first: {missing[0]}); use the same data or start a new run")
    return {k: [where[p] for p in v] for k, v in raw.items()}
