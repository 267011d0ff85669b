"""Each camera's recent video as a ring of short H.264 MP4 segments on disk, for event clips.

One FFmpeg process per camera writes ``<evidence dir>/ring/<camera>/seg-NNN.mp4`` with the
segment muxer, which bounds the ring itself (``-segment_wrap`` reuses names, ``-segment_list_size``
keeps the index short) and lists every finished segment in ``index.csv`` with its first and last
frame times in *wall-clock* seconds (``-use_wallclock_as_timestamps 1 -copyts``), the clock alert
times use. Two ways in:

- ``copy``: RTSP cameras. FFmpeg opens the stream itself and keeps the camera's own compressed
  packets (``-c copy``): no decode, no re-encode, the picture the camera sent (as Frigate
  records). Segments cut at the camera's keyframes, so a clip starts up to one GOP early.
- ``encode``: files, USB, image folders. The capture reader hands over each *sampled* frame
  (already decoded for the models) and FFmpeg encodes it (libx264 ultrafast, yuv420p, a keyframe
  every half segment). A writer thread with a short queue stands between: a slow encoder drops
  evidence frames, never camera frames.
"""

from __future__ import annotations

import logging
import math
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

from pipeline.config import EvidenceConfig
from pipeline.errors import VidwatchError

logger = logging.getLogger(__name__)

FFMPEG = "ffmpeg"
INDEX_NAME = "index.csv"
_RESTART_S = (1.0, 30.0)
# Encoding FFmpegs end when their stdin closes; stream-copy ones get SIGTERM when their parent dies.
_SETPRIV = shutil.which("setpriv")


def ring_dir(evidence_dir: Path, camera: str) -> Path:
    return evidence_dir / "ring" / camera


def recording_mode(source: str | int) -> str:
    """``copy`` for RTSP URLs (keep the camera's packets), ``encode`` for everything else."""
    return "copy" if isinstance(source, str) and source.lower().startswith(("rtsp://", "rtsps://")) else "encode"


def _segment_args(folder: Path, settings: EvidenceConfig) -> list[str]:
    count = math.ceil(settings.ring_seconds() / settings.segment_s) + 2
    return ["-copyts", "-f", "segment", "-segment_time", f"{settings.segment_s:g}", "-segment_atclocktime", "1",
            "-reset_timestamps", "1", "-segment_format", "mp4", "-segment_list", str(folder / INDEX_NAME),
            "-segment_list_type", "csv", "-segment_list_size", str(count), "-segment_wrap", str(count + 2),
            str(folder / "seg-%03d.mp4")]


def copy_command(url: str, folder: Path, settings: EvidenceConfig) -> list[str]:
    return [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-rtsp_transport", "tcp",
            "-use_wallclock_as_timestamps", "1", "-i", url, "-map", "0:v:0", "-c", "copy",
            *_segment_args(folder, settings)]


def encode_command(width: int, height: int, fps: float, folder: Path, settings: EvidenceConfig) -> list[str]:
    gop = max(1, round(fps * settings.segment_s / 2))
    return [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
            "-s", f"{width}x{height}", "-use_wallclock_as_timestamps", "1", "-i", "-",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
            "-g", str(gop), "-fps_mode", "passthrough", *_segment_args(folder, settings)]


class SegmentRecorder:
    """Keeps one camera's segment ring going until ``close()``; restarts FFmpeg if it dies."""

    def __init__(self, camera: str, source: str | int, fps: float, evidence_dir: Path,
                 settings: EvidenceConfig) -> None:
        self.camera, self.source, self.fps, self.settings = camera, source, fps, settings
        self.mode = recording_mode(source)
        self.folder = ring_dir(evidence_dir, camera)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dropped = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._size: tuple[int, int] | None = None
        # Short: FFmpeg stamps a frame when it reads it, so a queued frame would be stamped late.
        self._frames: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=max(2, round(fps * 0.3)))
        self._closed = threading.Event()
        self._failures = 0
        self._next_start = 0.0
        target = self._copy_loop if self.mode == "copy" else self._encode_loop
        self._thread = threading.Thread(target=target, name=f"segments-{camera}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def write(self, bgr: np.ndarray) -> None:
        """Hand one sampled frame to the encoder (``encode`` mode); never blocks."""
        if self.mode != "encode" or self._closed.is_set():
            return
        try:
            self._frames.put_nowait(bgr)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Stop recording; FFmpeg finishes the open segment and lists it in the index."""
        self._closed.set()
        try:
            self._frames.put_nowait(None)
        except queue.Full:
            pass
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._stop_ffmpeg(timeout)

    # -- encode ---------------------------------------------------------------------------
    def _encode_loop(self) -> None:
        while True:
            frame = self._frames.get()
            if frame is None:
                return
            try:
                self._encode(frame)
            except (OSError, VidwatchError) as exc:
                self._failed(f"encoder: {exc}")

    def _encode(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if self._proc is not None and (self._proc.poll() is not None or self._size != (width, height)):
            self._stop_ffmpeg(5.0)  # died, or the camera came back at another size
        if self._proc is None:
            if time.monotonic() < self._next_start:
                return  # backing off after failures
            self._size = (width, height)
            self._proc = self._spawn(encode_command(width, height, self.fps, self.folder, self.settings),
                                     stdin=subprocess.PIPE)
        assert self._proc.stdin is not None
        self._proc.stdin.write(np.ascontiguousarray(frame).data)
        self._failures = 0

    # -- copy -----------------------------------------------------------------------------
    def _copy_loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._proc = self._spawn(copy_command(str(self.source), self.folder, self.settings))
            except VidwatchError as exc:
                self._failed(str(exc))
            else:
                started = time.monotonic()
                while self._proc.poll() is None and not self._closed.wait(0.5):
                    pass
                if self._closed.is_set():
                    return
                if time.monotonic() - started > 60:
                    self._failures = 0
                self._failed(f"FFmpeg stream copy exited with code {self._proc.returncode}")
                self._proc = None
            self._closed.wait(max(0.0, self._next_start - time.monotonic()))

    # -- process --------------------------------------------------------------------------
    def _spawn(self, command: list[str], stdin: int | None = None) -> subprocess.Popen[bytes]:
        if stdin is None and _SETPRIV:  # a killed capture node must not leave FFmpeg recording a camera
            command = [_SETPRIV, "--pdeathsig", "TERM", *command]
        try:
            return subprocess.Popen(command, stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as exc:
            raise VidwatchError(f"cannot start {FFMPEG} for camera {self.camera} clips: {exc}; install FFmpeg "
                                f"(deploy/install-system-deps.sh) or set evidence.clips: false") from exc

    def _failed(self, why: str) -> None:
        delay = min(_RESTART_S[0] * 2 ** self._failures, _RESTART_S[1])
        self._failures += 1
        self._next_start = time.monotonic() + delay
        self._stop_ffmpeg(1.0)
        # The source is never logged: an RTSP URL can carry the camera's password.
        logger.warning("camera %s: segment recording (%s) failed: %s; retrying in %.0f s",
                       self.camera, self.mode, why, delay)

    def _stop_ffmpeg(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        else:
            proc.terminate()  # copy mode: SIGTERM makes FFmpeg close the segment cleanly
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
