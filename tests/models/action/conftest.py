"""Fixtures for the action-model tests: a few real fight clips and one tiny training run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

PER_CLASS = 3


@pytest.fixture(scope="session")
def fight_data(shared_data: Path) -> Path:
    """The shared fight clips (the session skips where ../shared/data is absent)."""
    return shared_data / "fight" / "train"


@pytest.fixture(scope="session")
def tiny_data(fight_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``PER_CLASS`` real clips per class, linked into a fresh data folder."""
    root = tmp_path_factory.mktemp("tiny_fight")
    for label in ("fight", "nofight"):
        (root / label).mkdir()
        for clip in sorted((fight_data / label).glob("*.mp4"))[:PER_CLASS]:
            (root / label / clip.name).symlink_to(clip)
    return root


@pytest.fixture(scope="session")
def tiny_cfg():  # type: ignore[no-untyped-def]
    from models.action.config import ActionConfig

    # small input and few epochs: the test exercises the code path, not the accuracy
    return ActionConfig(input_size=96, size=64, aug_views=1, frames=4, stage1_epochs=15, epochs=2, unfreeze=2,
                        batch=4, lr_head=3e-3, val_fraction=0.34, test_fraction=0.0, patience=50)


@pytest.fixture(scope="session")
def tiny_run(tiny_data: Path, tiny_cfg, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    """One complete training run folder on the tiny data."""
    from models.action.run import train_run

    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("run")
    train_run(tiny_data, out, tiny_cfg, cache_dir=tmp_path_factory.mktemp("cache"))
    return out
