"""Clip-consistent augmentation: one draw for the whole clip, within the configured strength."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from models.action.augment import ClipAugment
from models.action.config import ActionConfig


def test_one_draw_applies_the_same_crop_flip_and_colour_to_every_frame() -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for _ in range(20):
        out = ClipAugment.draw(rng, 0.5, 0.3).apply(np.stack([frame] * 4), 32)
        assert out.shape == (4, 32, 32, 3) and out.dtype == np.uint8
        assert all(np.array_equal(out[0], f) for f in out[1:])  # no flicker the head could read as motion


def test_draws_stay_inside_the_frame_and_the_configured_strength() -> None:
    rng = np.random.default_rng(1)
    for min_area, jitter in [(0.5, 0.3), (0.9, 0.05)]:
        draws = [ClipAugment.draw(rng, min_area, jitter) for _ in range(500)]
        for d in draws:
            assert 0 < d.w <= 1 and 0 < d.h <= 1 and d.x0 + d.w <= 1 + 1e-9 and d.y0 + d.h <= 1 + 1e-9
            assert all(1 - jitter <= f <= 1 + jitter for f in (d.brightness, d.contrast, d.saturation))
        areas = np.array([d.w * d.h for d in draws])
        # the aspect change can clip one side to the frame, so an area may exceed the draw, never by far less
        assert areas.min() >= 0.85 * min_area
        assert {d.flip for d in draws} == {True, False}


def test_milder_draws_keep_more_of_the_frame() -> None:
    rng = np.random.default_rng(2)
    strong = np.mean([(d := ClipAugment.draw(rng, 0.5, 0.3)).w * d.h for _ in range(500)])
    mild = np.mean([(d := ClipAugment.draw(rng, 0.8, 0.1)).w * d.h for _ in range(500)])
    assert mild > strong + 0.1


def test_zero_jitter_leaves_colours_alone() -> None:
    grey = np.full((2, 40, 40, 3), 90, dtype=np.uint8)
    rng = np.random.default_rng(3)
    assert all(np.array_equal(ClipAugment.draw(rng, 0.5, 0.0).apply(grey, 16), grey[:, :16, :16]) for _ in range(10))
    shifted = [ClipAugment.draw(rng, 0.5, 0.3).apply(grey, 16) for _ in range(10)]
    assert any(not np.array_equal(s, grey[:, :16, :16]) for s in shifted)


@pytest.mark.parametrize("field,value", [("min_crop_area", 0.0), ("min_crop_area", 1.5), ("jitter", 1.0)])
def test_config_rejects_impossible_strengths(field: str, value: float) -> None:
    with pytest.raises(ValidationError, match=field):
        ActionConfig.model_validate({field: value})
