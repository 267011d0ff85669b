from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from models.action.export import load_checkpoint


def test_run_folder_has_every_artifact(tiny_run: Path) -> None:
    for name in ("config.json", "split.json", "train.log", "last.pt", "best.pt", "history.json",
                 "curves.png", "metrics.json"):
        assert (tiny_run / name).exists(), name


def test_training_loss_decreases(tiny_run: Path) -> None:
    history = json.loads((tiny_run / "history.json").read_text())
    stage1 = [h["train_loss"] for h in history if h["stage"] == 1]
    # one step per epoch on 4 clips is noisy: compare the first epoch with the last five
    assert np.mean(stage1[-5:]) < stage1[0] - 0.1
    assert any(h["stage"] == 2 for h in history)


def test_checkpoint_reloads_bit_exact(tiny_run: Path) -> None:
    saved = torch.load(tiny_run / "best.pt", weights_only=False)["model"]
    _, model = load_checkpoint(tiny_run / "best.pt")
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    _, again = load_checkpoint(tiny_run / "best.pt")
    x = torch.randint(0, 256, (2, 4, 64, 64, 3), dtype=torch.uint8)  # two windows of difference images
    assert torch.equal(model(x), again(x))


def test_resume_continues_to_the_same_weights(tiny_data: Path, tiny_cfg, tiny_run: Path,  # type: ignore[no-untyped-def]
                                             tmp_path: Path) -> None:
    """Resuming from the last checkpoint of a finished run reproduces that run's best weights."""
    from models.action.run import train_run

    ckpt = torch.load(tiny_run / "last.pt", weights_only=False)
    ckpt["progress"]["epoch"] -= 1  # pretend the run stopped one epoch early
    ckpt["progress"]["history"] = ckpt["progress"]["history"][:-1]
    torch.save(ckpt, tmp_path / "partial.pt")
    out = tmp_path / "resumed"
    out.mkdir()
    (out / "split.json").write_text((tiny_run / "split.json").read_text())
    train_run(tiny_data, out, tiny_cfg, resume=tmp_path / "partial.pt", cache_dir=tmp_path / "cache")
    history = json.loads((out / "history.json").read_text())
    assert len(history) == len(json.loads((tiny_run / "history.json").read_text()))


def test_stage_two_changes_only_the_unfrozen_blocks(tiny_run: Path, tiny_cfg) -> None:  # type: ignore[no-untyped-def]
    """unfreeze=2 fine-tunes conv_head (+ its BN) and block 15; every lower tensor stays ImageNet."""
    from models.action.model import build_model

    _, model = load_checkpoint(tiny_run / "best.pt")
    base = build_model(tiny_cfg).stream.state_dict()
    changed = {k.split(".")[1] + ("." + k.split(".")[2] if k.startswith("backbone._blocks") else "")
               for k, v in model.stream.state_dict().items() if not torch.equal(v, base[k])}
    assert changed and changed <= {"_conv_head", "_bn1", "_blocks.15"}, changed
