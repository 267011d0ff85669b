"""Shared settings for the hypothesis fuzz tests, and the memory cap they check.

Seed policy: CI (the default ``ci`` profile) is derandomized: every run tries the same examples,
derived from each test's name, so a red CI is reproducible and never flaky, and nothing is
written to a ``.hypothesis`` database. ``HYPOTHESIS_PROFILE=explore`` draws fresh random
examples (10x as many) to look further; a failure there prints the example and a
``@reproduce_failure`` line: add that example as a regression test before fixing it.
"""

from __future__ import annotations

import os
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, settings

SCALE = 10 if os.environ.get("HYPOTHESIS_PROFILE") == "explore" else 1
_COMMON: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow,
                                                                       HealthCheck.data_too_large]}
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, **_COMMON)
settings.register_profile("explore", derandomize=False, print_blob=True, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def examples(n: int) -> Callable[[Any], Any]:
    """``@examples(n)``: run n examples (n x 10 when exploring)."""
    return settings(max_examples=n * SCALE)


@contextmanager
def memory_cap(limit_bytes: int) -> Iterator[None]:
    """Fail if the block's Python allocations peak above ``limit_bytes`` (tracemalloc)."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        yield
    finally:
        peak = tracemalloc.get_traced_memory()[1] - base
        if started:
            tracemalloc.stop()
    assert peak <= limit_bytes, f"allocated {peak / 2**20:.1f} MiB, cap {limit_bytes / 2**20:.0f} MiB"
