"""Event clips: cut ``[start - pre_s, end + post_s]`` out of a camera's segment ring.

The ring (``pipeline/segment_ring.py``) lists finished segments with wall-clock times; a clip is
the segments that overlap the span joined by FFmpeg's concat demuxer with ``inpoint``/``outpoint``
and *stream copy* (no re-encode: the camera's own packets, or the ring's encoding), written with
``+faststart`` so a browser plays it while it downloads. Stream copy starts at a keyframe, so a
clip may begin up to one keyframe interval early.

The ``ClipWorker`` thread does this for the sink: cutting waits for the post-roll to be recorded,
so it never blocks the sink's decisions. The sink holds an alert's *end* record until its clip is
cut (or has failed) and then sends it with ``clip`` set, or ``clip: null`` and ``clip_error``.
A ring this host cannot see (capture on another host) is cut by the capture node and the MP4
comes back over the snapshot socket (``remote``, ``pipeline/evidence_ring.py``).
"""

from __future__ import annotations

import csv
import logging
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.alerts import Alert
from pipeline.config import EvidenceConfig
from pipeline.retention import Usage, enforce, prune_empty_dirs
from pipeline.segment_ring import FFMPEG, INDEX_NAME, ring_dir

logger = logging.getLogger(__name__)

CUT_TIMEOUT_S = 30.0
WAIT_GRACE_S = 5.0  # past the span's end plus one segment, cut with what the ring holds
RETENTION_EVERY_S = 60.0
MAX_SEGMENT_S = 600.0  # a listed segment longer than this has a bogus start time


@dataclass(frozen=True)
class Segment:
    path: Path
    start: float  # wall time of its first frame
    end: float  # wall time of its last frame


# (camera, t_from, t_to, final) -> (MP4 bytes, error, still waiting for the post-roll)
RemoteCut = Callable[[str, float, float, bool], tuple[bytes | None, str, bool]]


class ClipError(Exception):
    """A clip could not be cut; the message goes into the alert's ``clip_error``."""


def read_index(folder: Path) -> list[Segment]:
    """Finished segments, oldest first. FFmpeg rewrites the index as it goes: a torn line is skipped."""
    try:
        text = (folder / INDEX_NAME).read_text()
    except OSError:
        return []
    segments = []
    for row in csv.reader(text.splitlines()):
        try:
            name, start, end = row[0], float(row[1]), float(row[2])
        except (IndexError, ValueError):
            continue
        path = folder / name
        # FFmpeg lists a ring's first segment from 0 and leaves its timestamps absolute: it is
        # skipped (the first second after each recorder start is lost, nothing later).
        if path.parent == folder and path.exists() and 0 < end - start < MAX_SEGMENT_S:
            segments.append(Segment(path, start, end))
    return sorted(segments, key=lambda s: s.start)


def concat_list(segments: list[Segment], t_from: float, t_to: float) -> str:
    """An ffconcat script playing ``[t_from, t_to]`` of the given segments."""
    lines = ["ffconcat version 1.0"]
    for seg, after in zip(segments, [*segments[1:], None], strict=True):
        inpoint = max(0.0, t_from - seg.start)
        lines.append(f"file '{seg.path.resolve()}'")
        # The true span up to the next segment (less the inpoint, as the demuxer counts it): a file's
        # own duration misses its last frame's, and every later segment would be pulled early.
        span = (after.start if after is not None and after.start - seg.end < 2.0 else seg.end + 0.1) - seg.start
        lines.append(f"duration {span - inpoint:.3f}")
        if inpoint > 0:
            lines.append(f"inpoint {inpoint:.3f}")
        if t_to < seg.end:
            lines.append(f"outpoint {t_to - seg.start:.3f}")
    return "\n".join(lines) + "\n"


def cut_clip(folder: Path, t_from: float, t_to: float, out: Path) -> Path:
    """Write ``out`` (MP4, stream copy, faststart) covering ``[t_from, t_to]``; raise ClipError."""
    segments = [s for s in read_index(folder) if s.end >= t_from and s.start <= t_to]
    if not segments:
        raise ClipError(f"no recorded video between {t_from:.1f} and {t_to:.1f} in {folder}")
    out.parent.mkdir(parents=True, exist_ok=True)
    script = out.with_suffix(".ffconcat")
    tmp = out.with_suffix(".tmp.mp4")
    script.write_text(concat_list(segments, t_from, t_to))
    command = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "concat", "-safe", "0",
               "-i", str(script), "-map", "0:v:0", "-c", "copy", "-movflags", "+faststart", str(tmp)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=CUT_TIMEOUT_S)
        if done.returncode != 0:
            raise ClipError(f"ffmpeg concat failed: {done.stderr.strip()[-300:]}")
        os.replace(tmp, out)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClipError(f"could not write {out}: {exc}") from exc
    finally:
        script.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out


@dataclass
class _Job:
    alert: Alert  # the end record to send once the clip is cut
    t_from: float
    t_to: float


class ClipWorker(threading.Thread):
    """Cuts clips in the background (finished end records come back through ``done``) and keeps
    snapshots and clips within the retention limits, reporting the bytes used to ``on_usage``."""

    def __init__(self, evidence_dir: Path, settings: EvidenceConfig, snapshots_dir: Path,
                 on_usage: Callable[[Usage], None] | None = None, remote: RemoteCut | None = None) -> None:
        super().__init__(name="clips", daemon=True)
        self.evidence_dir, self.settings, self.remote = evidence_dir, settings, remote
        self.kept = {"snapshots": snapshots_dir, "clips": evidence_dir / "clips"}
        self.on_usage = on_usage
        self.done: queue.Queue[Alert] = queue.Queue()
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._waiting: list[_Job] = []
        self._flush = threading.Event()
        self._next_retention = 0.0
        self._unfinished: dict[str, Alert] = {}  # submitted, not yet in ``done``
        self._lock = threading.Lock()

    def enforce_retention(self) -> Usage:
        usage = enforce(self.kept, {"ring": self.evidence_dir / "ring"}, self.settings.max_bytes,
                        self.settings.max_age_days * 86400.0)
        if usage.deleted:
            prune_empty_dirs(self.kept.values())
        if self.on_usage is not None:
            self.on_usage(usage)
        return usage

    def clip_path(self, alert: Alert) -> Path:
        return self.evidence_dir / "clips" / alert.camera / f"{alert.id}.mp4"

    def submit(self, end_record: Alert, pre_s: float | None = None, post_s: float | None = None) -> None:
        """Cut the clip of an ended alert (``pre_s``/``post_s``: the rule's, else the evidence
        settings'), then hand the record back with ``clip`` filled in."""
        t_from = end_record.start - (self.settings.pre_s if pre_s is None else pre_s)
        t_end = end_record.end if end_record.end is not None else time.time()
        t_to = min(t_end + (self.settings.post_s if post_s is None else post_s), t_from + self.settings.max_clip_s)
        with self._lock:
            self._unfinished[end_record.id] = end_record
        self._jobs.put(_Job(end_record, t_from, t_to))

    def finish(self, timeout: float) -> list[Alert]:
        """Cut every waiting clip now with what the rings hold (shutdown), and stop. End records
        whose clip is still not cut after ``timeout`` are returned with ``clip_error`` set."""
        self._flush.set()
        self._jobs.put(None)
        self.join(timeout)
        with self._lock:
            left, self._unfinished = list(self._unfinished.values()), {}
        return [replace(a, clip=None, clip_error="shut down before the clip was cut") for a in left]

    def run(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=0.25)
                if job is None:
                    break
                self._waiting.append(job)
            except queue.Empty:
                pass
            self._cut_due(flush=self._flush.is_set())
            if time.monotonic() >= self._next_retention:
                self._next_retention = time.monotonic() + RETENTION_EVERY_S
                self._safe_retention()
        self._cut_due(flush=True)
        self._safe_retention()

    def _safe_retention(self) -> None:
        try:
            self.enforce_retention()
        except OSError as exc:  # a folder vanished or is unreadable: try again next time
            logger.warning("evidence retention failed: %s", exc)

    def _cut_due(self, flush: bool) -> None:
        for job in list(self._waiting):
            finished = self._try(job, flush)
            if finished is None:
                continue  # the post-roll is not recorded yet
            self._waiting.remove(job)
            with self._lock:
                if self._unfinished.pop(job.alert.id, None) is None:
                    continue  # finish() gave up on it and the sink sent it already
            self.done.put(finished)
            self._next_retention = 0.0  # a new clip: check the disk cap at once

    def _try(self, job: _Job, flush: bool) -> Alert | None:
        """The end record with its clip (or the reason there is none), or None to wait."""
        folder = ring_dir(self.evidence_dir, job.alert.camera)
        final = flush or time.time() > job.t_to + self.settings.segment_s + WAIT_GRACE_S
        if not (folder / INDEX_NAME).exists() and self.remote is not None:  # the ring is on capture's host
            data, error, wait = self.remote(job.alert.camera, job.t_from, job.t_to, final)
            return None if wait else self._store(job, data, error)
        recorded = max((s.end for s in read_index(folder)), default=0.0)
        if not (final or recorded >= job.t_to or not (folder / INDEX_NAME).exists()):
            return None
        return self._cut(job, folder)

    def _store(self, job: _Job, data: bytes | None, error: str) -> Alert:
        path = self.clip_path(job.alert)
        try:
            if data is None:
                raise ClipError(f"capture node: {error}")
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.mp4")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            return replace(job.alert, clip=str(path), clip_error=None)
        except (ClipError, OSError) as exc:
            logger.error("clip of alert %s (camera %s) failed: %s", job.alert.id, job.alert.camera, exc)
            return replace(job.alert, clip=None, clip_error=str(exc))

    def _cut(self, job: _Job, folder: Path) -> Alert:
        try:
            path = cut_clip(folder, job.t_from, job.t_to, self.clip_path(job.alert))
            return replace(job.alert, clip=str(path), clip_error=None)
        except ClipError as exc:
            logger.error("clip of alert %s (camera %s) failed: %s", job.alert.id, job.alert.camera, exc)
            return replace(job.alert, clip=None, clip_error=str(exc))
