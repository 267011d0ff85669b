"""The two-pass area resize gives exactly OpenCV's INTER_AREA bytes, on real footage."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.resize import area_resize
from tests.conftest import PEOPLE_CLIP, ROOT

FIGHT_DEMO = ROOT / "deploy" / "samples" / "fight-demo.mp4"


def _frames(path: str, size: tuple[int, int] | None, every: int = 15, count: int = 12) -> list[np.ndarray]:
    cap = cv2.VideoCapture(path)
    frames: list[np.ndarray] = []
    index = 0
    while len(frames) < count:
        ok, frame = cap.read()
        if not ok:
            break
        if index % every == 0:
            frames.append(frame if size is None else cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
        index += 1
    cap.release()
    assert frames, f"no frames read from {path}"
    return frames


# (source frame size or None for the clip's own, target size): capture to the models' inputs
# (224x224, 360x240), the fight model's 160x160 frame deltas from 224x224, a 1080p camera.
CASES = [(None, (224, 224)), (None, (360, 240)), ((640, 360), (224, 224)), ((224, 224), (160, 160)),
         ((1920, 1080), (224, 224)), ((1280, 720), (360, 240))]


@pytest.mark.parametrize(("source", "size"), CASES)
def test_two_pass_area_resize_is_bit_identical_to_opencv(source: tuple[int, int] | None,
                                                         size: tuple[int, int]) -> None:
    for clip in (PEOPLE_CLIP, FIGHT_DEMO):
        for frame in _frames(str(clip), source):
            expected = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
            got = area_resize(frame, size)
            assert got.dtype == np.uint8 and got.shape == expected.shape
            assert np.array_equal(got, expected), f"{clip.name} {frame.shape} -> {size}"


def test_integer_factors_upscales_and_grey_fall_back_to_opencv() -> None:
    frame = _frames(str(PEOPLE_CLIP), (640, 360), count=1)[0]
    for size in ((320, 180), (160, 90), (1280, 720), (600, 350)):  # OpenCV's own path is exact there
        assert np.array_equal(area_resize(frame, size), cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(area_resize(grey, (224, 224)), cv2.resize(grey, (224, 224), interpolation=cv2.INTER_AREA))
