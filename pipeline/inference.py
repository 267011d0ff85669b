"""Inference worker: pulls frame batches from capture nodes, batches across cameras (max batch /
max wait), runs the model packages, and pushes per-window results to the sink.

A message that does not decode is counted and dropped; the worker keeps going.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import cv2
import numpy as np
import zmq
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.camera_state import StateStore
from pipeline.capture import stage_seconds_counter
from pipeline.config import Config
from pipeline.engines import device_of, resolve
from pipeline.errors import WireError
from pipeline.health import StageHealth, loop_problems
from pipeline.modelpkg import load_package, rate_warnings
from pipeline.runner import FrameMeta, PackageRunner, Subscription, WindowResult
from pipeline.transport import DEFAULTS, frames_pull, results_push, worker_endpoint
from pipeline.transport_security import REASON, transport_security
from pipeline.wire import FrameBatch, decode_frames, encode_results

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
SNAPSHOT_JPEG_QUALITY = 85


class InferenceMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.batch_size = Histogram("vidwatch_inference_batch_size", "Frames per inference batch",
                                    buckets=_BATCH_BUCKETS, registry=registry)
        self.latency = Histogram("vidwatch_inference_latency_seconds", "Time to run all models on one batch",
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.rejected = Counter("vidwatch_messages_rejected_total", "Messages that failed to decode, by stage",
                                ["stage", "reason"], registry=registry)
        self.windows = Counter("vidwatch_windows_scored_total", "Windows scored", ["camera", "model"],
                               registry=registry)
        self.frames_skipped = Counter("vidwatch_frames_skipped_total",
                                      "Frames a model computed nothing for: none of its windows reads them "
                                      "(window stride longer than the window)", ["model"], registry=registry)
        self.stage_seconds = stage_seconds_counter(registry)
        self.engine_info = Gauge("vidwatch_engine_info", "1 for the engine (and device) this worker runs",
                                 ["engine", "device"], registry=registry, multiprocess_mode="max")


class InferenceWorker:
    def __init__(self, config: Config, index: int, registry: CollectorRegistry | None,
                 stop: threading.Event | None = None) -> None:
        self.config, self.index, self.stop = config, index, stop or threading.Event()
        # One OpenCV thread (optical flow, resizes): the workers are the parallelism, and OpenCV's
        # pool spins on another core after each call (~0.4 ms CPU per frame of flow + delta here).
        cv2.setNumThreads(1)
        self.metrics = InferenceMetrics(registry)
        assignment = config.workers()
        mine = [c for c in config.cameras if assignment[c.id] == index]
        used = sorted({ref.model for c in mine for ref in c.models})
        packages = [load_package(config.models[name].path) for name in used]
        # Config names may differ from manifest names: map config name -> manifest name.
        self.package_names = {name: pkg.name for name, pkg in zip(used, packages, strict=True)}
        engine = resolve(config.engine)  # auto -> the chosen engine; an unavailable one fails here
        self.metrics.engine_info.labels(engine.name, device_of(engine)).set(1)  # type: ignore[attr-defined]
        self.runner = PackageRunner(packages, engine.name, engine.options(),  # type: ignore[attr-defined]
                                    StateStore(config.state_dir))
        for package in packages:  # exported at 0 from the start, so rate() has a series to read
            self.metrics.frames_skipped.labels(package.name)
        for warning in rate_warnings(mine, {name: pkg.manifest for name, pkg in zip(used, packages, strict=True)}):
            logger.warning("inference: %s", warning)
        for camera in mine:
            self.runner.add_camera(camera.id, [
                Subscription(self.package_names[r.model], r.stride, r.calibrate_seconds) for r in camera.models])
        self.evidence_min = config.inference.evidence_min_score
        if self.evidence_min is None:
            self.evidence_min = min((r.threshold for r in config.rules), default=0.5)
        ctx: zmq.Context = zmq.Context.instance()
        self.endpoint = worker_endpoint(config.inference.endpoint, index)
        security = transport_security(config, f"inference-{index}")
        if security is not None:
            self.metrics.rejected.labels("inference", REASON)  # the series exists from the start
        self.pull = frames_pull(ctx, worker_endpoint(config.inference.bind or config.inference.endpoint, index),
                                security,
                                on_reject=lambda reason: self.metrics.rejected.labels("inference", reason).inc())
        self.push = results_push(ctx, config.sink.endpoint, security)
        self._pending: list[FrameBatch] = []
        self._last_status = 0.0
        self._stats: dict[str, dict[str, float]] = {}
        self.cameras, self.models = [c.id for c in mine], used
        self.loop_at: float | None = None
        logger.info("inference worker %d on %s: cameras %s, models %s", index, self.endpoint,
                    [c.id for c in mine], used)

    def health(self) -> StageHealth:
        """Models are loaded once this object exists; ready while its loop turns."""
        return StageHealth.of(loop_problems(self.loop_at), {"cameras": self.cameras, "models": self.models})

    def run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.pull, zmq.POLLIN)
        max_wait = self.config.inference.max_wait_ms / 1000.0
        first_at = 0.0
        try:
            while not self.stop.is_set():
                self.loop_at = time.monotonic()
                idle_s = DEFAULTS.poll_ms / 1000
                timeout = max(0.0, first_at + max_wait - time.monotonic()) if self._pending else idle_s
                if poller.poll(int(timeout * 1000)):
                    if self.receive() and len(self._pending) == 1:
                        first_at = time.monotonic()
                if self._pending and (self._pending_frames() >= self.config.inference.max_batch
                                      or time.monotonic() - first_at >= max_wait):
                    self.process_pending(time.monotonic() - first_at)
                self._maybe_send_status()
        finally:
            self.pull.close(linger=0)
            self.push.close()

    def receive(self) -> bool:
        parts = self.pull.recv_multipart(copy=False)
        started = time.perf_counter()
        try:
            batch = decode_frames(parts)
            self.metrics.stage_seconds.labels("deserialize").inc(time.perf_counter() - started)
        except WireError as exc:
            self.metrics.rejected.labels("inference", "bad_message").inc()
            logger.warning("inference: dropped a bad message on %s: %s", self.endpoint, exc)
            return False
        known = set(self.runner.cameras())
        if any(c not in known for c in batch.cameras):
            unknown = sorted(set(batch.cameras) - known)
            self.metrics.rejected.labels("inference", "unknown_camera").inc()
            logger.warning("inference: dropped a batch with cameras %s not routed to worker %d", unknown, self.index)
            return False
        self._stats.update(batch.stats)
        self._pending.append(batch)
        return True

    def _pending_frames(self) -> int:
        return sum(len(b.cameras) for b in self._pending)

    def process_pending(self, waited: float = 0.0) -> None:
        batches, self._pending = self._pending, []
        self.metrics.stage_seconds.labels("batch_wait").inc(waited)
        by_shape: dict[tuple[int, ...], list[FrameBatch]] = {}
        for batch in batches:
            by_shape.setdefault(batch.frames.shape[1:], []).append(batch)
        limit = self.config.inference.max_batch
        for group in by_shape.values():
            frames = group[0].frames if len(group) == 1 else np.concatenate([b.frames for b in group])
            metas = [FrameMeta(c, s, tc, ts, g) for b in group
                     for c, s, tc, ts, g in zip(b.cameras, b.seqs, b.t_capture, b.t_stream,
                                                 b.gaps or [False] * len(b.cameras), strict=True)]
            # At most max_batch frames per run (in order): the engines' memory peaks at a bounded
            # size that a loaded worker reaches early, instead of growing whenever a backlog is larger.
            for start in range(0, len(metas), limit):
                self._run(frames[start:start + limit], metas[start:start + limit])

    def _run(self, frames: np.ndarray, metas: list[FrameMeta]) -> None:
        started = time.perf_counter()
        results = self.runner.process(frames, metas)
        self.metrics.latency.observe(time.perf_counter() - started)
        for step, seconds in self.runner.timings.drain().items():
            self.metrics.stage_seconds.labels(step).inc(seconds)
        for model, skipped in self.runner.drain_skipped().items():
            self.metrics.frames_skipped.labels(model).inc(skipped)
        self.metrics.batch_size.observe(len(metas))
        if results:
            self._send(results)

    def _send(self, results: list[WindowResult]) -> None:
        started = time.perf_counter()
        records: list[dict[str, Any]] = []
        snapshots: list[bytes] = []
        for result in results:
            self.metrics.windows.labels(result.camera, result.package).inc()
            record = result_record(result)
            if result.last_frame is not None and result.alert_score >= (self.evidence_min or 0.0):
                record["snapshot_part"] = len(snapshots)
                snapshots.append(jpeg(result.last_frame))
            records.append(record)
        self._send_parts(encode_results(records, snapshots))
        self.metrics.stage_seconds.labels("results").inc(time.perf_counter() - started)

    def _send_parts(self, parts: list[Any]) -> None:
        try:
            self.push.send_multipart(parts)
        except zmq.Again:
            logger.warning("inference: sink is not taking results; %d results dropped", len(parts))
            self.metrics.rejected.labels("inference", "sink_busy").inc()

    def _maybe_send_status(self) -> None:
        """Once a second tell the sink about calibration and capture stats of this worker's cameras."""
        now = time.monotonic()
        if now - self._last_status < 1.0:
            return
        self._last_status = now
        status = {cam: {name: ("calibrating" if st.calibrating else "scoring")
                        for name, st in self.runner.camera_states(cam).items()} for cam in self.runner.cameras()}
        record = {"camera": "", "package": "", "scores": [], "labels": [], "t_capture": 0.0, "seq": -1,
                  "status": status, "stats": self._stats}
        self._send_parts(encode_results([record], []))


def result_record(result: WindowResult) -> dict[str, Any]:
    return {
        "camera": result.camera, "package": result.package, "labels": result.labels,
        "alert_label": result.alert_label, "scores": [round(float(s), 5) for s in result.scores],
        "seq": result.last.seq, "first_seq": result.first.seq, "t_capture": result.last.t_capture,
        "t_stream": result.last.t_stream, "t_decided": time.time(),
        "heatmap": None if result.heatmap is None else np.round(result.heatmap.astype(float), 4).tolist(),
    }


def jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY,
                                                                         SNAPSHOT_JPEG_QUALITY])
    return buf.tobytes() if ok else b""
