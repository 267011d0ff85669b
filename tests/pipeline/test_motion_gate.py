"""The motion gate on real footage: the empty-room start of the people clip, Ped2, fight clips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from pipeline.motion_gate import CameraGate, GateMetrics, MotionDetector, MotionGate, MotionGateConfig
from pipeline.sampling import RateSampler
from tests.conftest import PEOPLE_CLIP

GATE = MotionGateConfig(enabled=True)
ONSET_S = 6.0  # someone walks into the empty room of people.mp4 at about 6 s


def sampled(path: Path, fps: float = 10.0, seconds: float = 1e9) -> list[tuple[float, np.ndarray]]:
    """(stream time, BGR frame) at ``fps``, as capture samples a file."""
    cap = cv2.VideoCapture(str(path))
    native = cap.get(cv2.CAP_PROP_FPS) or fps
    sampler, out, i = RateSampler(fps), [], 0
    while cap.grab():
        t, i = i / native, i + 1
        if t > seconds:
            break
        if sampler.keep(t):
            out.append((t, cap.retrieve()[1]))
    cap.release()
    return out


def folder(path: Path) -> list[tuple[float, np.ndarray]]:
    return [(i / 10.0, cv2.imread(str(p))) for i, p in enumerate(sorted(path.glob("*.jpg")))]


@pytest.fixture(scope="module")
def people() -> list[tuple[float, np.ndarray]]:
    return sampled(PEOPLE_CLIP, seconds=20.0)


def run_gate(frames: list[tuple[float, np.ndarray]], config: MotionGateConfig = GATE,
             registry: CollectorRegistry | None = None) -> tuple[list[int], CameraGate[int]]:
    gate: CameraGate[int] = CameraGate("cam", config, GateMetrics(registry) if registry else None, keepalive_phase_s=0)
    sent: list[int] = []
    for seq, (t, frame) in enumerate(frames):
        sent += gate.offer(t, frame, seq)
    return sent, gate


def test_empty_room_is_still_and_someone_walking_in_moves(people: list[tuple[float, np.ndarray]]) -> None:
    detector = MotionDetector(GATE)
    moved = [(t, detector(frame)) for t, frame in people]
    still = [m for t, m in moved if t < ONSET_S - 0.3]
    walking = [m for t, m in moved if 7.0 <= t <= 10.0]
    assert len(still) > 50 and max(still) < GATE.min_area  # compression noise stays under the bar
    assert min(walking) > 5 * GATE.min_area


def test_still_start_closed_then_opens_with_preroll(people: list[tuple[float, np.ndarray]]) -> None:
    registry = CollectorRegistry()
    sent, gate = run_gate(people, registry=registry)
    onset = next(i for i, (t, _) in enumerate(people) if t >= ONSET_S - 0.3)
    before = [s for s in sent if s < onset - GATE.preroll_frames]
    # Still: only the keep-alive burst at the start (8 consecutive frames), nothing else.
    assert before == list(range(GATE.keepalive_frames))
    opened_at = next(s for s in sent if s >= onset - GATE.preroll_frames)
    first_moving = opened_at + GATE.preroll_frames
    assert abs(people[first_moving][0] - ONSET_S) < 0.6
    # From the pre-roll on, every frame goes out while the person walks: one unbroken run.
    run = [s for s in sent if s >= opened_at and people[s][0] <= 10.0]
    assert run == list(range(opened_at, run[-1] + 1)) and people[run[-1]][0] >= 9.9
    assert gate.gate.stats.openings >= 1
    gated = registry.get_sample_value("vidwatch_frames_gated_total", {"camera": "cam"})
    assert gated == gate.gate.stats.gated and gated >= onset - GATE.preroll_frames - GATE.keepalive_frames
    assert gate.gate.stats.gated + gate.gate.stats.passed + len(gate.gate._preroll) == len(people)


def test_gate_closes_after_hold_and_keepalive_bursts_return(people: list[tuple[float, np.ndarray]]) -> None:
    # The still start played, then the first seconds of walking, then the still start again.
    still = [f for t, f in people if t < ONSET_S - 0.3]
    walk = [f for t, f in people if ONSET_S <= t < ONSET_S + 3]
    frames = [*still, *walk, *still, *still, *still]
    timed = [(i / 10.0, f) for i, f in enumerate(frames)]
    registry = CollectorRegistry()
    sent, gate = run_gate(timed, MotionGateConfig(enabled=True, hold_s=1.0, keepalive_every_s=5.0),
                          registry)
    back_still = len(still) + len(walk)
    runs = np.split(np.array(sent), np.where(np.diff(sent) != 1)[0] + 1)
    assert len(runs[0]) == 8 and len(still) - 8 <= runs[1][0] <= len(still) - 7  # burst; pre-roll + walk
    # The cut back to the empty room is itself a change the background absorbs in a few seconds;
    # then the gate closes (hold_s after the last moving frame) and only bursts of 8 every 5 s go out.
    assert runs[1][-1] > back_still and not gate.gate.is_open
    assert registry.get_sample_value("vidwatch_motion_gate_open", {"camera": "cam"}) == 0
    bursts = runs[2:]
    assert len(bursts) >= 2 and all(len(b) == 8 for b in bursts)
    assert all(b2[0] - b1[0] == 50 for b1, b2 in zip(bursts, bursts[1:], strict=False))
    assert bursts[0][0] - runs[1][-1] == 51  # first burst keepalive_every_s after closing


def test_masked_region_never_opens_the_gate(people: list[tuple[float, np.ndarray]]) -> None:
    whole = MotionGateConfig(enabled=True, masks=[[(0, 0), (1, 0), (1, 1), (0, 1)]])
    sent, gate = run_gate(people, whole)
    assert gate.gate.stats.openings == 0
    assert sent == [*range(8), *range(100, 108), 200]  # bursts at 0, 10 and 20 s of the 20 s


def test_disabled_gate_passes_every_frame(people: list[tuple[float, np.ndarray]]) -> None:
    sent, _ = run_gate(people[:40], MotionGateConfig(enabled=False))
    assert sent == list(range(40))


def test_fight_clips_keep_the_gate_open(shared_data: Path) -> None:
    for clip in ("fight/train/fight/fi001.mp4", "fight/train/fight/fi010.mp4"):
        frames = sampled(shared_data / clip)
        sent, gate = run_gate(frames)
        assert gate.gate.stats.openings == 1 and gate.gate.is_open
        assert len(sent) >= len(frames) - 2  # the first frame only seeds the background


def test_ped2_walkway_with_people_keeps_the_gate_open(shared_data: Path) -> None:
    frames = folder(shared_data / "ucsd_ped2" / "test" / "Test001")
    sent, gate = run_gate(frames)
    assert len(sent) / len(frames) > 0.95


def test_state_machine_hold_and_preroll_without_images() -> None:
    gate: MotionGate[int] = MotionGate(MotionGateConfig(enabled=True, hold_s=0.5, preroll_frames=3,
                                                        keepalive_frames=0))
    motion = [0.0] * 10 + [1.0] * 3 + [0.0] * 10
    sent = [s for i, m in enumerate(motion) for s in gate.offer(i / 10, m, i)]
    # pre-roll 7..9, the moving frames 10..12, then hold: frames up to t <= 1.2 + 0.5
    assert sent == list(range(7, 18))
    assert not gate.is_open and gate.stats.gated == 7 + 2 and len(gate._preroll) == 3  # 18..22: 2 fell out


def test_config_rejects_bad_masks() -> None:
    with pytest.raises(ValueError, match="at least 3 corners"):
        MotionGateConfig(masks=[[(0, 0), (1, 1)]])
    with pytest.raises(ValueError, match="fractions"):
        MotionGateConfig(masks=[[(0, 0), (2, 0), (1, 1)]])


def test_gate_held_open_while_models_calibrate(people: list[tuple[float, np.ndarray]]) -> None:
    gate: CameraGate[int] = CameraGate("cam", GATE, full_rate_s=3.0)
    sent = [s for seq, (t, frame) in enumerate(people) for s in gate.offer(t, frame, seq)]
    # 0..3 s at full rate (calibration sees every frame), held hold_s more, then still until the walk
    run = next(i for i in range(1, len(sent)) if sent[i] != sent[i - 1] + 1)
    assert sent[:run] == list(range(run)) and 4.8 <= people[run - 1][0] <= 5.0
    assert 5.0 < people[sent[run]][0] < 6.0  # the next frame sent is the pre-roll of the walk-in


def test_full_rate_seconds_follow_live_calibration(demo_package_path: Path) -> None:
    from pipeline.modelpkg import load_package
    from pipeline.motion_gate import full_rate_seconds

    pkg = load_package(demo_package_path)  # calibrates live, ships no state
    assert pkg.manifest.calibration is not None and pkg.shipped_state() is None
    assert full_rate_seconds([None], [pkg]) == pkg.manifest.calibration.seconds
    assert full_rate_seconds([7.0], [pkg]) == 7.0


def test_cameras_started_together_burst_at_their_own_phase(people: list[tuple[float, np.ndarray]]) -> None:
    still = [(t, f) for t, f in people if t < ONSET_S - 0.3]  # 5.7 s of the empty room
    config = MotionGateConfig(enabled=True, keepalive_every_s=5.0)
    firsts = {}
    for camera in (f"cam{i:02d}" for i in range(8)):
        gate: CameraGate[int] = CameraGate(camera, config)
        assert 0 <= gate.gate.keepalive_phase_s < config.keepalive_every_s
        sent = [s for seq, (t, frame) in enumerate(still) for s in gate.offer(t, frame, seq)]
        assert sent[:8] == list(range(sent[0], sent[0] + 8))  # a burst of 8 consecutive frames ...
        assert all(s >= sent[0] + 50 for s in sent[8:])  # ... and the next one 5 s later
        assert abs(still[sent[0]][0] - gate.gate.keepalive_phase_s) <= 0.1
        firsts[camera] = sent[0]
    starts = sorted(still[s][0] for s in firsts.values())  # spread over the interval, not all at once
    assert len(set(starts)) >= 6 and starts[-1] - starts[0] > config.keepalive_every_s / 2
