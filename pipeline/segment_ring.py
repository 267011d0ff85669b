"""Each camera's recent video as a ring of short H.264 MP4 segments on disk, for event clips.

One FFmpeg process per camera writes ``<evidence dir>/ring/<camera>/seg-NNN.mp4`` with the
segment muxer, which bounds the ring itself (``-segment_wrap`` reuses names, ``-segment_list_size``
keeps the index short) and lists every finished segment in ``index.csv`` with its first and last
frame times in *wall-clock* seconds (``-use_wallclock_as_timestamps 1 -copyts``), the clock alert
times use. Two ways in:

- ``copy``: RTSP cameras. FFmpeg opens the stream itself and keeps the camera's own compressed
  packets (``-c copy``): no decode, no re-encode, the picture the camera sent (as Frigate
  records). Segments cut at the camera's keyframes, so a clip starts up to one GOP early. The
  camera URL reaches FFmpeg on its stdin, never on its command line (see ``copy_command``).
- ``encode``: files, USB, image folders. The capture reader hands over each *sampled* frame
  (already decoded for the models) and FFmpeg encodes it (libx264 ultrafast, yuv420p, a keyframe
  every half segment). A writer thread with a short queue stands between: a slow encoder drops
  evidence frames, never camera frames.

Every FFmpeg is supervised: the ring must grow. When FFmpeg exits, or no new segment is listed
for ``stall_after_s`` (copy: a camera that stops sending keeps FFmpeg's RTSP socket open and FFmpeg
waits on it forever, it has no read timeout for interleaved RTSP; encode: only while frames are
fed, a hung encoder blocks the writer on its full stdin pipe), FFmpeg is killed and started again
after a backoff (1, 2, 4 ... 30 s, reset once a segment is listed or a frame written), each restart
counted in ``vidwatch_segment_ring_restarts_total{camera, reason}``. FFmpeg's stderr is logged
(a bounded number of lines per run, redacted: the URL holds the camera's password) and its last
lines go into the failure message.

FFmpeg is stopped with exactly one SIGTERM, by the recorder's thread, and runs in its own session:
a second signal while it closes the last segment trips FFmpeg's interrupt callback, every write
fails and the index is rewritten *empty* (the ring's whole evidence gone at each shutdown).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import shutil
import subprocess
import threading
import time
from collections import deque
from pathlib import Path
from typing import IO

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.config import EvidenceConfig
from pipeline.errors import VidwatchError
from pipeline.secrets import MASK, redact, url_password

logger = logging.getLogger(__name__)

FFMPEG = "ffmpeg"
INDEX_NAME = "index.csv"
_RESTART_S = (1.0, 30.0)
STALL_SEGMENTS = 5  # no new segment listed for this many segment lengths: FFmpeg is stuck ...
STALL_MIN_S = 20.0  # ... but never sooner: a camera's keyframe interval can exceed a segment
STOP_TIMEOUT_S = 5.0  # FFmpeg closes its open segment and rewrites the index; then SIGKILL
START_GRACE_S = 15.0  # more for the first segment of a run: connect, probe, wait for a keyframe
FEED_GAP_S = 2.0  # encode mode: no frame for this long and the camera is idle, not the encoder stuck
STDERR_LOG_LINES = 20  # FFmpeg stderr lines logged per run (all of them feed the failure message)
STDERR_TAIL = 5
RESTART_REASONS = ("exited", "stalled", "spawn")
# Encoding FFmpegs end when their stdin closes; stream-copy ones get SIGTERM when the thread that
# started them ends (PR_SET_PDEATHSIG fires on the *thread's* exit): the recorder stops them first.
_SETPRIV = shutil.which("setpriv")


class RingMetrics:
    """The segment rings' series; the registry is passed in (capture's, or a test's)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.restarts = Counter("vidwatch_segment_ring_restarts_total",
                                "FFmpeg segment-ring restarts, by reason: exited, stalled (no new segment "
                                "listed in time), spawn (could not start)", ["camera", "reason"], registry=registry)
        self.last_segment = Gauge("vidwatch_segment_ring_last_segment_timestamp_seconds",
                                  "Unix time the camera's segment ring last listed a finished segment",
                                  ["camera"], registry=registry, multiprocess_mode="livemax")

    def add_camera(self, camera: str) -> None:
        for reason in RESTART_REASONS:  # every series exists from the start, so rate() sees zeros
            self.restarts.labels(camera, reason)


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


# Protocols the copy input may open: the script on stdin, then the camera (RTSP over TCP, TLS for rtsps)
_COPY_PROTOCOLS = "pipe,rtsp,rtsps,rtp,srtp,tcp,udp,tls"


def copy_command(folder: Path, settings: EvidenceConfig) -> list[str]:
    """FFmpeg stream copy of the camera named by :func:`copy_source_script`, which FFmpeg reads from its
    stdin: the URL (it can hold the camera's password) is not on the command line, which every local
    user can read (``ps``, ``/proc/<pid>/cmdline``)."""
    return [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "concat", "-safe", "0",
            "-protocol_whitelist", _COPY_PROTOCOLS, "-use_wallclock_as_timestamps", "1", "-i", "pipe:0",
            "-map", "0:v:0", "-c", "copy", *_segment_args(folder, settings)]


def copy_source_script(url: str) -> str:
    """An FFmpeg concat script naming the one camera URL (single-quoted: a ``'`` in it is written
    ``'\\''``), opened over TCP as ``-rtsp_transport tcp`` would."""
    quoted = "'" + url.replace("'", "'\\''") + "'"
    return f"ffconcat version 1.0\nfile {quoted}\noption rtsp_transport tcp\n"


def encode_command(width: int, height: int, fps: float, folder: Path, settings: EvidenceConfig) -> list[str]:
    gop = max(1, round(fps * settings.segment_s / 2))
    return [FFMPEG, "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24",
            "-s", f"{width}x{height}", "-use_wallclock_as_timestamps", "1", "-i", "-",
            "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-pix_fmt", "yuv420p",
            "-g", str(gop), "-fps_mode", "passthrough", *_segment_args(folder, settings)]


def stall_after_s(settings: EvidenceConfig) -> float:
    """How long a running FFmpeg may go without listing a new segment before it is restarted."""
    return max(STALL_MIN_S, STALL_SEGMENTS * settings.segment_s)


class SegmentRecorder:
    """Keeps one camera's segment ring going until ``close()``; restarts FFmpeg when it dies or stalls."""

    def __init__(self, camera: str, source: str | int, fps: float, evidence_dir: Path,
                 settings: EvidenceConfig, metrics: RingMetrics | None = None,
                 stall_after: float | None = None) -> None:
        self.camera, self.source, self.fps, self.settings = camera, source, fps, settings
        self.mode = recording_mode(source)
        self.folder = ring_dir(evidence_dir, camera)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.metrics = metrics
        if metrics is not None:
            metrics.add_camera(camera)
        self.stall_after = stall_after if stall_after is not None else stall_after_s(settings)
        self.dropped = 0
        self.restarts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self._password = url_password(source) if isinstance(source, str) else None
        self._size: tuple[int, int] | None = None
        # Short: FFmpeg stamps a frame when it reads it, so a queued frame would be stamped late.
        self._frames: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=max(2, round(fps * 0.3)))
        self._closed = threading.Event()
        self._failures = 0
        self._next_start = 0.0
        self._stamp = _index_stamp(self.folder)  # the index as FFmpeg last rewrote it
        self._spawned_at = 0.0  # monotonic time of the latest FFmpeg start
        self._last_fed = self._fed_since = 0.0  # encode mode: latest frame, start of the current feed
        self._stalled = False  # encode mode: the watchdog killed the encoder
        target = self._copy_loop if self.mode == "copy" else self._encode_loop
        self._thread = threading.Thread(target=target, name=f"segments-{camera}", daemon=True)
        self._watchdog = (threading.Thread(target=self._encode_watch, name=f"segments-watch-{camera}", daemon=True)
                          if self.mode == "encode" else None)

    def start(self) -> None:
        self._thread.start()
        if self._watchdog is not None:  # copy mode: the recording thread watches its FFmpeg itself
            self._watchdog.start()

    def write(self, bgr: np.ndarray) -> None:
        """Hand one sampled frame to the encoder (``encode`` mode); never blocks."""
        if self.mode != "encode" or self._closed.is_set():
            return
        now = time.monotonic()
        if now - self._last_fed > FEED_GAP_S:
            self._fed_since = now  # frames (again): the encoder is judged from here
        self._last_fed = now
        try:
            self._frames.put_nowait(bgr)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop recording; FFmpeg finishes the open segment and lists it in the index."""
        self._closed.set()
        try:
            self._frames.put_nowait(None)
        except queue.Full:
            pass
        if self._thread.is_alive():  # copy mode: the thread stops its FFmpeg itself, see _copy_loop
            self._thread.join(timeout + 1.0)
        self._stop_ffmpeg(timeout)  # encode mode (or a thread that never ran): close its stdin

    # -- encode ---------------------------------------------------------------------------
    def _encode_loop(self) -> None:
        while True:
            frame = self._frames.get()
            if frame is None:
                return
            try:
                self._encode(frame)
            except VidwatchError as exc:
                self._failed("spawn", str(exc))
            except OSError as exc:  # a broken pipe: FFmpeg died, or the watchdog killed it
                self._failed(self._encoder_reason(), f"encoder: {exc}")

    def _encode(self, frame: np.ndarray) -> None:
        height, width = frame.shape[:2]
        if self._proc is not None and (code := self._proc.poll()) is not None:
            self._failed(self._encoder_reason(), f"FFmpeg encoder exited with code {code}")
            return  # this frame is lost; the next one restarts FFmpeg after the backoff
        if self._proc is not None and self._size != (width, height):
            self._stop_ffmpeg(STOP_TIMEOUT_S)  # the camera came back at another size
        if self._proc is None:
            if time.monotonic() < self._next_start:
                return  # backing off after failures
            self._size = (width, height)
            self._proc = self._spawn(encode_command(width, height, self.fps, self.folder, self.settings),
                                     stdin=subprocess.PIPE)
        assert self._proc.stdin is not None
        self._proc.stdin.write(np.ascontiguousarray(frame).data)
        self._failures = 0

    def _encoder_reason(self) -> str:
        stalled, self._stalled = self._stalled, False
        return "stalled" if stalled else "exited"

    def _encode_watch(self) -> None:
        """Kill an encoder that is fed frames but lists no segment: its blocked writer then fails and restarts it."""
        progress = time.monotonic()
        while not self._closed.wait(0.5):
            now = time.monotonic()
            if self._listed_a_segment():
                progress = now
                continue
            proc = self._proc
            if proc is None or proc.poll() is not None or now - self._last_fed > FEED_GAP_S:
                continue  # no encoder running, or no frames coming: nothing to list
            limit = self.stall_after + (START_GRACE_S if progress < self._spawned_at else 0.0)
            if now - max(progress, self._fed_since, self._spawned_at) > limit:
                self._stalled = True
                logger.warning("camera %s: FFmpeg encoder listed no new segment for %.0f s while fed frames; "
                               "killing it", self.camera, limit)
                proc.kill()
                progress = now

    # -- copy -----------------------------------------------------------------------------
    def _copy_loop(self) -> None:
        while not self._closed.is_set():
            try:
                self._proc = self._spawn(copy_command(self.folder, self.settings),
                                         script=copy_source_script(str(self.source)))
            except VidwatchError as exc:
                self._failed("spawn", str(exc))
            else:
                outcome = self._supervise(self._proc)
                if outcome is None:
                    # Stopped by this thread, before it exits: its exit fires FFmpeg's parent-death
                    # SIGTERM, and a second signal while FFmpeg closes the segment aborts its writes
                    # (FFmpeg's interrupt callback): the last segment and the whole index, truncated
                    # to 0 bytes. One SIGTERM, then this thread ends with FFmpeg already gone.
                    self._stop_ffmpeg(STOP_TIMEOUT_S)
                    return
                self._failed(*outcome)
            self._closed.wait(max(0.0, self._next_start - time.monotonic()))

    def _supervise(self, proc: subprocess.Popen[bytes]) -> tuple[str, str] | None:
        """Wait while FFmpeg keeps listing segments; ``None`` once closed, else (reason, why) it failed."""
        progress = time.monotonic()
        limit = self.stall_after + START_GRACE_S  # the first segment: connect and probe first
        while not self._closed.wait(0.5):
            if proc.poll() is not None:
                return "exited", f"FFmpeg stream copy exited with code {proc.returncode}"
            if self._listed_a_segment():
                progress, limit = time.monotonic(), self.stall_after
                self._failures = 0  # recording again: the next failure restarts after the shortest wait
            elif time.monotonic() - progress > limit:
                return "stalled", f"FFmpeg listed no new segment for {limit:.0f} s (camera silent or FFmpeg hung)"
        return None

    # -- process --------------------------------------------------------------------------
    def _listed_a_segment(self) -> bool:
        """Whether FFmpeg listed a new segment since the last look (sets the last-segment gauge)."""
        stamp = _index_stamp(self.folder)
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        if self.metrics is not None:
            self.metrics.last_segment.labels(self.camera).set(time.time())
        return True

    def _spawn(self, command: list[str], stdin: int | None = None, script: str | None = None
               ) -> subprocess.Popen[bytes]:
        """Start FFmpeg; ``script`` is written to its stdin and stdin closed (copy mode's input)."""
        if self.mode == "copy" and _SETPRIV:  # a killed capture node must not leave FFmpeg recording a camera
            command = [_SETPRIV, "--pdeathsig", "TERM", *command]
        try:
            # Its own session: a Ctrl-C to the terminal's process group must not signal FFmpeg as well
            # (the recorder sends the one SIGTERM that ends it; see _copy_loop).
            proc = subprocess.Popen(command, stdin=subprocess.PIPE if script is not None else stdin,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise VidwatchError(f"cannot start {FFMPEG} for camera {self.camera} clips: {exc}; install FFmpeg "
                                f"(deploy/install-system-deps.sh) or set evidence.clips: false") from exc
        if script is not None:
            assert proc.stdin is not None
            try:
                with proc.stdin:
                    proc.stdin.write(script.encode())
            except OSError:
                pass  # FFmpeg already gone: supervision sees it exit and restarts it
        self._spawned_at = time.monotonic()
        self._stderr_tail = deque(maxlen=STDERR_TAIL)  # this run's; a dead run's reader keeps its own
        assert proc.stderr is not None
        threading.Thread(target=self._log_stderr, args=(proc.stderr, self._stderr_tail),
                         name=f"ffmpeg-log-{self.camera}", daemon=True).start()
        return proc

    def _log_stderr(self, stream: IO[bytes], tail: deque[str]) -> None:
        """Log what FFmpeg says (errors only: ``-loglevel error``), redacted, a bounded number of lines."""
        logged = 0
        with stream:
            for raw in stream:
                line = self._redact(raw.decode(errors="replace").strip())
                if not line:
                    continue
                tail.append(line)
                if logged < STDERR_LOG_LINES:
                    logged += 1
                    logger.warning("camera %s: ffmpeg: %s%s", self.camera, line,
                                   " (further FFmpeg messages of this run are not logged)"
                                   if logged == STDERR_LOG_LINES else "")

    def _redact(self, text: str) -> str:
        text = redact(text)  # URL user info, credential parameters, remembered secrets
        return text.replace(self._password, MASK) if self._password else text  # also inside mangled URLs

    def _failed(self, reason: str, why: str) -> None:
        delay = min(_RESTART_S[0] * 2 ** self._failures, _RESTART_S[1])
        self._failures += 1
        self._next_start = time.monotonic() + delay
        self._stop_ffmpeg(1.0)
        self.restarts += 1
        if self.metrics is not None:
            self.metrics.restarts.labels(self.camera, reason).inc()
        said = " | ".join(self._stderr_tail)
        # The source is never logged: an RTSP URL can carry the camera's password.
        logger.warning("camera %s: segment recording (%s) failed: %s%s; retrying in %.0f s", self.camera,
                       self.mode, self._redact(why), f"; ffmpeg said: {said}" if said else "", delay)

    def _stop_ffmpeg(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if self.mode == "encode" and proc.stdin is not None:
            try:
                proc.stdin.close()
            except OSError:
                pass
        else:
            proc.terminate()  # copy mode: ONE SIGTERM makes FFmpeg close the segment and the index cleanly
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # hung (or stopped): SIGTERM is not enough
            proc.wait()


def _index_stamp(folder: Path) -> tuple[int, int] | None:
    """Changes whenever FFmpeg lists a finished segment (it rewrites the index and renames it in place)."""
    try:
        st = os.stat(folder / INDEX_NAME)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns
