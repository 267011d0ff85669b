"""Anomaly fitter pieces on real Ped2 flow: perspective-aware (per-row) motion statistics and motion modes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.calibration import (
    MOTION_MODES,
    anomaly_maps,
    anomaly_window,
    appearance_banks,
    appearance_map,
    fit_anomaly_motion_appearance,
    flow_statistics,
    last_frame_window_scores,
    motion_state,
    persist_maps,
    sliding_window_means,
    window_stack,
)
from pipeline.features import create_feature

FRAMES = 40


def _flow(clip: Path) -> np.ndarray:
    feature = create_feature({"kind": "flow_cells", "height": 240, "width": 360})
    paths = sorted(clip.glob("*.jpg"))[:FRAMES]
    return np.stack([feature(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)) for p in paths])


@pytest.fixture(scope="module")
def train_flows(shared_data: Path) -> tuple[np.ndarray, np.ndarray]:
    train = shared_data / "ucsd_ped2" / "train"
    return _flow(train / "Train001"), _flow(train / "Train002")


def test_row_statistics_make_far_and_near_walkers_comparable(train_flows: tuple[np.ndarray, np.ndarray]) -> None:
    fit, other = train_flows
    mean, inv_std = flow_statistics(fit, var_floor=0.01, pool="row")
    assert (inv_std == inv_std[:, :, :1]).all()  # one statistic per image row
    raw = np.percentile(other[:, 2], 99, axis=(0, 2))  # walkers' pixel speed per row, on another clip
    z = np.percentile((other[:, 2] - mean[2]) * inv_std[2], 99, axis=(0, 2))
    walkway = np.flatnonzero(raw > 0.5)
    far, near = walkway[np.argmin(raw[walkway])], walkway[np.argmax(raw[walkway])]
    assert far < near  # the far field is higher in the image
    assert raw[near] / raw[far] > 2  # in pixels a near walker moves over twice as fast...
    assert 1 / 1.6 < z[near] / z[far] < 1.6  # ...normalised per row they are alike
    assert inv_std[2, far, 0] > 1.5 * inv_std[2, near, 0]  # the far field is amplified


def test_cell_pool_keeps_per_cell_statistics(train_flows: tuple[np.ndarray, np.ndarray]) -> None:
    fit, _ = train_flows
    mean, inv_std = flow_statistics(fit, var_floor=0.01, pool="cell")
    np.testing.assert_allclose(mean, fit.mean(axis=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown motion pool 'column'"):
        flow_statistics(fit, 0.01, "column")


def test_motion_modes_clip_and_drop_channels(train_flows: tuple[np.ndarray, np.ndarray]) -> None:
    fit, other = train_flows
    full, speed = motion_state(fit, 0.01, "cell", "all"), motion_state(fit, 0.01, "cell", "speed")
    assert set(full) == {"flow_mean", "flow_inv_std", "flow_lower"} and set(MOTION_MODES) >= {"all", "speed"}
    assert not speed["flow_inv_std"][[0, 1, 3]].any() and (speed["flow_lower"][2] == 0).all()
    z = np.maximum((other - speed["flow_mean"]) * speed["flow_inv_std"], speed["flow_lower"])
    assert (z[:, 2] >= 0).all()  # slower than normal never counts
    with pytest.raises(ValueError, match="unknown motion mode"):
        motion_state(fit, 0.01, "cell", "loud")


def test_window_frame_score_smooths() -> None:
    maps = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 2, 2)
    peak, window = anomaly_window(maps, np.ones(1)), anomaly_window(maps, np.ones(1), "window")
    np.testing.assert_array_equal(peak["scores"], window["scores"])
    # frame k reads its own and the following peaks of the window: the first the window score
    peaks = peak["frame_scores"]
    np.testing.assert_allclose(window["frame_scores"][:, 0], peak["scores"][:, 0])
    np.testing.assert_allclose(window["frame_scores"][:, 1], peaks[:, 1:].mean(axis=1))
    np.testing.assert_allclose(window["frame_scores"][:, 2], peaks[:, 2])
    np.testing.assert_array_equal(peak["frame_scores"], maps.reshape(2, 3, -1).max(-1))


def test_row_appearance_memory_is_shared_along_the_row() -> None:
    rng = np.random.default_rng(0)
    c4 = rng.standard_normal((12, 8, 3, 5)).astype(np.float32)  # [F, C, h, w]
    cell = appearance_banks(c4, 4, seed=0, pool="cell")
    row = appearance_banks(c4, 4, seed=0, pool="row")
    assert cell.shape == row.shape == (15, 4, 8)
    for y in range(3):
        block = row[y * 5:(y + 1) * 5]
        assert (block == block[:1]).all()  # every cell of the row reads the same memory
        seen = c4[:, :, y, :].transpose(0, 2, 1).reshape(-1, 8)  # what the row's cells saw
        for kept in block[0]:
            assert np.isclose(seen, kept).all(axis=1).any()  # kept rows are real features of that row
    with pytest.raises(ValueError, match="unknown appearance pool"):
        appearance_banks(c4, 4, 0, "scene")


def test_row_memory_stored_once_scores_as_the_repeated_memory() -> None:
    """bank_rows: a row memory [h, K, C] instead of [h*w, K, C] repeated per cell; same entries, and the
    fitter's maps, weights and scale equal the repeated layout's to float32 rounding."""
    rng = np.random.default_rng(1)
    c4 = rng.standard_normal((30, 8, 3, 5)).astype(np.float32) * 3  # [F, C, h, w]
    flow = rng.standard_normal((30, 4, 3, 5)).astype(np.float32)
    params = {"appearance_pool": "row", "pool": "row", "bank_size": 6, "appearance_weight": 1.0}
    repeated = fit_anomaly_motion_appearance({"trunk.c4": c4, "runtime.flow": flow}, 3, params)
    once = fit_anomaly_motion_appearance({"trunk.c4": c4, "runtime.flow": flow}, 3, {**params, "bank_rows": True})
    assert repeated["bank"].shape == (15, 6, 8) and once["bank"].shape == (3, 6, 8) and once["bank_sq"].shape == (3, 6)
    np.testing.assert_array_equal(np.repeat(once["bank"], 5, axis=0), repeated["bank"])
    for key in ("weights", "scale"):
        np.testing.assert_allclose(once[key], repeated[key], rtol=1e-5, err_msg=key)
    test = rng.standard_normal((7, 8, 3, 5)).astype(np.float32) * 3
    test_flow = rng.standard_normal((7, 4, 3, 5)).astype(np.float32)
    want = anomaly_maps(test, test_flow, repeated)
    np.testing.assert_allclose(anomaly_maps(test, test_flow, once), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(appearance_map(test, once, chunk=2), appearance_map(test, repeated),
                               rtol=1e-5, atol=1e-5)
    # a cell memory is per cell whatever bank_rows says
    cell = fit_anomaly_motion_appearance({"trunk.c4": c4, "runtime.flow": flow}, 3,
                                         {**params, "appearance_pool": "cell", "bank_rows": True})
    assert cell["bank"].shape == (15, 6, 8)
    with pytest.raises(ValueError, match="refit the package"):
        appearance_map(test, {"bank": once["bank"][:2], "bank_sq": once["bank_sq"][:2]})


def test_last_frame_window_scores_pair_each_frame_motion_with_the_window_last_appearance() -> None:
    rng = np.random.default_rng(0)
    motion, appearance = rng.random((12, 3, 4), np.float32), rng.random((12, 3, 4), np.float32)
    got = last_frame_window_scores(motion, appearance, 3)
    want = [np.mean([(motion[k] + appearance[j + 2]).max() for k in range(j, j + 3)]) for j in range(10)]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # an appearance that never changes gives the per-frame window means
    still = np.repeat(appearance[:1], 12, axis=0)
    peaks = (motion + still).reshape(12, -1).max(axis=1)
    np.testing.assert_allclose(last_frame_window_scores(motion, still, 3),
                               sliding_window_means(peaks[:, None], 3)[:, 0], rtol=1e-6)
    # windows stay inside a segment (live calibration across gaps)
    segments = np.array([0] * 5 + [1] * 7)
    inside = [j for j in range(10) if segments[j] == segments[j + 2]]
    np.testing.assert_allclose(last_frame_window_scores(motion, appearance, 3, segments), np.array(want)[inside],
                               rtol=1e-6)


def test_persistence_keeps_a_mover_and_drops_a_one_frame_blip() -> None:
    maps = np.zeros((1, 3, 6, 6), np.float32)
    for t in range(3):  # an object moving one cell a frame
        maps[0, t, 2, 1 + t] = 4.0
    maps[0, 1, 5, 5] = 9.0  # a blip in the middle frame only
    kept = persist_maps(maps)
    assert [kept[0, t, 2, 1 + t] for t in range(3)] == [4.0, 4.0, 4.0]
    assert kept[0, 1, 5, 5] == 0.0 and kept.max() == 4.0
    # a weaker confirmation caps the level; two cells away is no confirmation
    maps[0, 1, 2, 2] = 2.0
    assert persist_maps(maps)[0, 0, 2, 1] == 2.0
    far = np.zeros((1, 2, 6, 6), np.float32)
    far[0, 0, 0, 0], far[0, 1, 0, 2] = 5.0, 5.0
    assert persist_maps(far).max() == 0.0
    # a one-frame window has nothing to confirm it: unchanged
    np.testing.assert_array_equal(persist_maps(maps[:, :1]), maps[:, :1])


def test_window_stack_reads_each_frame_or_the_window_last_appearance() -> None:
    rng = np.random.default_rng(0)
    motion, appearance = rng.random((6, 2, 3), np.float32), rng.random((6, 2, 3), np.float32)
    every, last = window_stack(motion, appearance, 3), window_stack(motion, appearance, 3, "last")
    assert every.shape == last.shape == (4, 3, 2, 3)
    np.testing.assert_allclose(every[1, 2], motion[3] + appearance[3])
    np.testing.assert_allclose(last[1, 0], motion[1] + appearance[3])
    # without persistence the last-appearance windows score as last_frame_window_scores
    np.testing.assert_allclose(last.reshape(4, 3, -1).max(-1).mean(1),
                               last_frame_window_scores(motion, appearance, 3), rtol=1e-6)


def test_a_motion_only_fit_needs_no_appearance_and_a_weighted_one_says_what_is_missing(
        train_flows: tuple[np.ndarray, np.ndarray]) -> None:
    flow = np.concatenate(train_flows)
    rng = np.random.default_rng(0)
    c4 = rng.normal(0, 1, (len(flow), 8, *flow.shape[2:])).astype(np.float32)
    params = {"appearance_weight": 0.0, "pool": "cell", "motion_mode": "faster", "bank_size": 4}
    only = fit_anomaly_motion_appearance({"runtime.flow": flow}, 5, params)
    both = fit_anomaly_motion_appearance({"runtime.flow": flow, "trunk.c4": c4}, 5, params)
    assert "bank" not in only and "bank" in both and only["weights"][1] == 0
    for key in only:  # the memory at weight 0 changes nothing the motion-only state holds
        np.testing.assert_array_equal(only[key], both[key], err_msg=key)
    maps = anomaly_maps(None, flow[:5], only)
    np.testing.assert_array_equal(maps, anomaly_maps(c4[:5], flow[:5], both))
    with pytest.raises(ValueError, match="appearance feature 'trunk.c4'"):
        fit_anomaly_motion_appearance({"runtime.flow": flow}, 5, {**params, "appearance_weight": 0.5})
    with pytest.raises(ValueError, match="motion feature 'runtime.flow'"):
        fit_anomaly_motion_appearance({"trunk.c4": c4}, 5, params)
    with pytest.raises(ValueError, match="need the c4 features"):
        anomaly_maps(None, flow[:5], both)
