"""What every benchmark reports beside its figures: the machine, a memcpy yardstick, timers.

Absolute times on a shared 2-core VM swing by tens of percent between runs, so benchmarks report
ratios of figures measured in the same run (transport vs memcpy, ORT vs torch) and keep the
absolute numbers only as context.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

PACKAGES = ("numpy", "onnxruntime", "pyzmq", "opencv-python-headless", "torch", "onnx")
# CPU features that decide which kernels ORT / torch pick (VNNI and AMX speed up INT8).
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16")


def machine_info() -> dict[str, Any]:
    """Cores, CPU model and features, RAM, GPU (if nvidia-smi exists), library versions."""
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpuinfo_field("model name"),
        "cpu_flags": [f for f in CPU_FLAGS if f in _cpuinfo_field("flags").split()],
        "ram_gib": round(_meminfo_kib("MemTotal") / 2**20, 1),
        "gpu": _gpus(),
        # Other processes share these cores: a high load explains a slow run.
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in PACKAGES},
    }


def _cpuinfo_field(name: str) -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == name:
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _meminfo_kib(name: str) -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _gpus() -> list[str]:
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        out = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def time_calls(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn``, ``repeats`` times after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int, per_round: int) -> dict[str, list[float]]:
    """Seconds per call of each function, taking turns in blocks so that all of them see the
    same background load; one untimed warm-up call each first."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name] += time_calls(fn, per_round, warmup=0)
    return times


def summarize(times: list[float]) -> dict[str, float]:
    """Best and median of a list of durations, in milliseconds."""
    return {"best_ms": round(min(times) * 1e3, 3), "median_ms": round(float(np.median(times)) * 1e3, 3)}


def memcpy_bandwidth(nbytes: int, repeats: int = 20) -> float:
    """Bytes/s of a numpy copy of ``nbytes`` into a preallocated buffer, best of ``repeats``.

    Counts the bytes copied once (not read + write), the same way transport throughput counts
    payload bytes, so the two divide into a meaningful ratio.
    """
    src = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    best = min(time_calls(lambda: np.copyto(dst, src), repeats, warmup=2))
    return nbytes / best


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else float("nan")


def main(run: Callable[[bool], dict[str, Any]]) -> None:
    """Command line of every benchmark: ``python -m benchmarks.<name> [--quick]`` prints JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats and cases (CI)")
    args = parser.parse_args()
    json.dump(run(args.quick), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    json.dump({"machine": machine_info(), "memcpy_1MB_Bps": memcpy_bandwidth(1 << 20)}, sys.stdout, indent=2)
    print()
