"""Where a GPU engine's time goes in the live runner: cProfile of PackageRunner.process.

    python -m benchmarks.gpu_profile --models build/models --engine torch-cuda [--fp16]

Feeds real frames (deploy/samples/fight-demo.mp4) through the runner in the batch sizes an
inference worker sees (1..16, varying), as the live path does, and prints per-call latency and
the functions that hold the time. The microbenchmark (gpu_bench engines) times graphs alone.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from pathlib import Path

import cv2
import numpy as np

from pipeline.modelpkg import load_package
from pipeline.runner import FrameMeta, PackageRunner, Subscription

SAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "samples" / "fight-demo.mp4"


def frames(size: tuple[int, int], count: int) -> np.ndarray:
    cap, out = cv2.VideoCapture(str(SAMPLE)), []
    while len(out) < count:
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        out.append(cv2.cvtColor(cv2.resize(frame, size), cv2.COLOR_BGR2RGB))
    return np.stack(out)


def profile_package(package_dir: Path, engine: str, options: dict[str, object], calls: int) -> None:
    package = load_package(package_dir)
    name = package.manifest.name
    size = (package.manifest.input.width, package.manifest.input.height)
    runner = PackageRunner([package], engine, options)
    cams = [f"cam{i}" for i in range(8)]
    for cam in cams:
        runner.add_camera(cam, [Subscription(name, stride=4)])
    pool = frames(size, 64)
    rng = np.random.default_rng(0)
    seq = dict.fromkeys(cams, 0)

    def call(batch: int) -> None:
        metas = []
        for i in range(batch):
            cam = cams[i % len(cams)]
            metas.append(FrameMeta(cam, seq[cam], time.time(), 0.0))
            seq[cam] += 1
        runner.process(pool[rng.integers(0, len(pool), batch)], metas)

    started = time.perf_counter()
    for b in (1, 2, 3, 5, 8, 11, 16) * 3:  # warm-up: allocator, first kernels (graphs: captured at load)
        call(b)
    captures = {Path(str(getattr(e, "path", "?"))).name: getattr(e, "captures", None)
                for e in runner._engines.values()}
    print(f"== {name}: warm-up calls {time.perf_counter() - started:.2f} s; CUDA graph captures "
          f"(batch, s) per graph: {captures}")
    profile, times = cProfile.Profile(), []
    cpu0, wall0, frames_done = time.process_time(), time.perf_counter(), 0
    profile.enable()
    for _ in range(calls):
        b = int(rng.integers(1, 17))
        frames_done += b
        t0 = time.perf_counter()
        call(b)
        times.append((time.perf_counter() - t0) / b)
    profile.disable()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    print(f"== {name}: {frames_done} frames, {wall / frames_done * 1e3:.2f} ms/frame wall, "
          f"{cpu / frames_done * 1e3:.2f} ms/frame CPU (all threads; compare a live worker's cpu_by_process)")
    print(f"== {name} on {engine} {options}: {np.median(times) * 1e3:.2f} ms/frame median, "
          f"p90 {np.percentile(times, 90) * 1e3:.2f}; cpu count {os.cpu_count()}")
    pstats.Stats(profile).sort_stats("tottime").print_stats(18)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=Path, default=Path("build/models"))
    parser.add_argument("--engine", default="torch-cuda")
    parser.add_argument("--fp16", action="store_true")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="torch-cuda's device")
    parser.add_argument("--calls", type=int, default=150)
    args = parser.parse_args()
    options: dict[str, object] = {}
    if args.engine == "torch-cuda":
        options = {"fp16": args.fp16, "allow_precision_loss": True, "batch_sizes": [1, 8, 16, 32],
                   "device": args.device}
    for name in ("fight", "ped2-anomaly"):
        profile_package(args.models / name, args.engine, options, args.calls)


if __name__ == "__main__":
    main()
