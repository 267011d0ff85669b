"""The fight model's speed on one CPU core: 2-second clips scored from scratch.

Each clip is a fresh camera: all its frames go through the runtime ``frame_delta`` feature
(resize 224 -> 160 and the difference with the previous frame), the ``motion`` graph and, every
``stride`` frames once the first window is full, the ``head``; nothing is cached between clips.
That is ``pipeline.runner.score_frames``, the live code path (package stride, batches of 16
frames); this module keeps the ``PackageRunner`` to read its ``StageTimings`` as well.

Clips are real: the first 2 s of the shared fight clips (both classes), else the shipped demo clip
cut into 2 s pieces; decoded, sampled at the package's ``window.fps`` and resized to its input
before timing, since capture does that work. One core: the process is pinned to one CPU, ONNX
Runtime runs one intra-op thread (sequential, one inter-op thread), OpenCV one thread.

FP32 and INT8 (motion graph quantized) take turns in rounds so that both see the same background
load; their ratio is the figure to trust on a shared machine, the absolute rates are context.
The bar of the issue: at least ``BAR_CLIPS_PER_S`` clips/s on one core.

    python -m benchmarks.action [--quick] [--fp32 PACKAGE] [--int8 PACKAGE]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.common import machine_info, ratio
from pipeline.modelpkg import ModelPackage, load_package
from pipeline.runner import PackageRunner, score_frames

ROOT = Path(__file__).resolve().parents[1]
FIGHT_DATA = ROOT.parent / "shared" / "data" / "fight" / "train"
DEMO_CLIP = ROOT / "deploy" / "samples" / "fight-demo.mp4"
CLIP_SECONDS = 2.0
BAR_CLIPS_PER_S = 4.0
THREADS = 1
BATCH = 16  # frames per runner call (score_frames' default)


def load_clips(package: ModelPackage, count: int) -> tuple[list[np.ndarray], str]:
    """``count`` clips ``[F, H, W, 3]`` of ``CLIP_SECONDS`` at the package's fps and input size, and where
    they came from."""
    from models.action.video import loop_pad, read_clip

    m = package.manifest
    fps = m.window.fps or 5.0
    frames = round(CLIP_SECONDS * fps)
    size = (m.input.width, m.input.height)
    paths = _shared_clips(count)
    if paths:
        clips = [loop_pad(read_clip(p, fps, size), frames)[:frames] for p in paths]
        return clips, f"first {CLIP_SECONDS:g} s of {len(clips)} clips of shared/data/fight/train (both classes)"
    demo = read_clip(DEMO_CLIP, fps, size)
    clips = [demo[i:i + frames] for i in range(0, len(demo) - frames + 1, frames)][:count]
    return clips, f"{len(clips)} consecutive {CLIP_SECONDS:g} s pieces of deploy/samples/fight-demo.mp4"


def _shared_clips(count: int) -> list[Path]:
    """Up to ``count`` clip files, taken from the class folders in turn (sorted names)."""
    if not FIGHT_DATA.is_dir():
        return []
    folders = [sorted(d.glob("*.mp4")) for d in sorted(FIGHT_DATA.iterdir()) if d.is_dir()]
    taken = [p for row in zip(*folders, strict=False) for p in row]
    return taken[:count]


@contextlib.contextmanager
def one_core() -> Iterator[int]:
    """Pin this thread (and the threads it starts) to one CPU and OpenCV to one thread; undo on exit."""
    allowed = os.sched_getaffinity(0)
    cv_threads = cv2.getNumThreads()
    core = min(allowed)
    os.sched_setaffinity(0, {core})
    cv2.setNumThreads(1)
    try:
        yield core
    finally:
        cv2.setNumThreads(cv_threads)
        os.sched_setaffinity(0, allowed)


def score_clip(package: ModelPackage, runner: PackageRunner, frames: np.ndarray) -> int:
    """Score one clip from scratch; returns the number of windows scored."""
    result = score_frames(package, list(frames), stride=package.manifest.window.stride, batch=BATCH, runner=runner)
    return len(result.window_scores)


def measure(packages: dict[str, ModelPackage], clips: list[np.ndarray], rounds: int) -> dict[str, dict[str, Any]]:
    """Per package: seconds of every round over all clips, windows scored and runner stage seconds."""
    runners = {name: PackageRunner([p], engine_options={"intra_op_threads": THREADS}) for name, p in packages.items()}
    for name, package in packages.items():
        score_clip(package, runners[name], clips[0])  # warm-up: first runs allocate
        runners[name].timings.drain()
    raw: dict[str, dict[str, Any]] = {name: {"rounds_s": [], "windows": 0} for name in packages}
    for _ in range(rounds):
        for name, package in packages.items():
            start = time.perf_counter()
            raw[name]["windows"] += sum(score_clip(package, runners[name], frames) for frames in clips)
            raw[name]["rounds_s"].append(time.perf_counter() - start)
    for name in packages:
        raw[name]["stage_s"] = runners[name].timings.drain()
    return raw


def summarize(raw: dict[str, Any], package: ModelPackage, path: Path, n_clips: int, n_frames: int) -> dict[str, Any]:
    """Rates (median round and best round), the per-frame stage split and the bar."""
    rounds = raw["rounds_s"]
    total_s, frames = sum(rounds), n_frames * len(rounds)
    per_frame = {k: round(v / frames * 1e3, 3) for k, v in sorted(raw["stage_s"].items(), key=lambda x: -x[1])}
    per_frame["other"] = round((total_s - sum(raw["stage_s"].values())) / frames * 1e3, 3)
    clips_per_s = n_clips / float(np.median(rounds))
    return {
        "package": str(path),
        "clips_per_s": round(clips_per_s, 2),
        "clips_per_s_best_round": round(n_clips / min(rounds), 2),
        "frames_per_s": round(n_frames / float(np.median(rounds)), 1),
        "ms_per_frame": round(total_s / frames * 1e3, 3),
        "stage_ms_per_frame": per_frame,
        "window_ms_per_window": round(raw["stage_s"].get(f"window:{package.name}", 0.0) / raw["windows"] * 1e3, 3),
        "windows_per_clip": raw["windows"] / (n_clips * len(rounds)),
        "rounds_s": [round(r, 3) for r in rounds],
        "meets_4_clips_per_s": clips_per_s >= BAR_CLIPS_PER_S,
    }


def workload(package: ModelPackage, clips: list[np.ndarray], source: str, rounds: int, core: int) -> dict[str, Any]:
    import onnxruntime

    m = package.manifest
    delta = next(iter(m.runtime_features.values()), {})
    return {
        "model": m.name,
        "clip": f"{CLIP_SECONDS:g} s at {m.window.fps:g} fps = {len(clips[0])} frames, {source}",
        "input": f"{m.input.width}x{m.input.height} uint8 RGB frames, decoded and resized before timing "
                 f"(capture's work)",
        "per_frame": f"runtime {delta.get('kind')} at {delta.get('width')}x{delta.get('height')} "
                     f"(resize + difference), then the motion graph",
        "window": f"{m.window.frames} frames, stride {m.window.stride} (package default), from scratch per clip",
        "threads": f"one core: process pinned to CPU {core}, ORT intra_op_threads={THREADS}, inter_op 1, "
                   f"sequential; OpenCV 1 thread",
        "engine": f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider",
        "path": f"pipeline.runner.score_frames, batches of {BATCH} frames",
        "clips": len(clips), "rounds": rounds,
        "rates": "clips/s and frames/s of the median round, ms per frame (total and per runner stage) over all "
                 "rounds; FP32 and INT8 rounds interleaved",
        "bar": f">= {BAR_CLIPS_PER_S:g} clips/s on one core",
    }


def run(quick: bool = False, fp32: Path | None = None, int8: Path | None = None) -> dict[str, Any]:
    """FP32 and INT8 fight packages (default: the shipped one, built by benchmarks.profile) on one core."""
    if fp32 is None or int8 is None:
        from benchmarks.profile import build_fight

        fp32, int8 = fp32 or build_fight(int8=False), int8 or build_fight(int8=True)
    paths = {"fp32": fp32, "int8": int8}
    packages = {name: load_package(path) for name, path in paths.items()}
    clips, source = load_clips(packages["fp32"], 6 if quick else 24)
    rounds = 2 if quick else 5
    n_frames = sum(map(len, clips))
    machine = machine_info()  # before pinning: its load average says what else ran
    with one_core() as core:
        raw = measure(packages, clips, rounds)
    results = {name: summarize(raw[name], packages[name], paths[name], len(clips), n_frames) for name in packages}
    return {
        "workload": workload(packages["fp32"], clips, source, rounds, core),
        **results,
        "int8_vs_fp32_speedup": {
            "clips_per_s": ratio(results["int8"]["clips_per_s"], results["fp32"]["clips_per_s"]),
            "frame:motion": ratio(results["fp32"]["stage_ms_per_frame"].get("frame:motion", 0.0),
                                  results["int8"]["stage_ms_per_frame"].get("frame:motion", 0.0)),
        },
        "machine": machine,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.action", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer clips and rounds")
    parser.add_argument("--fp32", type=Path, help="FP32 fight package (default: build the shipped one)")
    parser.add_argument("--int8", type=Path, help="INT8 fight package (default: build the shipped one)")
    args = parser.parse_args()
    json.dump(run(args.quick, args.fp32, args.int8), sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
