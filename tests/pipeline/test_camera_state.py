"""Gaps in a camera's frames (motion gate, drops, reopened streams): windows, deltas, flow and live
calibration restart after a gap instead of stitching across it. Real frames of the people clip
(its empty-room start and the walk after it) on real ONNX Runtime sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.calibration import SEGMENT, fit_window_gaussian, sliding_window_means
from pipeline.camera_state import frame_is_read, window_ends_at
from pipeline.features.delta import ZERO, encode_clip
from pipeline.features.flow import FlowCells
from pipeline.modelpkg import load_package
from pipeline.motion_gate import CameraGate, MotionGateConfig
from pipeline.runner import FrameMeta, PackageRunner, Subscription, WindowResult
from tests.conftest import PEOPLE_CLIP
from tests.pipeline.package_helpers import motion_package
from tests.support.video import rgb_frames

T = 4  # the test package's window


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """The first 12 s of the people clip at 10 fps, 224x224 RGB: still until ~6 s, then someone walks in."""
    return rgb_frames(PEOPLE_CLIP, 120, (224, 224))


def _feed(runner: PackageRunner, frames: np.ndarray, seqs: list[int], gap_flags: list[bool] | None = None,
          batch: int = 5) -> list[WindowResult]:
    flags = gap_flags or [False] * len(seqs)
    results: list[WindowResult] = []
    for start in range(0, len(seqs), batch):
        part = seqs[start:start + batch]
        metas = [FrameMeta("cam", s, 0.0, s / 10.0, g) for s, g in zip(part, flags[start:start + batch], strict=True)]
        results += runner.process(np.stack([frames[s] for s in part]), metas)
    return results


def _runner(tmp_path: Path, calibrate: bool = False) -> PackageRunner:
    pkg = load_package(motion_package(tmp_path / ("cal" if calibrate else "motion"), frames=T, calibrate=calibrate))
    runner = PackageRunner([pkg])
    runner.add_camera("cam", [Subscription(pkg.name, stride=1)])
    return runner


def test_windows_never_span_a_seq_gap_and_deltas_restart(tmp_path: Path, frames: np.ndarray) -> None:
    runner = _runner(tmp_path)
    seqs = [*range(0, 10), *range(60, 72)]  # the still start, then 5 s held back, then the walk
    results = _feed(runner, frames, seqs)
    for r in results:
        assert r.last.seq - r.first.seq == T - 1  # T consecutive frames, never stitched
    ends = [r.last.seq for r in results]
    assert ends == [*range(T - 1, 10), *range(60 + T - 1, 72)]
    after = [r for r in results if r.first.seq >= 60]
    got = {r.first.seq + j: float(v) for r in after for j, v in enumerate(r.frame_scores)}  # type: ignore[arg-type]
    # The first frame after the gap has no previous frame (flat delta); the next ones compare with it.
    expected = encode_clip(frames[60:72], 3.0).mean(axis=(1, 2, 3))
    np.testing.assert_allclose([got[s] for s in range(60, 72)], expected, rtol=1e-5)
    assert got[60] == pytest.approx(ZERO)
    # Stitched across the gap, frame 60 would have compared with frame 9: someone is in the room by then.
    stitched = encode_clip(frames[[9, 60]], 3.0)[1].mean()
    assert abs(stitched - ZERO) > 0.05


def test_capture_flag_marks_a_gap_without_a_seq_jump(tmp_path: Path, frames: np.ndarray) -> None:
    runner = _runner(tmp_path)
    seqs = list(range(0, 12))
    flags = [s == 6 for s in seqs]  # e.g. the stream was reopened before frame 6
    results = _feed(runner, frames[[*range(0, 6), *range(60, 66)]], seqs, flags)
    assert [r.last.seq for r in results] == [3, 4, 5, 9, 10, 11]


def test_flow_restarts_after_reset(frames: np.ndarray) -> None:
    flow = FlowCells(224, 224, preset="ultrafast")
    flow(frames[60])
    moving = flow(frames[70])
    assert np.abs(moving[3]).max() > 0  # someone walked between the two frames
    flow.reset()
    assert not flow(frames[70]).any()  # after a gap: zero flow, as on a camera's first frame


def test_live_calibration_fits_only_windows_inside_runs(tmp_path: Path, frames: np.ndarray) -> None:
    runner = _runner(tmp_path, calibrate=True)
    # Keep-alive-like runs of 8 consecutive frames with gaps between; frame 20 (t = 2 s) ends calibration.
    seqs = [*range(0, 8), *range(9, 17), *range(20, 24)]
    assert not _feed(runner, frames, seqs, batch=4)
    state = runner.camera_states("cam")[next(iter(runner.packages))]
    assert state.wait_fitted(30) and state.state is not None
    deltas = np.concatenate([encode_clip(frames[a:a + 8], 3.0) for a in (0, 9)] + [encode_clip(frames[20:21], 3.0)])
    segments = np.repeat([0, 1, 2], [8, 8, 1])
    inside = sliding_window_means(deltas, T, segments)
    assert len(inside) == 2 * (8 - T + 1)  # no window across a gap (nor in the 1-frame run)
    np.testing.assert_allclose(state.state["mean"], inside.mean(axis=0), rtol=1e-5)
    stitched = fit_window_gaussian({"runtime.delta": deltas}, T, {})
    assert not np.allclose(stitched["mean"], state.state["mean"], rtol=1e-5)
    # fitted state is read-only: a GPU engine keeps one device copy of it (DeviceConstants)
    assert not any(a.flags.writeable for a in state.state.values())
    with pytest.raises(ValueError, match="read-only"):
        state.state["mean"][...] = 0


def test_sliding_windows_with_segments() -> None:
    x = np.arange(10, dtype=np.float32)[:, None]
    seg = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    np.testing.assert_allclose(sliding_window_means(x, 3, seg)[:, 0], [1, 4, 5, 8])
    with pytest.raises(ValueError, match="no run of 4"):
        sliding_window_means(x, 4, np.arange(10))
    assert fit_window_gaussian({"a": np.ones((10, 2)), SEGMENT: seg}, 3, {})["mean"].shape == (2,)


def test_gated_people_clip_through_the_runner(tmp_path: Path, frames: np.ndarray) -> None:
    """The motion gate in front of the runner, as in capture: the still start is held back except
    the keep-alive burst; windows cover the burst and the walk from the pre-roll on, never the gap."""
    gate: CameraGate[int] = CameraGate("cam", MotionGateConfig(enabled=True), keepalive_phase_s=0)
    sent = [s for s in range(len(frames)) for s in gate.offer(s / 10.0, frames[s], s)]
    runner = _runner(tmp_path)
    results = _feed(runner, frames, sent)
    assert all(r.last.seq - r.first.seq == T - 1 for r in results)
    firsts = sorted({r.first.seq for r in results})
    assert firsts[0] == 0 and sent[8] > 8  # the burst's windows, then a gap
    onset_preroll = sent[8]
    assert onset_preroll in firsts  # the window starting at the first pre-roll frame is complete
    assert 45 <= onset_preroll + 8 <= 62  # someone walks in at ~6 s


@pytest.mark.parametrize("frames", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("stride", [1, 2, 3, 4, 7, 9])
def test_a_frame_is_read_exactly_when_a_window_holds_it(frames: int, stride: int) -> None:
    positions = range(1, 80)
    ends = [p for p in positions if window_ends_at(p, frames, stride)]
    assert ends[0] == frames and set(np.diff(ends)) == {stride}  # the first when the ring fills, then every stride
    held = {p for end in ends for p in range(end - frames + 1, end + 1)}
    settled = range(1, ends[-1] + 1)  # frames after the last end: their window lies beyond the range
    assert [frame_is_read(p, frames, stride) for p in settled] == [p in held for p in settled]
    assert all(frame_is_read(p, frames, stride) for p in positions) == (stride <= frames)
