from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.action.export import export_checkpoint, load_checkpoint
from pipeline.modelpkg import load_package
from pipeline.runner import score_frames


@pytest.fixture(scope="module")
def package(tiny_run: Path, tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pkg") / "fight-tiny"
    report = export_checkpoint(tiny_run / "best.pt", out, calibration=tiny_data)
    return out, report


def test_export_parity_on_real_clips(package: tuple[Path, dict]) -> None:
    _, report = package
    assert report["parity"]["max_abs_diff"] < 1e-4
    assert report["parity"]["top1_agreement"] == 1.0


def test_package_manifest_follows_the_runtime_contract(package: tuple[Path, dict], tiny_cfg) -> None:  # type: ignore[no-untyped-def]
    m = load_package(package[0]).manifest
    assert [(g.name, g.over) for g in m.graphs] == [("motion", "frame"), ("head", "window")]
    assert m.graph("motion").inputs == {"delta": "runtime.delta"}
    assert m.runtime_features["delta"] == {"kind": "frame_delta", "height": tiny_cfg.size, "width": tiny_cfg.size,
                                           "gain": tiny_cfg.gain}
    assert m.labels == ["nofight", "fight"] and m.alert_label == "fight" and m.task == "action"
    assert (m.window.frames, m.window.fps, m.input.height) == (tiny_cfg.frames, tiny_cfg.fps, tiny_cfg.input_size)


def test_runner_scores_match_torch(package: tuple[Path, dict], tiny_run: Path, tiny_data: Path) -> None:
    """The live runner (runtime frame_delta feature -> motion graph -> head) equals torch end to end."""
    from models.action.export import read_window_clip, torch_window_scores

    cfg, model = load_checkpoint(tiny_run / "best.pt")
    frames = read_window_clip(sorted((tiny_data / "fight").iterdir())[0], cfg)
    got = score_frames(load_package(package[0]), list(frames), stride=1)
    ref = torch_window_scores(model, frames, cfg)
    assert got.window_scores.shape == ref.shape
    np.testing.assert_allclose(got.window_scores, ref, atol=1e-4)
    assert got.window_end.tolist() == list(range(cfg.frames - 1, len(frames)))


def test_int8_package_agrees_with_fp32(tiny_run: Path, tiny_data: Path, tmp_path: Path) -> None:
    report = export_checkpoint(tiny_run / "best.pt", tmp_path / "fight-int8", int8=True, calibration=tiny_data)
    m = load_package(tmp_path / "fight-int8").manifest
    assert "INT8" in m.description
    assert report["int8"]["windows"] > 0 and report["int8"]["top1_agreement_vs_fp32"] >= 0.8
