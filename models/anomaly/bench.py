"""Frames per second of an anomaly package through the live runner, on the cores this process has.

    taskset -c 0 python -m models.anomaly.bench PACKAGE FRAME_DIR [--frames 300] [--stride 4]
    taskset -c 0 python -m models.anomaly.bench --flow PRESET[@SCALE][+FAR:ROWS] FRAME_DIR   # the flow alone
    taskset -c 0 python -m models.anomaly.bench --flow medium --size 224x224 FRAME_DIR   # at anomaly-224's input

Counts everything the inference stage does per frame (DIS flow, trunk, window graph, ring
buffers) on frames already decoded at the package input size; JPEG decoding is the capture
stage's cost and is left out. ONNX Runtime and OpenCV use one thread each.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from models.anomaly.footage import read_clip
from pipeline.modelpkg import load_package
from pipeline.runner import FrameMeta, PackageRunner, Subscription


def frames_per_second(package_dir: Path, clip: Path, count: int = 300, batch: int = 1,
                      stride: int | None = None) -> dict[str, object]:
    """CPU and wall frames/s of one camera running the package with window ``stride`` (None: the package's)."""
    cv2.setNumThreads(1)
    package = load_package(package_dir)
    m = package.manifest
    frames = list(read_clip(clip, m.input.height, m.input.width))
    frames = [frames[i % len(frames)] for i in range(count)]
    runner = PackageRunner([package], engine_options={"intra_op_threads": 1})
    runner.add_camera("bench", [Subscription(package.name, stride=stride)])
    warmup = batch * max(1, -(-2 * m.window.frames // batch))
    for i in range(0, count, batch):
        if i == warmup:
            wall, cpu = time.perf_counter(), time.process_time()
            runner.timings.seconds.clear()
        chunk = frames[i:i + batch]
        runner.process(np.stack(chunk), [FrameMeta("bench", i + j, 0.0, (i + j) / 10) for j in range(len(chunk))])
    measured = count - warmup
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    # On a shared machine wall time includes other processes' turns on the core; CPU time does not.
    return {"fps_wall": round(measured / wall, 1), "fps_cpu": round(measured / cpu, 1),
            "cpu_ms_per_frame": round(1000 * cpu / measured, 2),
            "wall_stages_ms_per_frame": {k: round(1000 * v / measured, 2) for k, v in runner.timings.seconds.items()}}


def flow_cost(flow_text: str, clip: Path, count: int = 300, height: int = 240,
              width: int = 360) -> dict[str, object]:
    """CPU ms per frame of the ``flow_cells`` feature alone (DIS + cell statistics), one OpenCV thread."""
    from pipeline.features.flow import FlowCells, parse_flow

    cv2.setNumThreads(1)
    frames = list(read_clip(clip, height, width))
    frames = [frames[i % len(frames)] for i in range(count + 5)]
    flow = FlowCells(height, width, **parse_flow(flow_text))
    for frame in frames[:5]:
        flow(frame)
    wall, cpu = time.perf_counter(), time.process_time()
    for frame in frames[5:]:
        flow(frame)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"flow": flow_text, "cpu_ms_per_frame": round(1000 * cpu / count, 2),
            "wall_ms_per_frame": round(1000 * wall / count, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path, nargs="?")
    parser.add_argument("clip", type=Path)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--stride", type=int, default=None,
                        help="window stride (default: the package's; the stream bench runs 4)")
    parser.add_argument("--flow", help="time only the flow feature: DIS preset[@scale][+far_preset:rows], "
                                       "e.g. fast@0.5 or ultrafast@1+medium:5")
    parser.add_argument("--size", default="240x360", help="with --flow: HEIGHTxWIDTH the frames are resized to "
                                                          "(240x360: ped2-anomaly; 224x224: the bench's anomaly-224)")
    args = parser.parse_args()
    if args.flow:
        try:
            height, width = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            parser.error(f"--size {args.size!r} is not HEIGHTxWIDTH, e.g. 224x224")
        result = flow_cost(args.flow, args.clip, args.frames, height, width)
        print(json.dumps({**result, "size": f"{height}x{width}"}))
        return
    if args.package is None:
        parser.error("PACKAGE is required unless --flow is given")
    print(json.dumps(frames_per_second(args.package, args.clip, args.frames, args.batch, args.stride)))


if __name__ == "__main__":
    main()
