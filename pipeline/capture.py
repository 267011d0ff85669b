"""Capture node: reads a group of cameras, samples and resizes frames once, and pushes them as
batched uint8 tensors to the inference worker that owns each camera.

Each camera has its own reader thread (OpenCV releases the GIL while decoding), so a dead or
slow camera never holds up the others, and a bounded per-camera queue between reader and sender:
when inference falls behind, the oldest frames are dropped and counted; reading never blocks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np
import zmq
from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.config import CameraConfig, CaptureConfig, Config
from pipeline.errors import SourceError, VidwatchError
from pipeline.evidence_ring import CameraEvidence, camera_evidence, start_snapshot_server
from pipeline.health import StageHealth, loop_problems
from pipeline.modelpkg import load_package
from pipeline.motion_gate import CameraGate, GateMetrics, camera_gate
from pipeline.peer_watch import PeerWatch
from pipeline.resize import area_resize
from pipeline.sampling import RateSampler
from pipeline.secrets import redact
from pipeline.segment_ring import RingMetrics
from pipeline.sources import Source, open_source
from pipeline.transport import frames_push, worker_endpoint
from pipeline.transport_security import transport_security
from pipeline.wire import encode_frames

logger = logging.getLogger(__name__)


DROP_REASONS = ("queue_full", "inference_busy", "worker_down")


class CaptureMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.captured = Counter("vidwatch_frames_captured_total", "Frames decoded from the camera",
                                ["camera"], registry=registry)
        self.sampled = Counter("vidwatch_frames_sampled_total", "Frames kept by fps sampling and sent on",
                               ["camera"], registry=registry)
        self.dropped = Counter("vidwatch_frames_dropped_total", "Sampled frames dropped, by reason",
                               ["camera", "reason"], registry=registry)
        self.up = Gauge("vidwatch_camera_up", "1 while the camera delivers frames", ["camera"],
                        registry=registry, multiprocess_mode="livemax")
        self.reconnects = Counter("vidwatch_camera_reconnects_total", "Camera (re)open attempts after a failure",
                                  ["camera"], registry=registry)
        self.last_frame = Gauge("vidwatch_last_frame_timestamp_seconds",
                                "Unix time the camera's latest frame was decoded (age: time() - this)", ["camera"],
                                registry=registry, multiprocess_mode="livemax")
        self.frame_ring = Gauge("vidwatch_evidence_frame_ring_bytes", "Memory held by the camera's evidence frame "
                                "ring (native frames sent to inference, I420)", ["camera"], registry=registry,
                                multiprocess_mode="livemax")
        self.stage_seconds = stage_seconds_counter(registry)
        self.gate = GateMetrics(registry)
        self.ring = RingMetrics(registry)


def stage_seconds_counter(registry: CollectorRegistry | None) -> Counter:
    """Where the time goes: busy seconds per pipeline step (decode, resize, serialize, infer...)."""
    return Counter("vidwatch_stage_seconds_total", "Busy time per pipeline step", ["stage"], registry=registry)


@dataclass
class SampledFrame:
    seq: int
    t_capture: float
    t_stream: float
    rgb: np.ndarray  # the decoded BGR frame until it is sent, then RGB at model size
    gap: bool = False  # frames before this one are missing (stream reopened, file looped)
    native: np.ndarray | None = None  # for the evidence ring (width capped), until sent: often ``rgb`` itself


@dataclass
class CameraStats:
    """Counters for the status line: frames decoded (fps in) and sampled (fps out) per second."""

    captured: int = 0
    dropped: int = 0
    fps_in: float = 0.0
    fps_out: float = 0.0
    window_start: float = field(default_factory=time.monotonic)
    window_in: int = 0
    window_out: int = 0

    def tick_sampled(self) -> None:
        self.window_out += 1

    def tick_captured(self) -> None:
        self.captured += 1
        self.window_in += 1
        elapsed = time.monotonic() - self.window_start
        if elapsed >= 2.0:
            self.fps_in, self.fps_out = self.window_in / elapsed, self.window_out / elapsed
            self.window_start, self.window_in, self.window_out = time.monotonic(), 0, 0


class CameraReader(threading.Thread):
    """Reads one camera forever: open, grab, sample, retrieve, resize, enqueue; reopen on failure."""

    def __init__(self, camera: CameraConfig, size: tuple[int, int], settings: CaptureConfig,
                 metrics: CaptureMetrics, stop: threading.Event, evidence: CameraEvidence | None = None,
                 gate: CameraGate[SampledFrame] | None = None) -> None:
        super().__init__(name=f"camera-{camera.id}", daemon=True)
        self.camera, self.size, self.settings, self.metrics, self.stop = camera, size, settings, metrics, stop
        self.evidence = evidence
        self.queue: deque[SampledFrame] = deque(maxlen=settings.queue_clips)
        self.lock = threading.Lock()
        self.stats = CameraStats()
        self.finished = False  # a file that ended without loop
        self.up = False  # delivering frames (False while opening or retrying)
        self._seq = 0
        self._stream_offset = 0.0  # keeps stream time increasing across file loops
        self.gate: CameraGate[SampledFrame] = gate or CameraGate(camera.id, camera.motion_gate, metrics.gate)

    def run(self) -> None:
        backoff = self.settings.reconnect_min_s
        while not self.stop.is_set() and not self.finished:
            try:
                source = open_source(self.camera.source, self.settings.open_timeout_s, self.settings.read_timeout_s)
            except SourceError as exc:
                self._down(f"cannot open: {exc}; retrying in {backoff:.0f} s")
                self.stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_max_s)
                continue
            backoff = self.settings.reconnect_min_s
            try:
                self._read(source)
            except Exception as exc:  # a camera thread must never die: log, count, reopen
                self._down(f"read failed: {redact(repr(exc))}")
            finally:
                source.release()

    def _down(self, why: str) -> None:
        self.up = False
        self.metrics.up.labels(self.camera.id).set(0)
        self.metrics.reconnects.labels(self.camera.id).inc()
        logger.warning("camera %s: %s", self.camera.id, why)

    def _read(self, source: Source) -> None:
        sampler = RateSampler(self.camera.fps)
        pacer = _Pacer(self.camera.playback_speed) if (self.camera.realtime and not source.live) else None
        last_t = self._stream_offset
        gap = True  # a (re)opened stream does not continue the frames before it
        logger.info("camera %s: open (%s, %.1f fps nominal)", self.camera.id, redact(self.camera.source),
                    source.nominal_fps)
        decode = self.metrics.stage_seconds.labels("decode")
        resize = self.metrics.stage_seconds.labels("resize")
        evidence = self.metrics.stage_seconds.labels("evidence")
        while not self.stop.is_set():
            started = time.perf_counter()
            grabbed = source.grab()
            t_capture = time.time()
            decode.inc(time.perf_counter() - started)
            if not grabbed:
                if source.live:
                    raise SourceError("stream stopped delivering frames (timeout or disconnect)")
                if self.camera.loop:
                    self._stream_offset = last_t + (1.0 / source.nominal_fps if source.nominal_fps else 0.1)
                    return  # reopen from the start
                logger.info("camera %s: end of file", self.camera.id)
                self.finished = True
                return
            self.up = True
            self.metrics.up.labels(self.camera.id).set(1)
            self.metrics.last_frame.labels(self.camera.id).set(t_capture)
            self.metrics.captured.labels(self.camera.id).inc()
            self.stats.tick_captured()
            t_stream = self._stream_offset + source.timestamp()
            last_t = t_stream
            if pacer is not None:
                pacer.wait(t_stream, self.stop)
            # Live streams are sampled on arrival time: their timestamps can stall or jump.
            t_sample = time.monotonic() if source.live else t_stream
            if not sampler.keep(t_sample):
                continue
            bgr = source.retrieve()
            held = SampledFrame(self._seq, t_capture, t_stream, bgr, gap)
            self._seq, gap = self._seq + 1, False  # frames the gate holds back leave a gap in seq
            if self.evidence is not None:  # clips record every sampled frame, gated or not
                started = time.perf_counter()
                held.native = self.evidence.on_frame(bgr)
                evidence.inc(time.perf_counter() - started)
            # The gate's pre-roll holds references to these same arrays (no second copy of a frame).
            for frame in self.gate.offer(t_sample, bgr, held):  # resized only when sent
                started = time.perf_counter()
                if self.evidence is not None and frame.native is not None:  # snapshots of the frames sent
                    self.evidence.on_sent(frame.seq, frame.t_capture, frame.native)
                    self.metrics.frame_ring.labels(self.camera.id).set(self.evidence.ring.nbytes())
                    frame.native = None
                    evidence.inc(time.perf_counter() - started)
                    started = time.perf_counter()
                frame.rgb = self._convert(frame.rgb)
                resize.inc(time.perf_counter() - started)
                self._enqueue(frame)

    def _convert(self, bgr: np.ndarray) -> np.ndarray:
        small = area_resize(bgr, self.size)
        return cv2.cvtColor(small, cv2.COLOR_BGR2RGB)  # convert after resizing: fewer pixels

    def _enqueue(self, frame: SampledFrame) -> None:
        with self.lock:
            if len(self.queue) == self.queue.maxlen:
                self.metrics.dropped.labels(self.camera.id, "queue_full").inc()
                self.stats.dropped += 1
            self.queue.append(frame)
        self.metrics.sampled.labels(self.camera.id).inc()
        self.stats.tick_sampled()

    def drain(self) -> list[SampledFrame]:
        with self.lock:
            frames = list(self.queue)
            self.queue.clear()
        return frames


class _Pacer:
    """Plays a file at its own rate, so a file behaves like the live camera it stands in for."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.origin: float | None = None

    def wait(self, t_stream: float, stop: threading.Event) -> None:
        now = time.monotonic()
        t_wall = t_stream / self.speed
        if self.origin is None or t_wall < (now - self.origin) - 5.0:
            self.origin = now - t_wall
        delay = self.origin + t_wall - now
        if delay > 0:
            stop.wait(delay)


def camera_size(config: Config, camera: CameraConfig) -> tuple[int, int]:
    """(width, height) frames are resized to: the camera's ``resize`` or its first model's input."""
    if camera.resize is not None:
        return camera.resize
    spec = load_package(config.models[camera.models[0].model].path, verify=False).manifest.input
    return spec.width, spec.height


class CaptureNode:
    """All cameras of one group, sending to every inference worker."""

    def __init__(self, config: Config, group: int, registry: CollectorRegistry | None,
                 stop: threading.Event | None = None) -> None:
        cameras = config.groups().get(group)
        if not cameras:
            raise VidwatchError(f"capture group {group} has no cameras (groups: {sorted(config.groups())})")
        self.config, self.stop = config, stop or threading.Event()
        cv2.setNumThreads(1)  # one reader thread per camera is the parallelism; OpenCV's own pool only spins
        self.metrics = CaptureMetrics(registry)
        self.evidence = {c.id: camera_evidence(config, c, self.metrics.ring) for c in cameras}
        self.readers = [CameraReader(c, camera_size(config, c), config.capture, self.metrics, self.stop,
                                     self.evidence[c.id], camera_gate(config, c, self.metrics.gate))
                        for c in cameras]
        self.group = group
        self.reader_of = {r.camera.id: r for r in self.readers}
        for camera in cameras:  # every series exists from the start, so rate() and alerts see zeros
            self.metrics.up.labels(camera.id).set(0)
            self.metrics.captured.labels(camera.id)
            self.metrics.sampled.labels(camera.id)
            self.metrics.reconnects.labels(camera.id)
            for reason in DROP_REASONS:
                self.metrics.dropped.labels(camera.id, reason)
        self.ctx: zmq.Context = zmq.Context.instance()
        endpoints = [worker_endpoint(config.inference.endpoint, i) for i in range(config.inference.workers)]
        self.sockets = frames_push(self.ctx, endpoints, transport_security(config, f"capture-{group}"))
        self.peers = [PeerWatch(sock, f"inference worker {i} ({endpoints[i]})") for i, sock in enumerate(self.sockets)]
        self.routes = config.workers()
        self.loop_at: float | None = None

    def health(self) -> StageHealth:
        """Ready while every camera's reader runs (a camera that is down is being retried)."""
        problems = loop_problems(self.loop_at)
        cameras = {}
        for r in self.readers:
            if r.finished:
                cameras[r.camera.id] = "finished"
            elif not r.is_alive():
                cameras[r.camera.id] = "reader not running"
                problems.append(f"camera {r.camera.id}: reader not running")
            else:
                cameras[r.camera.id] = "up" if r.up else "opening or retrying"
        return StageHealth.of(problems, {"cameras": cameras})

    def run(self) -> None:
        start_snapshot_server(self.config, self.group, self.evidence, self.stop)
        for evidence in self.evidence.values():
            evidence.start()
        for reader in self.readers:
            reader.start()
        try:
            while not self.stop.is_set():
                self.loop_at = time.monotonic()
                sent = self.send_pending()
                if all(r.finished for r in self.readers) and not any(r.queue for r in self.readers):
                    logger.info("capture: every camera finished")
                    break
                if not sent:
                    self.stop.wait(0.01)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the readers, close the evidence rings and the sockets (what ``run`` ends with)."""
        self.stop.set()
        for reader in self.readers:  # a decoder torn down mid-frame at exit aborts the process
            if reader.is_alive():
                reader.join(timeout=5.0)
        for evidence in self.evidence.values():  # FFmpeg closes the open segment
            evidence.close()
        for peer in self.peers:  # before their sockets: peer_watch
            peer.close()
        for sock in self.sockets:
            sock.close(linger=0)

    def send_pending(self) -> int:
        """Batch queued frames per (worker, frame size) and send; count what could not go."""
        # Every worker's events are read, also of workers with nothing to send: an unread monitor stalls
        # ZeroMQ (peer_watch).
        up = [peer.up() for peer in self.peers]
        batches: dict[tuple[int, tuple[int, ...]], list[tuple[str, SampledFrame]]] = {}
        for reader in self.readers:
            worker = self.routes[reader.camera.id]
            for frame in reader.drain():
                batches.setdefault((worker, frame.rgb.shape), []).append((reader.camera.id, frame))
        sent = 0
        for (worker, _), items in batches.items():
            if not up[worker]:  # dead or not yet started: count, never queue or block
                self._drop(items, "worker_down")
                continue
            for start in range(0, len(items), self.config.capture.batch_max):
                sent += self._send(worker, items[start:start + self.config.capture.batch_max])
        return sent

    def _send(self, worker: int, items: list[tuple[str, SampledFrame]]) -> int:
        stats = {r.camera.id: {"captured": r.stats.captured, "dropped": r.stats.dropped, "fps_in": r.stats.fps_in,
                               "fps_out": r.stats.fps_out, **r.gate.status()}
                 for r in self.readers}
        started = time.perf_counter()
        parts = encode_frames([c for c, _ in items], [f.seq for _, f in items], [f.t_capture for _, f in items],
                              [f.t_stream for _, f in items], np.stack([f.rgb for _, f in items]), stats,
                              [f.gap for _, f in items])
        serialized = time.perf_counter()
        self.metrics.stage_seconds.labels("serialize").inc(serialized - started)
        try:
            self.sockets[worker].send_multipart(parts, copy=False)
            self.metrics.stage_seconds.labels("send").inc(time.perf_counter() - serialized)
        except zmq.Again:
            self._drop(items, "inference_busy")
            return 0
        return len(items)

    def _drop(self, items: list[tuple[str, SampledFrame]], reason: str) -> None:
        for camera, _ in items:
            self.metrics.dropped.labels(camera, reason).inc()
            self.reader_of[camera].stats.dropped += 1
