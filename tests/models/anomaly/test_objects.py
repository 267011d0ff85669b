"""The object-level prototype: MOG2 finds a mover on a still background; objects unusual for their
foot row (size, aspect, speed per height) score above normal ones."""

from __future__ import annotations

import numpy as np

from models.anomaly.objects import ObjectModel, clip_objects


def _frames(count: int, box: tuple[int, int] | None) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    background = rng.integers(60, 90, (240, 360, 3), dtype=np.uint8)
    out = []
    for i in range(count):
        frame = background.copy()
        if box is not None:
            h, w = box
            x = 20 + 4 * i
            frame[200 - h:200, x:x + w] = 230
        out.append(frame)
    return out


def test_a_mover_on_a_still_background_is_one_object_with_its_foot_row_and_speed() -> None:
    flow = np.zeros((10, 4, 15, 23), np.float32)
    flow[:, 2] = 4.0  # 4 px/frame everywhere
    objects = clip_objects(_frames(10, (40, 12)), flow, _frames(50, None))
    last = objects[-1]
    assert last.shape == (1, 4)
    bucket, log_h, log_aspect, speed_per_h = last[0]
    assert bucket == 199 // 16 and np.exp(log_h) > 30 and np.exp(log_aspect) < 1
    assert speed_per_h == 4.0 / np.exp(log_h)


def test_objects_unusual_for_their_row_score_higher() -> None:
    rng = np.random.default_rng(1)
    normal = [np.column_stack([np.full(30, 12), rng.normal(3.0, 0.1, 30), rng.normal(-0.7, 0.1, 30),
                               rng.normal(0.05, 0.01, 30)]) for _ in range(5)]
    model = ObjectModel(normal, buckets=15)
    usual = np.array([[12, 3.0, -0.7, 0.05]])
    fast = np.array([[12, 3.0, -0.7, 0.3]])  # same size, six times the speed per body height
    wide = np.array([[12, 3.0, 0.5, 0.05]])  # a cart's aspect
    slow = np.array([[12, 3.0, -0.7, 0.0]])  # slower than normal is not anomalous (one-sided speed)
    scores = model.frame_scores([usual, fast, wide, slow, np.zeros((0, 4))])
    assert scores[1] > 10 * max(scores[0], 1.0) and scores[2] > 10 * max(scores[0], 1.0)
    assert scores[3] < 3 and scores[4] == 0
