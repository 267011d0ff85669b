"""The far-field probe: perspective from people's blobs, pasted movers where and when their labels say."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from models.anomaly.cache import FeatureCache
from models.anomaly.evaluate import read_labels
from models.anomaly.fit import AnomalyConfig
from models.anomaly.footage import FootageError
from models.anomaly.probe import (
    EVENT_FRAMES,
    KINDS,
    SPEED_FACTORS,
    Blob,
    Perspective,
    Sprite,
    build_probe,
    choose_index,
    fit_perspective,
    inject,
    split_clips,
)


def _blobs(a: float, horizon: float, rng: np.random.Generator) -> list[Blob]:
    feet = rng.integers(60, 230, 400)
    heights = np.round(a * (feet - horizon) + rng.normal(0, 1, len(feet))).astype(int)
    return [Blob(Path("clip"), 0, 10, int(f - h), 5, int(h)) for f, h in zip(feet, heights, strict=True)]


def test_the_perspective_is_recovered_from_people_at_different_depths() -> None:
    p = fit_perspective(_blobs(0.25, 20.0, np.random.default_rng(0)))
    assert p.a == pytest.approx(0.25, abs=0.01)
    assert p.horizon == pytest.approx(20.0, abs=4.0)
    assert p.height(100) == pytest.approx(20.0, abs=0.5)


def test_a_scene_whose_people_shrink_towards_the_camera_is_refused() -> None:
    blobs = [Blob(b.clip, 0, b.x, b.y, b.w, 60 - b.h) for b in _blobs(0.25, 20.0, np.random.default_rng(1))]
    with pytest.raises(FootageError, match="ground plane"):
        fit_perspective(blobs)


def _sprite(foot: int = 100, h: int = 20, w: int = 6) -> Sprite:
    return Sprite(np.full((h, w, 3), 255, np.uint8), np.ones((h, w), bool), foot, "test")


def _painted(frame: np.ndarray) -> tuple[float, float, int] | None:
    """(column centre, foot row, height) of the pasted pixels, None if none."""
    ys, xs = np.nonzero(frame[..., 0] > 128)
    return None if not len(xs) else (float(xs.mean()), float(ys.max() + 1), int(ys.max() - ys.min() + 1))


def test_a_crossing_mover_keeps_its_row_moves_at_its_speed_and_is_labelled_while_in_view() -> None:
    perspective = Perspective(0.25, 20.0)  # 20 px tall at foot row 100
    frames = [np.zeros((240, 360, 3), np.uint8) for _ in range(60)]
    labels = inject(frames, _sprite(), "cross", 0.1, perspective, 10, np.random.default_rng(0))  # 2 px per frame
    assert labels[10:10 + EVENT_FRAMES + 1].all() and labels.sum() == EVENT_FRAMES + 1
    assert all(_painted(f) is None for f in frames[:10] + frames[10 + EVENT_FRAMES:])
    tracks = [_painted(f) for f in frames[10:10 + EVENT_FRAMES]]
    assert all(t is not None and t[1] == 100 and t[2] == 20 for t in tracks)
    steps = np.diff([t[0] for t in tracks if t is not None])
    assert np.allclose(np.abs(steps), 2.0, atol=1.0) and abs(steps.mean()) == pytest.approx(2.0, abs=0.1)


def test_an_approaching_mover_comes_closer_and_grows_with_the_perspective() -> None:
    perspective = Perspective(0.25, 20.0)
    frames = [np.zeros((240, 360, 3), np.uint8) for _ in range(50)]
    inject(frames, _sprite(), "approach", 0.1, perspective, 5, np.random.default_rng(0))
    first, last = _painted(frames[5]), _painted(frames[5 + EVENT_FRAMES - 1])
    assert first is not None and last is not None
    assert last[1] > first[1] + 20  # feet lower in the frame: closer
    assert last[2] == pytest.approx(perspective.height(last[1]), abs=2)  # as tall as a person there


def test_a_mover_that_leaves_the_frame_ends_its_event_there() -> None:
    perspective = Perspective(0.25, 20.0)
    frames = [np.zeros((240, 360, 3), np.uint8) for _ in range(60)]
    labels = inject(frames, _sprite(foot=200, h=40), "approach", 0.3, perspective, 10, np.random.default_rng(0))
    visible = [i for i, f in enumerate(frames) if _painted(f) is not None]
    assert labels.sum() < EVENT_FRAMES + 1
    assert np.flatnonzero(labels).tolist() == list(range(10, visible[-1] + 2))


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="cross"):
        inject([np.zeros((240, 360, 3), np.uint8)] * 50, _sprite(), "jump", 0.1, Perspective(0.25, 20), 5,
               np.random.default_rng(0))


def test_ties_go_to_the_earlier_variant_and_unscorable_ones_are_skipped() -> None:
    assert choose_index([0.90, 0.9504, 0.9508, float("nan")]) == 1
    assert choose_index([float("nan"), 0.8, 0.95]) == 2
    assert choose_index([0.95, 0.9504], tie=0.0) == 1


def test_every_fourth_clip_is_probe_background_and_never_a_fit_clip() -> None:
    clips = [Path(f"Train{i:03d}") for i in range(1, 17)]
    fit, probe = split_clips(clips)
    assert [c.name for c in probe] == ["Train004", "Train008", "Train012", "Train016"]
    assert not set(fit) & set(probe) and len(fit) == 12


def _train_clips(shared_data: Path, root: Path, frames: int | None = None) -> Path:
    """``root`` holding Ped2 Train001-008 (their first ``frames`` frames, all by default) as symlinked files."""
    for i in range(1, 9):
        clip = shared_data / "ucsd_ped2" / "train" / f"Train{i:03d}"
        (root / clip.name).mkdir(parents=True)
        for frame in sorted(clip.glob("*.jpg"))[:frames]:
            (root / clip.name / frame.name).symlink_to(frame)
    return root


def test_probe_clips_differ_from_their_background_exactly_in_their_anomalous_frames(
        shared_data: Path, tmp_path: Path) -> None:
    train = shared_data / "ucsd_ped2" / "train"
    normal = _train_clips(shared_data, tmp_path / "normal")  # 6 fit clips, 2 probe clips (Train004, Train008)
    config = AnomalyConfig()
    made = build_probe(normal, tmp_path / "probe", FeatureCache(tmp_path / "cache", tmp_path / "unused.onnx"), config)
    assert made["probe_clips"] == ["Train004", "Train008"]
    assert made["perspective"]["a"] > 0 and 0 < made["walking_speed_heights_per_frame"] < 1
    labels = read_labels(tmp_path / "probe" / "labels.csv")
    assert len(labels) == 2 * len(KINDS) * len(SPEED_FACTORS)
    for name, y in labels.items():
        source = train / name.split("-")[0]
        originals = sorted(source.glob("*.jpg"))
        probe_frames = sorted((tmp_path / "probe" / name).glob("*.jpg"))
        assert len(probe_frames) == len(originals) == len(y)
        assert 2 <= y.sum() <= EVENT_FRAMES + 1
        onset = int(np.flatnonzero(y)[0])
        diffs = [np.abs(cv2.imread(str(p)).astype(int) - cv2.imread(str(o)).astype(int)).max(axis=2)
                 for p, o in zip(probe_frames, originals, strict=True)]
        pasted = [int((d > 15).sum()) for d in diffs]
        assert pasted[onset] > 10  # a person-sized patch is there from its first labelled frame
        assert all(pasted[i] < 5 for i in np.flatnonzero(y == 0))  # elsewhere only JPEG re-encoding noise


def test_probe_report_chooses_on_the_probe_and_nests_the_test_clips(labelled_cuts, shared_data: Path,  # type: ignore[no-untyped-def]
                                                                    trunk_240: Path, tmp_path: Path) -> None:
    """Two designs on short clips: round 9's choice is the better probe AUC; round 10's nested CV holds out
    each test clip (never a probe clip) and chooses on the others and the probe; the report is written."""
    from models.anomaly.cv import SHIPPED, Variant
    from models.anomaly.probe import probe_report

    data, labels_csv = labelled_cuts
    normal = _train_clips(shared_data, tmp_path / "normal", frames=60)
    both_parts = Variant(pool="row", appearance_weight=1.0, appearance_pool="row", flow_first="next",
                         appearance_frames="last")
    report = probe_report(normal, data, labels_csv, tmp_path / "out", trunk_240, tmp_path / "cache",
                          (SHIPPED, both_parts))
    rows = report["variants"]
    assert [r["variant"] for r in rows] == [SHIPPED.name, both_parts.name]
    assert report["chosen"] == max(rows, key=lambda r: r["probe_auc"])["variant"]
    folds = report["nested_with_probe"]["folds"]
    assert sorted(f["held_out"] for f in folds) == sorted(read_labels(labels_csv))
    assert all(f["variant"] in (SHIPPED.name, both_parts.name) for f in folds)
    assert report["probe"]["probe_clips"] == ["Train004", "Train008"] and len(report["probe"]["events"]) == 8
    assert (tmp_path / "out" / "probe.md").read_text().count("| Test0") == len(folds)
    # a rerun makes the same probe clips: their folder is named by content, and the cache keeps their features
    again = probe_report(normal, data, labels_csv, tmp_path / "out", trunk_240, tmp_path / "cache", (SHIPPED,))
    assert again["probe"]["clips_dir"] == report["probe"]["clips_dir"]
    assert again["variants"][0]["probe_auc"] == rows[0]["probe_auc"]


def test_probe_command_needs_normal_footage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from models.anomaly import cli

    assert cli.probe(None, tmp_path, tmp_path / "labels.csv", False) == 2
    assert "--probe needs --normal" in capsys.readouterr().err


def test_probe_clips_too_short_for_an_event_are_a_clear_error(shared_data: Path, tmp_path: Path) -> None:
    normal = _train_clips(shared_data, tmp_path / "normal", frames=40)
    with pytest.raises(FootageError, match=r"Train004: has 40 frames; a probe clip needs at least 51"):
        build_probe(normal, tmp_path / "probe", FeatureCache(tmp_path / "cache", tmp_path / "unused.onnx"),
                    AnomalyConfig())
