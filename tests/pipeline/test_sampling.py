import pytest

from pipeline.routing import worker_for
from pipeline.sampling import RateSampler


@pytest.mark.parametrize("source_fps", [25.0, 30.0, 12.5, 7.3])
def test_rate_sampler_keeps_target_rate_by_timestamp(source_fps: float) -> None:
    sampler = RateSampler(5.0)
    kept = [i / source_fps for i in range(int(source_fps * 20)) if sampler.keep(i / source_fps)]
    assert 5.0 * 20 * 0.9 <= len(kept) <= 5.0 * 20 + 1


def test_rate_sampler_restarts_when_time_goes_back() -> None:
    sampler = RateSampler(5.0)
    assert [sampler.keep(t) for t in (0.0, 0.1, 0.2, 100.0, 0.0)] == [True, False, True, True, True]


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_routing_is_stable_and_balanced(workers: int) -> None:
    ids = [f"cam{i:02d}" for i in range(32)]
    first = [worker_for(c, workers) for c in ids]
    assert first == [worker_for(c, workers) for c in ids]
    counts = [first.count(w) for w in range(workers)]
    assert min(counts) >= 32 / workers / 2, counts  # no worker gets less than half its share
