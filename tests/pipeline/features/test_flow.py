"""The ``flow_cells`` runtime feature on real Ped2 frames and on a known synthetic shift."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.features import FRAME_FEATURES, create_feature
from pipeline.features.flow import (
    BAND_MARGIN_PX,
    CHANNELS,
    KIND,
    borrow_first,
    cell_stats,
    create_dis,
    grid_shape,
    parse_flow,
)


@pytest.fixture(scope="module")
def ped2_frames(shared_data: Path) -> list[np.ndarray]:
    clip = shared_data / "ucsd_ped2" / "train" / "Train001"
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(clip.glob("*.jpg"))[:6]]


def test_registered_and_grid_matches_c4() -> None:
    assert KIND in FRAME_FEATURES
    assert grid_shape(240, 360) == (15, 23)  # SAME-padded stride 16: the trunk's c4 map


def test_first_frame_has_no_motion_then_pedestrians_move(ped2_frames: list[np.ndarray]) -> None:
    feature = create_feature({"kind": KIND, "height": 240, "width": 360})
    first = feature(ped2_frames[0])
    assert first.shape == (len(CHANNELS), 15, 23) and first.dtype == np.float32
    assert not first.any()
    later = [feature(f) for f in ped2_frames[1:]][-1]
    assert later[2].max() > 0.3  # walking people (slow at 10 fps: under 1 px per frame far away)
    assert np.median(later[2]) < 0.5  # most of the walkway is still


def test_known_shift_is_measured() -> None:
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (260, 380), dtype=np.uint8), (5, 5), 0)
    a, b = texture[10:250, 10:370], texture[10:250, 7:367]  # content moves 3 px right
    feature = create_feature({"kind": KIND, "height": 240, "width": 360, "preset": "medium"})
    feature(np.repeat(a[..., None], 3, axis=2))
    stats = feature(np.repeat(b[..., None], 3, axis=2))
    inner = stats[:, 2:-2, 2:-2]
    assert np.median(inner[0]) == pytest.approx(3.0, abs=0.3)
    assert np.median(np.abs(inner[1])) < 0.3


def test_other_frame_sizes_are_resized_to_the_package_input(ped2_frames: list[np.ndarray]) -> None:
    feature = create_feature({"kind": KIND, "height": 240, "width": 360})
    big = [cv2.resize(f, (720, 480)) for f in ped2_frames[:2]]
    assert [feature(f).shape for f in big] == [(4, 15, 23)] * 2


def test_cell_stats_pads_partial_cells() -> None:
    flow = np.zeros((20, 40, 2), np.float32)
    flow[:, 32:, 0] = 2.0  # the right partial column moves
    stats = cell_stats(flow, cell=16, moving_px=1.0, quantile=0.9)
    assert stats.shape == (4, 2, 3)
    assert stats[0, :, 2].tolist() == [2.0, 2.0] and stats[3, :, 2].tolist() == [1.0, 1.0]
    assert not stats[:, :, :2].any()


def test_unknown_preset_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="ultrafast, fast, medium, .*medium-s4, medium-s4-gd12"):
        create_feature({"kind": KIND, "height": 240, "width": 360, "preset": "slow"})


# (finest level, patch stride, gradient-descent iterations, variational refinement) each preset must build
DIS_SETTINGS = {
    "medium": (1, 3, 25, 5),
    "ultrafast-fine": (1, 4, 12, 0),
    "medium-norefine": (1, 3, 25, 0),
    "medium-s4": (1, 4, 25, 5),
    "medium-s4-gd12": (1, 4, 12, 5),
}


@pytest.mark.parametrize("preset", sorted(DIS_SETTINGS))
def test_derived_presets_build_dis_with_their_settings(preset: str) -> None:
    dis = create_dis(preset)
    got = (dis.getFinestScale(), dis.getPatchStride(), dis.getGradientDescentIterations(),
           dis.getVariationalRefinementIterations())
    assert got == DIS_SETTINGS[preset]
    assert dis.getPatchSize() == 8


@pytest.mark.parametrize("preset", ["medium-s4", "medium-s4-gd12"])
def test_cheaper_search_presets_measure_a_known_shift_and_walkers(preset: str,
                                                                   ped2_frames: list[np.ndarray]) -> None:
    """Round 5's presets (medium's finest level and refinement, a cheaper patch search): same units and
    grid as medium, a 3-px shift measured, and Ped2 walkers moving where medium sees them."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (260, 380), dtype=np.uint8), (5, 5), 0)
    a, b = texture[10:250, 10:370], texture[10:250, 7:367]  # content moves 3 px right
    feature = create_feature({"kind": KIND, "height": 240, "width": 360, "preset": preset})
    feature(np.repeat(a[..., None], 3, axis=2))
    inner = feature(np.repeat(b[..., None], 3, axis=2))[:, 2:-2, 2:-2]
    assert np.median(inner[0]) == pytest.approx(3.0, abs=0.3)
    assert np.median(np.abs(inner[1])) < 0.3
    cheap = create_feature({"kind": KIND, "height": 240, "width": 360, "preset": preset})
    medium = create_feature({"kind": KIND, "height": 240, "width": 360, "preset": "medium"})
    for frame in ped2_frames:
        got, ref = cheap(frame), medium(frame)
    assert got.shape == ref.shape == (len(CHANNELS), 15, 23)
    moving = ref[2] > 0.3  # cells where medium sees a walker
    assert moving.sum() >= 3 and got[2][moving].mean() == pytest.approx(ref[2][moving].mean(), rel=0.2)
    assert not np.array_equal(got, ref)  # a different search, not medium under another name


@pytest.mark.parametrize("preset", ["fast", "medium"])
def test_half_resolution_flow_keeps_the_grid_and_input_pixel_units(preset: str) -> None:
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (260, 380), dtype=np.uint8), (5, 5), 0)
    a, b = texture[10:250, 10:370], texture[10:250, 6:366]  # content moves 4 px right (2 px at half size)
    feature = create_feature({"kind": KIND, "height": 240, "width": 360, "preset": preset, "scale": 0.5})
    assert feature.field(np.repeat(a[..., None], 3, axis=2)).shape == (120, 180, 2)  # type: ignore[attr-defined]
    stats = feature(np.repeat(b[..., None], 3, axis=2))
    assert stats.shape == (4, 15, 23)  # the c4 grid: 8-px cells at half size
    inner = stats[:, 2:-2, 2:-2]
    assert np.median(inner[0]) == pytest.approx(4.0, abs=0.4)  # in input pixels per frame
    assert np.median(inner[3]) == 1.0  # moving fraction against moving_px in input pixels


def test_bad_scale_and_first_frame_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="whole cells"):
        create_feature({"kind": KIND, "height": 240, "width": 360, "scale": 0.3})
    with pytest.raises(ValueError, match="zero, next"):
        create_feature({"kind": KIND, "height": 240, "width": 360, "first": "previous"})


def test_borrow_first_copies_the_second_frame_only() -> None:
    stats = np.arange(3 * 4 * 2 * 2, dtype=np.float32).reshape(3, 4, 2, 2)
    stats[0] = 0
    got = borrow_first(stats)
    np.testing.assert_array_equal(got[0], stats[1])
    np.testing.assert_array_equal(got[1:], stats[1:])
    assert not stats[0].any()  # the input is left alone
    np.testing.assert_array_equal(borrow_first(stats[:1]), stats[:1])  # one frame: nothing to borrow


def test_far_field_band_takes_the_fine_flow_above_and_the_cheap_flow_below(ped2_frames: list[np.ndarray]) -> None:
    """far_rows=5: rows 0-4 are a full-resolution medium pass on the top 5*16 + margin pixel rows,
    rows 5-14 the cheap whole-frame pass, each exactly as that flow alone computes them."""
    banded = create_feature({"kind": KIND, "height": 240, "width": 360, "preset": "ultrafast", "scale": 0.5,
                             "far_rows": 5, "far_preset": "medium"})
    cheap = create_feature({"kind": KIND, "height": 240, "width": 360, "preset": "ultrafast", "scale": 0.5})
    band_px = 5 * 16 + BAND_MARGIN_PX
    fine_band = create_feature({"kind": KIND, "height": band_px, "width": 360, "preset": "medium"})
    for frame in ped2_frames:
        got = banded(frame)
        assert got.shape == (len(CHANNELS), 15, 23) and got.dtype == np.float32
        # DIS is deterministic up to float rounding (OpenCV threads): ~1e-8 px/frame
        np.testing.assert_allclose(got[:, 5:], cheap(frame)[:, 5:], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got[:, :5], fine_band(frame[:band_px])[:, :5], rtol=1e-5, atol=1e-6)
    assert got[2, :5].max() > 0  # far-field walkers move in the band
    whole, band = banded.fields(ped2_frames[0])  # type: ignore[attr-defined]
    assert whole.shape == (120, 180, 2) and band is not None and band.shape == (band_px, 360, 2)


def test_far_field_band_is_in_input_pixels_per_frame() -> None:
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 256, (260, 380), dtype=np.uint8), (5, 5), 0)
    a, b = texture[10:250, 10:370], texture[10:250, 7:367]  # content moves 3 px right
    feature = create_feature({"kind": KIND, "height": 240, "width": 360, "preset": "fast", "scale": 0.5,
                              "far_rows": 4})
    feature(np.repeat(a[..., None], 3, axis=2))
    stats = feature(np.repeat(b[..., None], 3, axis=2))
    for rows in (slice(1, 4), slice(4, 13)):  # band (edges left out) and below it
        inner = stats[:, rows, 2:-2]
        assert np.median(inner[0]) == pytest.approx(3.0, abs=0.3)
        assert np.median(np.abs(inner[1])) < 0.3 and np.median(inner[3]) == 1.0


def test_parse_flow_and_band_errors() -> None:
    assert parse_flow("ultrafast@0.5+medium:6") == {"preset": "ultrafast", "scale": 0.5, "far_preset": "medium",
                                                    "far_rows": 6}
    assert parse_flow("fast") == {"preset": "fast", "scale": 1.0, "far_preset": "medium", "far_rows": 0}
    with pytest.raises(ValueError, match="needs its cell rows"):
        parse_flow("ultrafast+medium")
    with pytest.raises(ValueError, match="PRESET"):
        parse_flow("ultrafast+medium:top")
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        parse_flow("ultrafast+medium:16")
    with pytest.raises(ValueError, match="far-field DIS preset 'slow'"):
        parse_flow("ultrafast+slow:5")
    # a band as tall as the frame: the band pass covers it all (no margin beyond the frame)
    whole = create_feature({"kind": KIND, "height": 240, "width": 360, "preset": "ultrafast", "far_rows": 15})
    assert whole.band_px == 240  # type: ignore[attr-defined]
