"""The anomaly package on real Ped2 frames: deterministic fit, ONNX == numpy reference, live
calibration through the runner, clear errors on unusable footage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from models.anomaly import cli
from models.anomaly.cv import Variant
from models.anomaly.evaluate import evaluate_package, frame_heatmap, read_labels
from models.anomaly.fit import APPEARANCE, FITTER, MOTION, AnomalyConfig, fit_package
from models.anomaly.footage import FootageError
from models.anomaly.scorer import OUTPUTS, STATE_INPUTS
from pipeline.calibration import FITTERS, anomaly_maps, anomaly_window
from pipeline.camera_state import StateStore
from pipeline.engines import create_engine
from pipeline.errors import VidwatchError
from pipeline.features import create_feature
from pipeline.modelpkg import ModelPackage, load_package
from pipeline.runner import FrameMeta, PackageRunner, Subscription, WindowResult, score_frames

FRAMES_PER_CLIP = 16
# The window graph's mechanics (ONNX == numpy, live calibration) are tested on a design using both parts,
# motion and appearance, with a 3-frame window: rounds 2-9's shipped design. The shipped default (motion
# only, a 9-frame mean: round 10) is one grid variant; it is fitted and scored through the runner below too.
BOTH_PARTS = Variant(pool="row", appearance_weight=1.0, appearance_pool="row", flow_first="next",
                     appearance_frames="last").config()


@pytest.fixture(scope="module")
def ped2(shared_data: Path) -> Path:
    return shared_data / "ucsd_ped2"


@pytest.fixture(scope="module")
def trunk(trunk_240: Path) -> Path:
    return trunk_240


@pytest.fixture(scope="module")
def normal_dir(ped2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real train clips, cut short, in nested folders (fitting searches recursively)."""
    root = tmp_path_factory.mktemp("normal")
    for clip in ("Train001", "Train002"):
        target = root / "camera" / clip
        target.mkdir(parents=True)
        for frame in sorted((ped2 / "train" / clip).glob("*.jpg"))[:FRAMES_PER_CLIP]:
            (target / frame.name).symlink_to(frame)
    return root


@pytest.fixture(scope="module")
def fitted(normal_dir: Path, trunk: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("packages")
    return tuple(fit_package(normal_dir, root / name, seed=0, trunk=trunk, config=BOTH_PARTS)  # type: ignore[return-value]
                 for name in ("a", "b"))


def _frames(ped2: Path, clip: str, start: int, count: int) -> list[np.ndarray]:
    paths = sorted((ped2 / "test" / clip).glob("*.jpg"))[start:start + count]
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


def test_fit_is_deterministic_with_a_seed(fitted: tuple[Path, Path]) -> None:
    a, b = (load_package(p) for p in fitted)
    state_a, state_b = a.shipped_state(), b.shipped_state()
    assert state_a is not None and state_b is not None and set(state_a) == set(state_b)
    for key in state_a:
        np.testing.assert_array_equal(state_a[key], state_b[key], err_msg=key)
    assert a.manifest.graph("anomaly").sha256 == b.manifest.graph("anomaly").sha256
    assert a.manifest.calibration is not None and a.manifest.calibration.fit == FITTER
    assert a.manifest.metrics["fit"]["frames"] == 2 * FRAMES_PER_CLIP


def _two_windows_of_a_cyclist(package: ModelPackage, trunk: Path, ped2: Path
                              ) -> tuple[np.ndarray, np.ndarray, Any, dict[str, np.ndarray]]:
    """Ped2 Test002 frames 100-105 (a cyclist crosses): their ``c4`` and flow, the package's window
    graph, and its two 3-frame windows' frame inputs (state inputs left to the caller)."""
    frames = _frames(ped2, "Test002", 100, 6)
    flow = create_feature(package.manifest.runtime_features["flow"])
    motion = np.stack([flow(f) for f in frames])
    c4 = create_engine("onnxruntime", trunk, {}).run({"frames": np.stack(frames)})["c4"]
    window = package.manifest.window.frames
    graph = create_engine("onnxruntime", package.graph_path(package.manifest.graph("anomaly")), {})
    inputs = {"c4": c4.reshape(2, window, *c4.shape[1:]), "flow": motion.reshape(2, window, *motion.shape[1:])}
    return c4, motion, graph, inputs


def test_onnx_scorer_matches_numpy_reference(fitted: tuple[Path, Path], trunk: Path, ped2: Path) -> None:
    package = load_package(fitted[0])
    state = package.shipped_state()
    assert state is not None
    c4, motion, graph, inputs = _two_windows_of_a_cyclist(package, trunk, ped2)
    got = graph.run({**inputs, **{k: state[k] for k in STATE_INPUTS}})
    maps = anomaly_maps(c4, motion, state).reshape(2, package.manifest.window.frames, *c4.shape[2:])
    want = anomaly_window(maps, state["scale"])
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4, err_msg=name)
    assert got["scores"].shape == (2, 1) and got["heatmap"].shape == (2, 15, 23)


def test_offline_scoring_uses_the_runner(fitted: tuple[Path, Path], ped2: Path) -> None:
    package = load_package(fitted[0])
    result = score_frames(package, _frames(ped2, "Test002", 0, 8))
    assert result.frame_scores.shape == (8,) and np.isfinite(result.frame_scores).all()
    assert result.window_scores.shape == (8 - package.manifest.window.frames + 1, 1)
    assert result.heatmaps[0].shape == (15, 23)


def _calibrate_live(package: ModelPackage, frames: list[np.ndarray], calibrate_frames: int = 16
                    ) -> tuple[list[WindowResult], dict[str, np.ndarray] | None]:
    """Feed ``frames`` to one camera that calibrates for ``calibrate_frames`` frames (10 fps), 8 frames a
    batch: its window results and the state it fitted."""
    runner = PackageRunner([package])
    runner.add_camera("cam", [Subscription(package.name, calibrate_seconds=calibrate_frames / 10)])
    results: list[WindowResult] = []
    for start in range(0, len(frames), 8):
        metas = [FrameMeta("cam", i, 0.0, i / 10) for i in range(start, min(start + 8, len(frames)))]
        results += runner.process(np.stack(frames[start:start + 8]), metas)
        if start == calibrate_frames:  # calibration fits in a thread: let it finish on a loaded machine
            assert runner.camera_states("cam")[package.name].wait_fitted(120)
    return results, runner.camera_states("cam")[package.name].state


def test_a_camera_calibrates_itself_live(fitted: tuple[Path, Path], ped2: Path) -> None:
    package: ModelPackage = load_package(fitted[0])
    results, state = _calibrate_live(package, _frames(ped2, "Test001", 0, 30))
    assert state is not None and set(state) == set(STATE_INPUTS)
    assert results and all(np.isfinite(r.scores).all() for r in results)
    assert FITTERS.get(FITTER) is not None and package.manifest.calibration.collect == [APPEARANCE, MOTION]


def test_the_shipped_default_is_motion_only_runs_no_trunk_and_scores_as_the_cv(
        normal_dir: Path, trunk: Path, ped2: Path, tmp_path: Path) -> None:
    """Round 10's design has appearance weight 0: its package has no trunk graph and no appearance memory,
    collects only the flow to calibrate, and scores every frame as the CV assembles the same design with
    a fitted memory at weight 0 (``cv.last_appearance_scores``); the fitter's scale is the same too."""
    from models.anomaly.cv import SHIPPED, last_appearance_scores
    from models.anomaly.fit import extract_features
    from models.anomaly.footage import find_clips
    from models.anomaly.scorer import MOTION_STATE_INPUTS
    from pipeline.calibration import anomaly_parts, fit_anomaly_motion_appearance
    from pipeline.features.flow import borrow_first

    out = tmp_path / "default"
    fit_package(normal_dir, out, seed=0, trunk=trunk, config=BOTH_PARTS)
    assert (out / "trunk.onnx").exists()
    package = load_package(fit_package(normal_dir, out, seed=0, trunk=trunk))  # refit into the same folder
    m, state = package.manifest, package.shipped_state()
    assert [g.name for g in m.graphs] == ["anomaly"] and not (out / "trunk.onnx").exists()  # no stale trunk
    assert m.window.frames == AnomalyConfig().window_frames == 9 and m.metrics["fit"]["frames"] == 2 * FRAMES_PER_CLIP
    assert m.calibration is not None and m.calibration.collect == [MOTION]
    assert state is not None and set(state) == set(MOTION_STATE_INPUTS) and state["weights"][1] == 0
    # the same design fitted with the appearance memory (weight 0): identical motion state, weights and scale
    features = extract_features(find_clips(normal_dir), trunk, AnomalyConfig())
    with_memory = fit_anomaly_motion_appearance(features, 9, {**AnomalyConfig().fit, "seed": 0})
    for key in MOTION_STATE_INPUTS:
        np.testing.assert_array_equal(state[key], with_memory[key], err_msg=key)
    frames = _frames(ped2, "Test002", 90, 20)  # walkers, then a cyclist from frame 94
    c4 = create_engine("onnxruntime", trunk, {}).run({"frames": np.stack(frames)})["c4"]
    flow = create_feature(m.runtime_features["flow"])
    motion, appearance = anomaly_parts(c4, borrow_first(np.stack([flow(f) for f in frames])), with_memory)
    weights, scale = with_memory["weights"], with_memory["scale"][0]
    _, want = last_appearance_scores(weights[0] * scale * motion, weights[1] * scale * appearance, 9, "window")
    live = score_frames(package, frames).frame_scores
    np.testing.assert_allclose(live, want, rtol=1e-4, atol=1e-4)
    assert SHIPPED.config() == AnomalyConfig() and live[-1] > live[0]  # the cyclist scores above the walkers
    # a camera calibrates it live from the flow alone
    results, live_state = _calibrate_live(package, _frames(ped2, "Test001", 0, 48), calibrate_frames=24)
    assert live_state is not None and set(live_state) == set(MOTION_STATE_INPUTS)
    assert results and all(np.isfinite(r.scores).all() for r in results)


def test_empty_folder_is_a_clear_error(tmp_path: Path, trunk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty" / "nested").mkdir(parents=True)
    with pytest.raises(FootageError, match=str(tmp_path / "empty")) as info:
        fit_package(tmp_path / "empty", tmp_path / "out", trunk=trunk)
    assert isinstance(info.value, VidwatchError) and "no video" in str(info.value)
    assert cli.fit(tmp_path / "empty", tmp_path / "out") == 2
    assert str(tmp_path / "empty") in capsys.readouterr().err
    assert cli.fit(tmp_path / "missing", tmp_path / "out") == 2


def test_unreadable_frames_are_a_clear_error(tmp_path: Path, trunk: Path) -> None:
    clip = tmp_path / "normal" / "Clip001"
    clip.mkdir(parents=True)
    (clip / "000.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(FootageError, match=f"{clip}: image 000.jpg cannot be decoded"):
        fit_package(tmp_path / "normal", tmp_path / "out", trunk=trunk)


def test_eval_through_the_runner_writes_plots_and_gallery(fitted: tuple[Path, Path], labelled_cuts,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    data, labels_csv = labelled_cuts
    package = load_package(fitted[0])
    metrics = evaluate_package(package, data, labels_csv, tmp_path / "eval", gallery_count=3)
    clips = sorted(read_labels(labels_csv))
    assert set(metrics["per_clip_auc"]) == set(clips) and metrics["n_frames"] == 16 * len(clips)
    for clip in clips:
        assert cv2.imread(str(tmp_path / "eval" / f"{clip}.png")) is not None
    gallery = metrics["gallery"]
    assert len(gallery["false_alarms"]) == 3 and len(gallery["misses"]) == 3
    labels = read_labels(labels_csv)
    assert all(labels[g["clip"]][g["frame"]] == 0 for g in gallery["false_alarms"])
    assert all(labels[g["clip"]][g["frame"]] == 1 for g in gallery["misses"])
    scores = [g["score"] for g in gallery["false_alarms"]]
    assert scores == sorted(scores, reverse=True)
    worst = gallery["false_alarms"][0]
    tile = cv2.imread(str(tmp_path / "eval" / "gallery" / worst["file"]))
    assert tile is not None and tile.shape == (240 + 18, 360, 3)
    assert cv2.imread(str(tmp_path / "eval" / "gallery" / "gallery.png")).shape == (2 * 258, 3 * 360, 3)


def test_frame_heatmap_is_the_window_the_score_came_from(fitted: tuple[Path, Path], ped2: Path) -> None:
    package = load_package(fitted[0])
    result = score_frames(package, _frames(ped2, "Test002", 90, 8))
    window = package.manifest.window.frames
    for i in range(8):
        k = min(i, 8 - window)  # stride 1: the window starting at i, or the clip's last one
        np.testing.assert_array_equal(frame_heatmap(result, i, window), result.heatmaps[k])


def test_a_non_default_variant_runs_and_calibrates_live(normal_dir: Path, trunk: Path, ped2: Path,
                                                         tmp_path: Path) -> None:
    """Row statistics and memory, one-sided speed, far-field quantile and window smoothing: ONNX == numpy,
    and a camera calibrates it live through the runner."""

    config = Variant(pool="row", flow_quantile=0.99, window=5, appearance_weight=1.0, motion="speed",
                     appearance_pool="row").config()
    package = load_package(fit_package(normal_dir, tmp_path / "variant", seed=0, trunk=trunk, config=config))
    m = package.manifest
    assert m.runtime_features["flow"]["quantile"] == 0.99 and m.window.frames == 5
    assert m.calibration is not None and m.calibration.params["pool"] == "row"
    state = package.shipped_state()
    assert state is not None and (state["flow_inv_std"][2] == state["flow_inv_std"][2, :, :1]).all()
    assert state["bank"].shape[0] == state["bank_sq"].shape[0] == 15  # one patch memory per image row, stored once
    frames = _frames(ped2, "Test002", 100, 5)
    flow = create_feature(m.runtime_features["flow"])
    motion = np.stack([flow(f) for f in frames])
    c4 = create_engine("onnxruntime", trunk, {}).run({"frames": np.stack(frames)})["c4"]
    graph = create_engine("onnxruntime", package.graph_path(m.graph("anomaly")), {})
    got = graph.run({"c4": c4[None], "flow": motion[None], **{k: state[k] for k in STATE_INPUTS}})
    maps = anomaly_maps(c4, motion, state)[None]
    want = anomaly_window(maps, state["scale"], "window")
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4, err_msg=name)
    # the window's first frame reads the window mean, the last its own peak (README round 11)
    assert np.allclose(got["frame_scores"][:, 0], got["scores"][:, 0])
    peaks = anomaly_window(maps, state["scale"], "peak")["frame_scores"]
    np.testing.assert_allclose(got["frame_scores"][:, -1], peaks[:, -1], rtol=1e-4, atol=1e-4)
    results, fitted_state = _calibrate_live(package, _frames(ped2, "Test001", 0, 40))
    assert fitted_state is not None and set(fitted_state) >= set(STATE_INPUTS)
    assert (fitted_state["flow_lower"][2] == 0).all() and not fitted_state["flow_inv_std"][0].any()
    assert results and all(np.isfinite(r.scores).all() for r in results)


def test_first_frame_of_a_run_borrows_the_next_flow_live_as_in_the_cv(normal_dir: Path, trunk: Path, ped2: Path,
                                                                      tmp_path: Path) -> None:
    """flow first="next" at half resolution: the runner (live, across a gap, and in live calibration)
    scores a run's first frame with the second frame's flow, as the CV's numpy assembly does."""
    from models.anomaly.cv import live_frame_scores
    from pipeline.features.flow import borrow_first

    config = Variant(pool="row", appearance_weight=1.0, appearance_pool="row", flow_preset="fast", flow_scale=0.5,
                     flow_first="next").config()
    package = load_package(fit_package(normal_dir, tmp_path / "first", seed=0, trunk=trunk, config=config))
    spec = package.manifest.runtime_features["flow"]
    assert spec["scale"] == 0.5 and spec["first"] == "next" and spec["preset"] == "fast"
    state = package.shipped_state()
    assert state is not None
    frames = _frames(ped2, "Test002", 100, 10)  # a cyclist crosses: the first frame moves
    c4 = create_engine("onnxruntime", trunk, {}).run({"frames": np.stack(frames)})["c4"]

    def cv_scores(run: list[np.ndarray], run_c4: np.ndarray, first: str = "next") -> np.ndarray:
        flow = create_feature({**spec, "first": first})
        stats = np.stack([flow(f) for f in run])
        stats = borrow_first(stats) if first == "next" else stats
        peaks = anomaly_maps(run_c4, stats, state).reshape(len(run), -1).max(axis=1) * state["scale"][0]
        return live_frame_scores(peaks, 1)

    live = score_frames(package, frames).frame_scores
    np.testing.assert_allclose(live, cv_scores(frames, c4), rtol=1e-4, atol=1e-4)
    assert abs(live[0] - cv_scores(frames, c4, "zero")[0]) > 1e-3  # the borrowed flow changed frame 0's score
    # after a gap (capture flag at frame 5) the new run's first frame borrows again
    runner = PackageRunner([package])
    runner.add_camera("cam", [Subscription(package.name, stride=1)])
    metas = [FrameMeta("cam", i, 0.0, i / 10, gap=i == 5) for i in range(10)]
    results = runner.process(np.stack(frames), metas)
    after = next(r for r in results if r.first.seq == 5)
    assert after.frame_scores is not None
    np.testing.assert_allclose(after.frame_scores, cv_scores(frames[5:], c4[5:])[:len(after.frame_scores)],
                               rtol=1e-4, atol=1e-4)
    # live calibration collects the borrowed first frame of each run
    runner.add_camera("cal", [Subscription(package.name, calibrate_seconds=60)])
    runner.process(np.stack(frames[:6]), [FrameMeta("cal", i, 0.0, i / 10, gap=i == 3) for i in range(6)])
    collected = np.stack(runner.camera_states("cal")[package.name]._collected[MOTION])
    assert collected[0].any() and (collected[0] == collected[1]).all() and (collected[3] == collected[4]).all()
    assert not (collected[2] == collected[3]).all()


@pytest.mark.parametrize("window", [1, 5])
def test_last_frame_appearance_scores_live_as_in_the_cv(normal_dir: Path, trunk: Path, ped2: Path, tmp_path: Path,
                                                       window: int) -> None:
    """appearance_frames="last" (round 7): the package declares c4 ``last_frame_only``; through the runner
    every frame scores as the CV assembles it (``cv.last_appearance_scores``), its own peak or the window
    mean; and the fitter puts 1.0 at the quantile of normal windows scored that way."""
    from models.anomaly.cv import Variant, last_appearance_scores, live_frame_scores
    from models.anomaly.fit import extract_features
    from models.anomaly.footage import find_clips
    from pipeline.calibration import anomaly_parts, held_out_anomaly_parts, last_frame_window_scores
    from pipeline.features.flow import borrow_first

    config = Variant(pool="row", window=window, appearance_weight=1.0, appearance_pool="row", flow_first="next",
                     appearance_frames="last").config()
    package = load_package(fit_package(normal_dir, tmp_path / "last", seed=0, trunk=trunk, config=config))
    m, state = package.manifest, package.shipped_state()
    assert m.graph("anomaly").last_frame_only == ["c4"] and m.window_end_graphs() == {"trunk"} and state is not None
    assert m.calibration is not None and m.calibration.params["appearance_frames"] == "last"
    frames = _frames(ped2, "Test002", 100, 12)  # a cyclist crosses
    engine = create_engine("onnxruntime", trunk, {})
    c4 = engine.run({"frames": np.stack(frames)})["c4"]
    flow = create_feature(m.runtime_features["flow"])
    motion, appearance = anomaly_parts(c4, borrow_first(np.stack([flow(f) for f in frames])), state)
    weights, scale = state["weights"], state["scale"][0]
    _, want = last_appearance_scores(weights[0] * scale * motion, weights[1] * scale * appearance,
                                     config.window_frames, config.frame_score)
    live = score_frames(package, frames).frame_scores
    np.testing.assert_allclose(live, want, rtol=1e-4, atol=1e-4)
    every = live_frame_scores((weights[0] * motion + weights[1] * appearance).reshape(12, -1).max(axis=1) * scale,
                              window)
    assert np.abs(live - every).max() > 1e-3  # not the every-frame assembly
    # the fitter's scale: 1.0 at the quantile of held-out normal windows scored with their last frame's appearance
    features = extract_features(find_clips(normal_dir), trunk, config)
    params = {**config.fit, "seed": 0}
    motion_ho, appearance_ho = held_out_anomaly_parts(features[APPEARANCE], features[MOTION], params)
    windows = last_frame_window_scores(weights[0] * motion_ho, weights[1] * appearance_ho, config.window_frames)
    assert scale == pytest.approx(1.0 / np.quantile(windows, params["quantile"]), rel=1e-5)


@pytest.mark.parametrize("window", [1, 5])
def test_persistent_scores_live_as_in_the_cv(normal_dir: Path, trunk: Path, ped2: Path, tmp_path: Path,
                                             window: int) -> None:
    """persist (round 8): the window graph keeps what a neighbouring frame confirms; through the runner every
    frame scores as the CV assembles it (``cv.persistent_scores``), the graph equals the numpy reference,
    the fitter puts 1.0 at the quantile of normal windows scored that way, and a camera calibrates it live."""
    from models.anomaly.cv import Variant, last_appearance_scores, persistent_scores
    from models.anomaly.fit import extract_features
    from models.anomaly.footage import find_clips
    from pipeline.calibration import anomaly_parts, held_out_anomaly_parts, persist_maps, window_stack
    from pipeline.features.flow import borrow_first

    config = Variant(pool="row", window=window, appearance_weight=1.0, appearance_pool="row", flow_first="next",
                     appearance_frames="last", persist=True).config()
    package = load_package(fit_package(normal_dir, tmp_path / "persist", seed=0, trunk=trunk, config=config))
    m, state = package.manifest, package.shipped_state()
    assert m.calibration is not None and m.calibration.params["persist"] is True and state is not None
    frames = _frames(ped2, "Test002", 100, 12)  # a cyclist crosses
    c4 = create_engine("onnxruntime", trunk, {}).run({"frames": np.stack(frames)})["c4"]
    flow = create_feature(m.runtime_features["flow"])
    motion, appearance = anomaly_parts(c4, borrow_first(np.stack([flow(f) for f in frames])), state)
    weights, scale = state["weights"], state["scale"][0]
    parts = (weights[0] * scale * motion, weights[1] * scale * appearance)
    _, want = persistent_scores(*parts, config.window_frames, config.frame_score, "last")
    live = score_frames(package, frames).frame_scores
    np.testing.assert_allclose(live, want, rtol=1e-4, atol=1e-4)
    _, plain = last_appearance_scores(*parts, config.window_frames, config.frame_score)
    assert (live <= plain + 1e-4).all() and np.abs(live - plain).max() > 1e-3  # persistence only lowers
    # the graph alone against the numpy reference, one window
    t = config.window_frames
    graph = create_engine("onnxruntime", package.graph_path(m.graph("anomaly")), {})
    flows = borrow_first(np.stack([flow(f) for f in frames]))  # a fresh feature: the same run again
    got = graph.run({"c4": c4[t - 1:t][None], "flow": flows[:t][None], **{k: state[k] for k in STATE_INPUTS}})
    maps = window_stack(weights[0] * motion, weights[1] * appearance, t, "last", np.array([0]))
    reference = anomaly_window(maps, state["scale"], config.frame_score, persist=True)
    for name in OUTPUTS:
        np.testing.assert_allclose(got[name], reference[name], rtol=1e-4, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(reference["heatmap"], persist_maps(maps).max(axis=1) * scale, rtol=1e-6)
    # the fitter's scale: 1.0 at the quantile of held-out normal windows scored with persistence
    features = extract_features(find_clips(normal_dir), trunk, config)
    params = {**config.fit, "seed": 0}
    motion_ho, appearance_ho = held_out_anomaly_parts(features[APPEARANCE], features[MOTION], params)
    windows = persist_maps(window_stack(weights[0] * motion_ho, weights[1] * appearance_ho, t, "last"))
    assert scale == pytest.approx(1.0 / np.quantile(windows.reshape(*windows.shape[:2], -1).max(-1).mean(1),
                                                    params["quantile"]), rel=1e-5)
    results, fitted_state = _calibrate_live(package, _frames(ped2, "Test001", 0, 30))
    assert fitted_state is not None and results and all(np.isfinite(r.scores).all() for r in results)


def test_row_memory_is_stored_once_and_the_graph_also_takes_the_repeated_layout(
        fitted: tuple[Path, Path], trunk: Path, ped2: Path, tmp_path: Path) -> None:
    """The shipped row memory is [h, K, C]; the same graph scores it as the per-cell repetition that
    packages fitted before round 6 hold, and a package whose manifest predates ``bank_rows`` calibrates
    live in that old layout."""
    package = load_package(fitted[0])
    state = package.shipped_state()
    assert state is not None and state["bank"].shape[0] == 15 and state["bank_sq"].shape[0] == 15
    repeated = {**state, **{k: np.repeat(state[k], 23, axis=0) for k in ("bank", "bank_sq")}}
    c4, motion, graph, inputs = _two_windows_of_a_cyclist(package, trunk, ped2)
    once = graph.run({**inputs, **{k: state[k] for k in STATE_INPUTS}})
    old = graph.run({**inputs, **{k: repeated[k] for k in STATE_INPUTS}})
    for name in OUTPUTS:
        np.testing.assert_allclose(once[name], old[name], rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(anomaly_maps(c4, motion, state), anomaly_maps(c4, motion, repeated),
                               rtol=1e-5, atol=1e-5)
    # a manifest from before round 6 (no bank_rows): live calibration fits the layout its graph was made for
    legacy = _pre_round6_copy(fitted[0], tmp_path / "legacy")
    results, fitted_state = _calibrate_live(load_package(legacy), _frames(ped2, "Test001", 0, 30))
    assert fitted_state is not None and fitted_state["bank"].shape[0] == 15 * 23
    assert results and all(np.isfinite(r.scores).all() for r in results)


def _pre_round6_copy(package: Path, out: Path) -> Path:
    """``package`` with the manifest a package fitted before round 6 has (calibration params lack bank_rows)."""
    import json
    import shutil

    shutil.copytree(package, out)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["calibration"]["params"]["bank_rows"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_a_saved_row_memory_is_not_fed_to_a_package_from_before_round_6(
        fitted: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A camera's saved state with a row memory stored once ([h, M, C], saved by a newer package) is ignored
    by a package whose graph predates that layout: the camera calibrates again instead of failing every
    window. The repeated layout loads in both; a newer package also loads it."""
    state = load_package(fitted[0]).shipped_state()
    assert state is not None
    repeated = {**state, **{k: np.repeat(state[k], 23, axis=0) for k in ("bank", "bank_sq")}}
    legacy = load_package(_pre_round6_copy(fitted[0], tmp_path / "legacy"))
    store = StateStore(tmp_path / "state")

    def calibrating(package: ModelPackage, saved: dict[str, np.ndarray]) -> bool:
        store.save("cam", package.name, saved)
        runner = PackageRunner([package], state_store=store)
        runner.add_camera("cam", [Subscription(package.name, calibrate_seconds=60)])
        return runner.camera_states("cam")[package.name].calibrating

    with caplog.at_level("WARNING"):
        assert calibrating(legacy, dict(state))
    assert "one per image row" in caplog.text and "[345, M, C]" in caplog.text
    assert not calibrating(legacy, repeated)
    assert not calibrating(load_package(fitted[0]), repeated) and not calibrating(load_package(fitted[0]), dict(state))
