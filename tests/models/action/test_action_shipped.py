from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.action.cli import build_shipped, evaluate
from models.action.shipped import WEIGHTS, load_weights
from models.trunk import build_trunk
from pipeline.errors import ModelPackageError
from pipeline.modelpkg import load_package
from pipeline.runner import score_frames


@pytest.fixture(scope="module")
def shipped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not WEIGHTS.exists():
        pytest.skip(f"{WEIGHTS} not present")
    cfg, _, _ = load_weights()
    out = tmp_path_factory.mktemp("models")
    trunk = build_trunk(out / "trunk.onnx", cfg.size, cfg.size)
    return build_shipped(out, trunk)


def test_shipped_weights_are_small() -> None:
    if not WEIGHTS.exists():
        pytest.skip(f"{WEIGHTS} not present")
    assert WEIGHTS.stat().st_size < 20e6


def test_build_shipped_makes_a_valid_package(shipped: Path) -> None:
    m = load_package(shipped).manifest
    assert m.name == "fight" and m.alert_label == "fight" and m.window.fps == 5.0
    assert "cv5" in m.metrics


def test_shipped_scores_a_real_clip(shipped: Path, fight_data: Path) -> None:
    from models.action.evaluate import clip_frames

    package = load_package(shipped)
    frames = clip_frames(package, sorted((fight_data / "fight").glob("*.mp4"))[0])
    scores = score_frames(package, list(frames))
    assert scores.window_scores.shape[1] == 2
    np.testing.assert_allclose(scores.window_scores.sum(axis=1), 1.0, atol=1e-5)


def test_trunk_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    if not WEIGHTS.exists():
        pytest.skip(f"{WEIGHTS} not present")
    trunk = build_trunk(tmp_path / "trunk.onnx", 96, 96)
    with pytest.raises(ModelPackageError, match="build_trunk"):
        build_shipped(tmp_path, trunk)


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
