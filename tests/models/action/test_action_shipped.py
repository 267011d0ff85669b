from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.action.cli import build_shipped, evaluate
from models.action.shipped import WEIGHTS, load_weights
from pipeline.errors import ModelPackageError
from pipeline.modelpkg import load_package
from pipeline.runner import score_frames


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not WEIGHTS.exists():
        pytest.skip(f"{WEIGHTS} not present")
    return build_shipped(tmp_path_factory.mktemp("models"))


def test_shipped_weights_are_small() -> None:
    if not WEIGHTS.exists():
        pytest.skip(f"{WEIGHTS} not present")
    assert WEIGHTS.stat().st_size < 20e6


def test_build_shipped_makes_a_valid_package(shipped: Path) -> None:
    m = load_package(shipped).manifest
    assert m.name == "fight" and m.alert_label == "fight" and m.window.fps == 10.0
    assert "cv5" in m.metrics


def test_shipped_scores_a_real_clip(shipped: Path, fight_data: Path) -> None:
    from models.action.evaluate import clip_frames

    package = load_package(shipped)
    frames = clip_frames(package, sorted((fight_data / "fight").glob("*.mp4"))[0])
    scores = score_frames(package, list(frames))
    assert scores.window_scores.shape[1] == 2
    np.testing.assert_allclose(scores.window_scores.sum(axis=1), 1.0, atol=1e-5)


def test_missing_weights_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match="restore models/weights/"):
        load_weights(tmp_path / "fight.npz")


def test_shipped_weights_rebuild_the_saved_model(tmp_path: Path) -> None:
    """save_weights -> load_weights round-trips: float16 differences lose nothing measurable."""
    import torch

    from models.action.shipped import save_weights

    if not WEIGHTS.exists():
        pytest.skip(f"{WEIGHTS} not present")
    cfg, model, meta = load_weights()
    again_cfg, again, _ = load_weights(save_weights(model, cfg, meta, tmp_path / "copy.npz"))
    x = torch.randint(0, 256, (2, cfg.frames, cfg.size, cfg.size, 3), dtype=torch.uint8)
    with torch.no_grad():
        np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), atol=1e-3)
    assert again_cfg == cfg


def test_eval_cli_prints_metrics_json_last(shipped: Path, tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate(str(shipped), tiny_data, as_json=True) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"accuracy", "precision", "recall", "f1", "auc", "n"} <= set(metrics)
    assert metrics["n"] == 6


def test_eval_cli_label_mismatch_exits_2(shipped: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "walking").mkdir()
    (tmp_path / "fight").mkdir()
    assert evaluate(str(shipped), tmp_path, as_json=True) == 2
    assert "do not match the model labels" in capsys.readouterr().err
