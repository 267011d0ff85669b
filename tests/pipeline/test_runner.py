"""The runner on real ONNX Runtime sessions and real frames from the shipped sample clip."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.camera_state import StateStore
from pipeline.engines import Engine
from pipeline.modelpkg import ModelPackage, load_package
from pipeline.runner import FrameMeta, PackageRunner, Subscription, score_frames
from tests.conftest import PEOPLE_CLIP


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
    cap = cv2.VideoCapture(str(PEOPLE_CLIP))
    frames = []
    while len(frames) < 48:
        ok, bgr = cap.read()
        assert ok
        frames.append(cv2.cvtColor(cv2.resize(bgr, (224, 224), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    return np.stack(frames)


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


def test_too_few_frames_for_a_window(demo_package_path: Path, clip_frames: np.ndarray,
                                     state: dict[str, np.ndarray]) -> None:
    pkg = load_package(demo_package_path)
    with pytest.raises(ValueError, match="fewer than"):
        score_frames(pkg, list(clip_frames[:2]), state=state)
