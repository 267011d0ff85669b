"""The runner on real ONNX Runtime sessions and real frames from the shipped sample clip."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pytest

from pipeline.camera_state import StateStore
from pipeline.engines import Engine
from pipeline.features import FrameFeature
from pipeline.features.delta import encode_clip
from pipeline.modelpkg import ModelPackage, load_package
from pipeline.runner import FrameMeta, PackageRunner, Subscription, WindowResult, score_frames
from tests.conftest import PEOPLE_CLIP
from tests.pipeline.package_helpers import motion_package
from tests.support.video import rgb_frames


class CountingEngine:
    def __init__(self, inner: Engine) -> None:
        self.inner, self.calls, self.rows = inner, 0, 0
        self.input_names, self.output_names = inner.input_names, inner.output_names

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        self.rows += len(next(iter(inputs.values())))
        return self.inner.run(inputs)


@pytest.fixture(scope="module")
def clip_frames() -> np.ndarray:
    return rgb_frames(PEOPLE_CLIP, 48, (224, 224))


@pytest.fixture(scope="module")
def state(demo_package_path: Path, clip_frames: np.ndarray) -> dict[str, np.ndarray]:
    from pipeline.calibration import fit_window_gaussian

    pkg = load_package(demo_package_path)
    trunk = PackageRunner([pkg])._engines[pkg.manifest.graph("trunk").sha256]
    c4 = trunk.run({"frames": clip_frames[:24]})["c4"]
    return fit_window_gaussian({"trunk.c4": c4}, pkg.manifest.window.frames, {"source": "trunk.c4"})


def _renamed(pkg_path: Path, tmp_path: Path, name: str) -> ModelPackage:
    copy = shutil.copytree(pkg_path, tmp_path / name)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["name"] = name
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return load_package(copy)


def test_shared_trunk_runs_once_per_frame_for_all_packages(demo_package_path: Path, tmp_path: Path,
                                                           clip_frames: np.ndarray,
                                                           state: dict[str, np.ndarray]) -> None:
    a, b = load_package(demo_package_path), _renamed(demo_package_path, tmp_path, "other")
    runner = PackageRunner([a, b])
    assert len(runner._engines) == 2  # one trunk (same sha256) + one scorer
    trunk_sha = a.manifest.graph("trunk").sha256
    counter = CountingEngine(runner._engines[trunk_sha])
    runner._engines[trunk_sha] = counter
    for cam in ("c1", "c2"):
        runner.add_camera(cam, [Subscription(a.name, stride=1), Subscription(b.name, stride=1)])
        for name in (a.name, b.name):
            runner.camera_states(cam)[name].set_state(state)
    results = []
    for start in range(0, 16, 4):  # 8 frames per camera, interleaved, batches of 4
        metas = [FrameMeta(cam, start // 2 + i, 0.0, 0.0) for i in range(2) for cam in ("c1", "c2")]
        results += runner.process(clip_frames[start:start + 4], metas)
    assert counter.rows == 16  # every frame once, although two packages read it
    t = a.manifest.window.frames
    assert len(results) == 2 * 2 * (8 - t + 1)  # cameras x packages x windows (stride 1 overlaps)
    by_pkg = {}
    for r in results:
        by_pkg.setdefault((r.camera, r.last.seq), {})[r.package] = r.alert_score
    assert all(abs(v[a.name] - v[b.name]) < 1e-6 for v in by_pkg.values())


def test_offline_scores_match_a_numpy_reference(demo_package_path: Path, clip_frames: np.ndarray,
                                                state: dict[str, np.ndarray]) -> None:
    pkg = load_package(demo_package_path)
    runner = PackageRunner([pkg])
    scores = score_frames(pkg, list(clip_frames), state=state, stride=1, batch=7, runner=runner)
    t = pkg.manifest.window.frames
    c4 = runner._engines[pkg.manifest.graph("trunk").sha256].run({"frames": clip_frames})["c4"]
    expected = []
    for end in range(t - 1, len(clip_frames)):
        z2 = ((c4[end - t + 1:end + 1].mean(0) - state["mean"]) * state["inv_std"]) ** 2
        expected.append(z2.mean(0).max() * state["scale"][0])
    np.testing.assert_allclose(scores.window_scores[:, 0], expected, rtol=1e-4, atol=1e-5)
    assert list(scores.window_end) == list(range(t - 1, len(clip_frames)))
    assert scores.frame_scores.shape == (len(clip_frames),) and not np.isnan(scores.frame_scores).any()
    assert scores.heatmaps[0].shape == (14, 14)


def test_live_calibration_fits_persists_and_is_not_repeated(demo_package_path: Path, tmp_path: Path,
                                                            clip_frames: np.ndarray) -> None:
    pkg = load_package(demo_package_path)
    store = StateStore(tmp_path / "state")
    runner = PackageRunner([pkg], state_store=store)
    runner.add_camera("cam", [Subscription(pkg.name, calibrate_seconds=2.0)])
    results = []
    for i in range(0, 16, 8):  # 5 fps stream time: 2 s of calibration = 10 frames
        metas = [FrameMeta("cam", i + j, 0.0, (i + j) / 5.0) for j in range(8)]
        results += runner.process(clip_frames[i:i + 8], metas)
    assert runner.camera_states("cam")[pkg.name].wait_fitted(30)
    for i in range(16, 40, 8):
        metas = [FrameMeta("cam", i + j, 0.0, (i + j) / 5.0) for j in range(8)]
        results += runner.process(clip_frames[i:i + 8], metas)
    assert (tmp_path / "state" / "cam" / f"{pkg.name}.npz").exists()
    assert results and results[0].first.seq >= 10  # nothing scored while calibrating
    again = PackageRunner([pkg], state_store=store)
    again.add_camera("cam", [Subscription(pkg.name, calibrate_seconds=2.0)])
    assert not again.camera_states("cam")[pkg.name].calibrating


def test_saved_state_missing_arrays_is_ignored_and_recalibrated(demo_package_path: Path, tmp_path: Path,
                                                                  state: dict[str, np.ndarray],
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A state saved by an older package version that lacks an array the graphs now read."""
    pkg = load_package(demo_package_path)
    store = StateStore(tmp_path / "state")
    store.save("cam", pkg.name, {k: v for k, v in state.items() if k != "scale"})
    runner = PackageRunner([pkg], state_store=store)
    with caplog.at_level("WARNING"):
        runner.add_camera("cam", [Subscription(pkg.name, calibrate_seconds=2.0)])
    assert runner.camera_states("cam")[pkg.name].calibrating
    assert "lacks scale" in caplog.text
    store.save("cam", pkg.name, state)
    again = PackageRunner([pkg], state_store=store)
    again.add_camera("cam", [Subscription(pkg.name, calibrate_seconds=2.0)])
    assert not again.camera_states("cam")[pkg.name].calibrating


def test_too_few_frames_for_a_window(demo_package_path: Path, clip_frames: np.ndarray,
                                     state: dict[str, np.ndarray]) -> None:
    pkg = load_package(demo_package_path)
    with pytest.raises(ValueError, match="fewer than"):
        score_frames(pkg, list(clip_frames[:2]), state=state)


class CountingFeature:
    """Wraps one camera's feature computer: features must run once per frame."""

    def __init__(self, inner: FrameFeature) -> None:
        self.inner, self.calls = inner, 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.inner(frame)


def _two_cameras(clip_frames: np.ndarray, count: int) -> dict[str, np.ndarray]:
    # Different footage per camera, so a feature state shared across cameras would show.
    return {"c1": clip_frames[:count], "c2": clip_frames[-1:-2 * count - 1:-2]}


def _process_interleaved(runner: PackageRunner, own: dict[str, np.ndarray], seqs: range) -> list[WindowResult]:
    """One batch holding frames ``seqs`` of every camera, alternating cameras (stream time: 5 fps)."""
    order = [(cam, seq) for seq in seqs for cam in own]
    metas = [FrameMeta(cam, seq, 0.0, seq / 5.0) for cam, seq in order]
    return runner.process(np.stack([own[cam][seq] for cam, seq in order]), metas)


def _per_frame(results: list[WindowResult]) -> dict[tuple[str, int], float]:
    values = {}
    for r in results:
        assert r.frame_scores is not None
        for j, value in enumerate(r.frame_scores):
            values[(r.camera, r.first.seq + j)] = float(value)
    return values


def test_frame_graph_reads_runtime_features_per_camera_in_frame_order(tmp_path: Path,
                                                                      clip_frames: np.ndarray) -> None:
    pkg = load_package(motion_package(tmp_path / "motion", gain=3.0))
    runner = PackageRunner([pkg])
    sha = pkg.manifest.graph("motion").sha256
    engine = runner._engines[sha] = CountingEngine(runner._engines[sha])
    own = _two_cameras(clip_frames, 12)
    counters = {}
    for cam in own:
        runner.add_camera(cam, [Subscription(pkg.name, stride=1)])
        state = runner.camera_states(cam)[pkg.name]
        counters[cam] = state.features["runtime.delta"] = CountingFeature(state.features["runtime.delta"])
    results = _process_interleaved(runner, own, range(6)) + _process_interleaved(runner, own, range(6, 12))
    got = _per_frame(results)
    for cam, frames in own.items():
        expected = encode_clip(frames, 3.0).mean(axis=(1, 2, 3))
        np.testing.assert_allclose([got[(cam, seq)] for seq in range(12)], expected, rtol=1e-5)
        assert counters[cam].calls == 12  # once per frame, although frame graph and ring both use it
    for r in results:
        assert r.frame_scores is not None and r.scores[0] == pytest.approx(r.frame_scores.mean(), rel=1e-5)
    assert (engine.calls, engine.rows) == (2, 24)  # one run per batch, across both cameras
    assert runner.timings.seconds["features"] > 0


def test_calibration_collects_the_runtime_features_frame_graphs_read(tmp_path: Path,
                                                                     clip_frames: np.ndarray) -> None:
    from pipeline.calibration import sliding_window_means

    pkg = load_package(motion_package(tmp_path / "calibrated", calibrate=True))
    runner = PackageRunner([pkg])
    own = _two_cameras(clip_frames, 16)
    for cam in own:
        runner.add_camera(cam, [Subscription(pkg.name, stride=1)])
    assert not _process_interleaved(runner, own, range(12))  # 2 s at 5 fps: fits on frames 0..10
    states = {cam: runner.camera_states(cam)[pkg.name] for cam in own}
    assert all(state.wait_fitted(30) for state in states.values())
    results = _process_interleaved(runner, own, range(12, 16))
    got = _per_frame(results)
    for cam, frames in own.items():
        deltas = encode_clip(frames, 3.0)
        fitted = states[cam].state
        assert fitted is not None
        np.testing.assert_allclose(fitted["mean"], sliding_window_means(deltas[:11], 4).mean(axis=0), rtol=1e-6)
        # Feature state ran on through calibration: frame 12 is compared with frame 11.
        np.testing.assert_allclose([got[(cam, seq)] for seq in range(12, 16)],
                                   deltas[12:16].mean(axis=(1, 2, 3)), rtol=1e-5)
    for r in results:
        scale = states[r.camera].state_array("state.scale")[0]
        assert r.frame_scores is not None and r.scores[0] == pytest.approx(r.frame_scores.mean() * scale, rel=1e-5)


# -- frames no window reads ------------------------------------------------------------------
@pytest.fixture(scope="module")
def ped2_test_frames(shared_data: Path) -> np.ndarray:
    """UCSD Ped2 Test002's first 64 frames (walkers, then a cyclist enters), 360x240 RGB."""
    return rgb_frames(shared_data / "ucsd_ped2" / "test" / "Test002" / "%03d.jpg", 64, (360, 240))


def _shipped(models_dir: Path, tmp_path: Path, name: str, frames: int | None = None) -> ModelPackage:
    """A package ``make models`` built, with another window length (its copy) when ``frames`` is given."""
    if not (models_dir / name / "manifest.json").exists():
        pytest.skip(f"{models_dir / name} is not built (make models)")
    if frames is None:
        return load_package(models_dir / name)
    copy = shutil.copytree(models_dir / name, tmp_path / f"{name}-{frames}")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["window"]["frames"] = frames
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return load_package(copy)


@pytest.fixture(scope="module")
def trunk_packages(models_dir: Path, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``ped2-anomaly`` and ``scene-anomaly`` of rounds 2-9's design (motion + appearance, the trunk's c4 read
    ``last_frame_only``, a 3-frame window) on the shared 240x360 trunk, each fitted on 16 frames of two other
    Ped2 train clips; round 10's shipped design is motion only and runs no trunk, so the trunk's scheduling
    is tested on these."""
    from models.anomaly.cv import Variant
    from models.anomaly.fit import fit_package
    from models.build import trunk_path

    trunk = trunk_path(models_dir, 240, 360)
    if not trunk.exists():
        pytest.skip(f"{trunk} is not built (make models)")
    config = Variant(pool="row", appearance_weight=1.0, appearance_pool="row", flow_first="next",
                     appearance_frames="last").config()
    root = tmp_path_factory.mktemp("trunk-packages")
    for name, clips in {"ped2-anomaly": ("Train001", "Train002"), "scene-anomaly": ("Train003", "Train004")}.items():
        normal = root / "normal" / name
        for clip in clips:
            (normal / clip).mkdir(parents=True)
            for frame in sorted((shared_data / "ucsd_ped2" / "train" / clip).glob("*.jpg"))[:16]:
                (normal / clip / frame.name).symlink_to(frame)
        fit_package(normal, root / name, seed=0, trunk=trunk, name=name, config=config)
    (root / "fight").symlink_to(models_dir / "fight")
    return root


Feed = list[tuple[str, int, bool]]  # (camera, seq, capture's gap flag) in arrival order


def _feed_runner(runner: PackageRunner, footage: dict[str, np.ndarray], feed: Feed,
                 batch: int) -> list[WindowResult]:
    results: list[WindowResult] = []
    for start in range(0, len(feed), batch):
        part = feed[start:start + batch]
        metas = [FrameMeta(cam, seq, 0.0, seq / 10.0, gap) for cam, seq, gap in part]
        frames = np.stack([footage[cam][seq % len(footage[cam])] for cam, seq, _ in part])
        results += runner.process(frames, metas)
    return results


def _skipping_and_not(packages: list[ModelPackage], subs: dict[str, list[Subscription]],
                      footage: dict[str, np.ndarray], phases: list[Feed],
                      batch: int = 5) -> tuple[PackageRunner, list[WindowResult], list[WindowResult]]:
    """The same frames through a runner that skips unread frames and one that computes all (same
    engines); between ``phases`` every live calibration is waited for, so both score the same frames."""
    runners = [PackageRunner(packages, skip_unread=True), PackageRunner(packages, skip_unread=False)]
    runners[1]._engines = runners[0]._engines
    outputs = []
    for runner in runners:
        for cam, cam_subs in subs.items():
            runner.add_camera(cam, cam_subs)
        results = []
        for feed in phases:
            results += _feed_runner(runner, footage, feed, batch)
            assert all(s.wait_fitted(60) for cam in subs for s in runner.camera_states(cam).values())
        outputs.append(results)
    return runners[0], outputs[0], outputs[1]


def _assert_identical(got: list[WindowResult], expected: list[WindowResult]) -> None:
    assert expected and len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert (a.camera, a.package, a.first, a.last) == (b.camera, b.package, b.first, b.last)
        for name in ("scores", "frame_scores", "heatmap", "last_frame"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None) and (x is None or np.array_equal(x, y)), (a.camera, a.last.seq, name)


def _run(cam: str, seqs: Iterable[int], gap_at: int | None = None) -> Feed:
    return [(cam, seq, seq == gap_at) for seq in seqs]


def test_skipping_unread_frames_changes_no_result(trunk_packages: Path, tmp_path: Path,
                                                  ped2_test_frames: np.ndarray) -> None:
    """Stride 4 over the 3-frame anomaly window (the bench's): two cameras in one batch stream, a
    seq gap, a capture gap, a package on the same trunk at stride 1 (the shared trunk then runs
    on subsets of rows) and the fight package at stride 4 (window 8: every frame read)."""
    ped2, scene, fight = (_shipped(trunk_packages, tmp_path, n) for n in ("ped2-anomaly", "scene-anomaly", "fight"))
    subs = {"c1": [Subscription(ped2.name, stride=4), Subscription(fight.name, stride=4),
                   Subscription(scene.name, stride=1)],
            "c2": [Subscription(scene.name, stride=1), Subscription(ped2.name, stride=4)]}
    footage = {"c1": ped2_test_frames, "c2": ped2_test_frames[::-1]}
    c1 = _run("c1", [*range(0, 30), *range(37, 60)], gap_at=50)
    c2 = _run("c2", range(0, 50), gap_at=17)
    # alternate which camera leads a batch, so the skipping package runs the trunk first or second
    feed = [item for pair in zip(c1, c2, strict=False) for item in (pair if pair[0][1] % 2 else pair[::-1])]
    feed += c1[len(c2):]
    runner, got, expected = _skipping_and_not([ped2, scene, fight], subs, footage, [feed], batch=6)
    _assert_identical(got, expected)
    assert runner.drain_skipped()[ped2.name] > 0 and not runner.drain_skipped()


@pytest.mark.parametrize(("name", "frames", "stride"), [
    ("ped2-anomaly", 2, 5), ("ped2-anomaly", 3, 7), ("ped2-anomaly", 5, 3), ("fight", None, 11)])
def test_skipping_unread_frames_changes_no_result_for_other_windows(
        models_dir: Path, tmp_path: Path, ped2_test_frames: np.ndarray, name: str, frames: int | None,
        stride: int) -> None:
    """Window lengths and strides (stride < window: nothing skipped), runs that start afresh (the
    flow's first frame borrows the second's) after seq gaps; frames split over batches of 4."""
    package = _shipped(models_dir, tmp_path, name, frames)
    subs = {"cam": [Subscription(package.name, stride=stride)]}
    feed = _run("cam", [*range(0, 23), *range(25, 27), *range(30, 64)], gap_at=41)
    runner, got, expected = _skipping_and_not([package], subs, {"cam": ped2_test_frames}, [feed], batch=4)
    _assert_identical(got, expected)
    assert bool(runner.drain_skipped()) == (stride > package.manifest.window.frames)


def test_skipping_unread_frames_after_live_calibration(trunk_packages: Path, tmp_path: Path,
                                                        ped2_test_frames: np.ndarray) -> None:
    """Calibration collects every frame (2 s: frames 0..20); scoring after it skips, same windows."""
    package = _shipped(trunk_packages, tmp_path, "ped2-anomaly")
    subs = {"cam": [Subscription(package.name, stride=4, calibrate_seconds=2.0)]}
    phases = [_run("cam", range(0, 24)), _run("cam", range(24, 64), gap_at=45)]
    runner, got, expected = _skipping_and_not([package], subs, {"cam": ped2_test_frames}, phases, batch=4)
    _assert_identical(got, expected)
    assert got[0].first.seq >= 21  # nothing scored while calibrating
    assert runner.drain_skipped()[package.name] > 0


class CountingDIS:
    def __init__(self, inner: object) -> None:
        self.inner, self.calls = inner, 0

    def calc(self, *args: object) -> np.ndarray:
        self.calls += 1
        return self.inner.calc(*args)  # type: ignore[attr-defined, no-any-return]


@pytest.mark.parametrize("skip", [True, False])
def test_frames_no_window_reads_are_not_computed(trunk_packages: Path, ped2_test_frames: np.ndarray,
                                                 skip: bool) -> None:
    package = _shipped(trunk_packages, Path(), "ped2-anomaly")
    runner = PackageRunner([package], skip_unread=skip)
    sha = package.manifest.graph("trunk").sha256
    trunk = runner._engines[sha] = CountingEngine(runner._engines[sha])
    runner.add_camera("cam", [Subscription(package.name, stride=4)])
    flow = runner.camera_states("cam")[package.name].features["runtime.flow"]
    dis = flow._dis = CountingDIS(flow._dis)  # type: ignore[attr-defined]
    results = _feed_runner(runner, {"cam": ped2_test_frames}, _run("cam", range(39)), batch=8)
    assert [r.last.seq for r in results] == list(range(2, 39, 4))  # 3-frame windows every 4 frames
    held = {seq for r in results for seq in range(r.first.seq, r.last.seq + 1)}
    assert len(held) == 30  # every fourth frame is in no window
    # the package's windows read only their last frame's c4 (README round 7): the trunk runs on window ends
    assert package.manifest.window_end_graphs() == {"trunk"}
    assert trunk.rows == (len(results) if skip else 39)
    assert dis.calls == (len(held) if skip else 39) - 1  # the first frame has no previous one: zero flow
    assert runner.drain_skipped() == ({package.name: 39 - len(held)} if skip else {})


def test_a_last_frame_only_input_gets_the_window_last_frame(trunk_packages: Path,
                                                            ped2_test_frames: np.ndarray) -> None:
    """Each window of an anomaly package with c4 ``last_frame_only`` scores as its graph does on the
    trunk's c4 of the window's last frame and the flow of each of its frames, at stride 4 and 1."""
    from models.anomaly.scorer import STATE_INPUTS
    from pipeline.engines import create_engine
    from pipeline.features import create_feature
    from pipeline.features.flow import borrow_first

    package = _shipped(trunk_packages, Path(), "ped2-anomaly")
    m, state = package.manifest, package.shipped_state()
    assert m.graph("anomaly").last_frame_only == ["c4"] and state is not None
    frames = ped2_test_frames[:20]
    c4 = create_engine("onnxruntime", package.graph_path(m.graph("trunk")), {}).run({"frames": frames})["c4"]
    flow = create_feature(m.runtime_features["flow"])
    stats = borrow_first(np.stack([flow(f) for f in frames]))
    graph = create_engine("onnxruntime", package.graph_path(m.graph("anomaly")), {})
    for stride in (4, 1):
        runner = PackageRunner([package])
        runner.add_camera("cam", [Subscription(package.name, stride=stride)])
        results = _feed_runner(runner, {"cam": frames}, _run("cam", range(20)), batch=6)
        assert [r.last.seq for r in results] == list(range(2, 20, stride))
        for r in results:
            first, last = r.first.seq, r.last.seq
            want = graph.run({"c4": c4[None, last:last + 1], "flow": stats[None, first:last + 1],
                              **{k: state[k] for k in STATE_INPUTS}})
            np.testing.assert_allclose(r.scores, want["scores"][0], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(r.frame_scores, want["frame_scores"][0], rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(r.heatmap, want["heatmap"][0], rtol=1e-5, atol=1e-5)
        # every frame's own c4 would score otherwise: the input really is the last frame's
        every = graph.run({"c4": c4[None, :3], "flow": stats[None, :3], **{k: state[k] for k in STATE_INPUTS}})
        assert not np.allclose(results[0].frame_scores, every["frame_scores"][0], rtol=1e-3, atol=1e-3)
