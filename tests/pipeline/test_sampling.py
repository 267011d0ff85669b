import pytest

from pipeline.routing import assign_workers
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
@pytest.mark.parametrize("count", [4, 16, 33])
def test_routing_is_stable_and_balanced(workers: int, count: int) -> None:
    ids = [f"cam{i:02d}" for i in range(count)]
    first = assign_workers(ids, workers)
    assert first == assign_workers(list(reversed(ids)), workers)  # order of the config does not matter
    counts = [list(first.values()).count(w) for w in range(workers)]
    assert max(counts) - min(counts) <= 1, counts


def test_pinned_cameras_stay_and_the_rest_fill_up() -> None:
    ids = ["a", "b", "c", "d", "e", "f"]
    assignment = assign_workers(ids, 2, pinned={"a": 1, "b": 1})
    assert assignment["a"] == assignment["b"] == 1
    assert sorted(assignment.values()).count(0) == 3  # the unpinned four balance the load
