"""The ``frame_delta`` runtime feature on real frames of the shipped sample clip and on known changes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.features import FRAME_FEATURES, create_feature
from pipeline.features.delta import KIND, ZERO, FrameDelta, encode_clip
from tests.conftest import PEOPLE_CLIP
from tests.support.video import rgb_frames


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return rgb_frames(PEOPLE_CLIP, 8, (96, 64))


def _flat(value: int, height: int = 64, width: int = 96) -> np.ndarray:
    return np.full((height, width, 3), value, np.uint8)


def test_registered_kind_creates_a_delta() -> None:
    assert KIND == "frame_delta" and KIND in FRAME_FEATURES
    feature = create_feature({"kind": KIND, "height": 64, "width": 96, "gain": 2.0})
    assert isinstance(feature, FrameDelta) and feature.gain == 2.0


def test_first_frame_is_flat_grey(clip: np.ndarray) -> None:
    first = create_feature({"kind": KIND, "height": 64, "width": 96})(clip[0])
    assert first.shape == (64, 96, 3) and first.dtype == np.uint8
    assert (first == ZERO).all()


def test_a_known_change_encodes_signed_and_clipped() -> None:
    feature = FrameDelta(64, 96, gain=3.0)
    before, after = _flat(100), _flat(100)
    after[:10] = 110  # +10 -> 127 + 30
    after[10:20] = 90  # -10 -> 127 - 30
    after[20:30] = 200  # +100 -> clipped at 255
    after[30:40] = 0  # -100 -> clipped at 0
    feature(before)
    delta = feature(after)
    assert [int(delta[r, 0, 0]) for r in (0, 10, 20, 30, 40)] == [157, 97, 255, 0, ZERO]


def test_other_frame_sizes_are_resized_to_the_configured_size() -> None:
    feature = FrameDelta(32, 48, gain=3.0)
    deltas = [feature(_flat(v, 224, 224)) for v in (100, 110)]
    assert [d.shape for d in deltas] == [(32, 48, 3)] * 2
    assert (deltas[1] == 157).all()


def test_each_instance_keeps_its_own_previous_frame(clip: np.ndarray) -> None:
    a, b = FrameDelta(64, 96), FrameDelta(64, 96)
    a(clip[0])
    assert (b(clip[5]) == ZERO).all()  # b's first frame, although a has seen one
    np.testing.assert_array_equal(a(clip[1]), encode_clip(clip[:2], 3.0)[1])  # a compares with clip[0]


def test_encode_clip_equals_the_feature_frame_by_frame(clip: np.ndarray) -> None:
    feature = FrameDelta(64, 96, gain=4.0)
    np.testing.assert_array_equal(np.stack([feature(f) for f in clip]), encode_clip(clip, 4.0))


def test_gain_must_be_positive() -> None:
    with pytest.raises(ValueError, match="gain must be > 0"):
        create_feature({"kind": KIND, "height": 64, "width": 96, "gain": 0})
