"""Video for tests: a clip's first frames as the models see them, and FFmpeg-side checks (what
ffprobe says of a file, whether it decodes, faststart)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np


def rgb_frames(path: Path, count: int, size: tuple[int, int]) -> np.ndarray:
    """The first ``count`` frames of ``path``, area-resized to ``size`` (width, height), RGB,
    stacked ``[count, h, w, 3]``; fails if the clip is shorter."""
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        while len(frames) < count:
            ok, bgr = cap.read()
            assert ok, f"{path} has fewer than {count} frames"
            frames.append(cv2.cvtColor(cv2.resize(bgr, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    return np.stack(frames)


def ffmpeg_missing() -> str | None:
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    return f"{', '.join(missing)} not installed (deploy/install-system-deps.sh)" if missing else None


def probe(path: Path) -> dict[str, Any]:
    """Duration (s) and the video stream's codec, pixel format and size, as ffprobe reports them."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "format=duration:stream=codec_name,pix_fmt,width,height", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True, timeout=30)
    data = json.loads(out.stdout)
    return {"duration": float(data["format"]["duration"]), **data["streams"][0]}


def decode_errors(path: Path) -> str:
    """The decoder's complaints when decoding every frame ("" for a clean file with frames)."""
    done = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
                           "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True, timeout=60)
    frames = done.stdout.strip()
    if done.returncode != 0 or not frames.isdigit() or int(frames) == 0:
        return f"no frames decoded (exit {done.returncode}): {done.stderr.strip()}"
    return done.stderr.strip()


def is_faststart(path: Path) -> bool:
    """The moov atom comes before the media data, so a browser can start playing at once."""
    head = path.read_bytes()
    return 0 <= head.find(b"moov") < head.find(b"mdat")
