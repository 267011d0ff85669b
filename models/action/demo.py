"""The demo clip: nofight clips then fight clips stitched into one video, and its score timeline.

    python -m models.action.demo make  --data DIR --out deploy/samples/fight-demo.mp4
    python -m models.action.demo score --model PACKAGE --video deploy/samples/fight-demo.mp4 --plot OUT.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.action.video import read_clip

FOURCCS = ("avc1", "mp4v")  # H.264 when this OpenCV build has an encoder for it
SIZE = (640, 360)
FPS = 15.0


def open_writer(path: Path, fps: float, size: tuple[int, int]) -> tuple[cv2.VideoWriter, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    for code in FOURCCS:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*code), fps, size)  # type: ignore[attr-defined]
        if writer.isOpened():
            return writer, code
        writer.release()
    raise RuntimeError(f"OpenCV cannot write {path} with any of {FOURCCS}")


def stitch(clips: list[tuple[Path, str]], out: Path, fps: float = FPS, size: tuple[int, int] = SIZE
           ) -> dict[str, Any]:
    """Write ``clips`` (path, label) back to back at ``fps``; returns the segment list."""
    writer, codec = open_writer(out, fps, size)
    segments, t = [], 0.0
    try:
        for path, label in clips:
            frames = read_clip(path, fps, size)
            for f in frames:
                writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
            segments.append({"clip": path.name, "label": label, "start_s": round(t, 3),
                             "end_s": round(t + len(frames) / fps, 3)})
            t += len(frames) / fps
    finally:
        writer.release()
    return {"video": str(out), "codec": codec, "fps": fps, "size": list(size), "segments": segments}


def pick_clips(data: Path, per_class: int) -> list[tuple[Path, str]]:
    nofight = sorted((data / "nofight").glob("*.mp4"))[:per_class]
    fight = sorted((data / "fight").glob("*.mp4"))[:per_class]
    return [(p, "nofight") for p in nofight] + [(p, "fight") for p in fight]


def score_video(package_dir: Path, video: Path) -> tuple[np.ndarray, np.ndarray]:
    """Seconds and fight score of every sampled frame, through ``pipeline.runner.score_frames``."""
    from pipeline.modelpkg import load_package
    from pipeline.runner import score_frames

    package = load_package(package_dir)
    m = package.manifest
    fps = m.window.fps or 5.0
    frames = read_clip(video, fps, (m.input.width, m.input.height))
    scores = score_frames(package, list(frames), stride=1)
    return np.arange(len(frames)) / fps, scores.frame_scores


def plot_timeline(times: np.ndarray, scores: np.ndarray, segments: list[dict[str, Any]], threshold: float,
                  path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 2.8))
    for s in segments:
        if s["label"] == "fight":
            ax.axvspan(s["start_s"], s["end_s"], color="tab:red", alpha=0.12)
    ax.plot(times, scores, color="black", label="fight score")
    ax.axhline(threshold, color="tab:red", linestyle="--", label="threshold")
    ax.set_xlabel("seconds (shaded: fight clips)")
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    make = sub.add_parser("make")
    make.add_argument("--data", type=Path, required=True)
    make.add_argument("--out", type=Path, required=True)
    make.add_argument("--per-class", type=int, default=8)
    score = sub.add_parser("score")
    score.add_argument("--model", type=Path, required=True)
    score.add_argument("--video", type=Path, required=True)
    score.add_argument("--segments", type=Path, help="JSON written by 'make'")
    score.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "make":
        info = stitch(pick_clips(args.data, args.per_class), args.out)
        print(json.dumps(info, indent=1))
        return 0
    times, scores = score_video(args.model, args.video)
    segments = json.loads(args.segments.read_text())["segments"] if args.segments else []
    for s in segments:
        inside = scores[(times >= s["start_s"]) & (times < s["end_s"])]
        s["max_score"], s["mean_score"] = round(float(inside.max()), 3), round(float(inside.mean()), 3)
        print(f"{s['start_s']:6.1f}-{s['end_s']:5.1f}s {s['label']:8s} {s['clip']:12s} "
              f"max {s['max_score']:.2f} mean {s['mean_score']:.2f}")
    if args.plot:
        from pipeline.modelpkg import load_package

        threshold = load_package(args.model).manifest.threshold or 0.5
        plot_timeline(times, scores, segments, threshold, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
