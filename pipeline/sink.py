"""Sink: results -> rules -> alerts (evidence snapshot, JSON-lines, stdout, MQTT, webhook) + status.

An alert is offered to every output before the sink moves on; an output that fails (a full
disk, a broker away, a webhook answering 500) keeps the alert queued and is retried with
backoff from a queue spooled to ``<state_dir>/outbox`` (``pipeline.delivery``), so a raised
alert is never dropped, not even by a sink restart. Open alerts are journaled
(``pipeline.alert_journal``): a sink that was killed resumes them on restart (same id, one end,
no second alert); one whose camera sends no scores ends with a ``reason``.
An alert's start carries its full-resolution snapshot (asked of the capture node); its end
record waits for the event clip (cut in a background thread, ``pipeline/clips.py``) and then
carries the clip's path, or ``clip: null`` with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import zmq
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.alert_journal import AlertJournal
from pipeline.alerts import Alert
from pipeline.capture import stage_seconds_counter
from pipeline.clips import ClipWorker
from pipeline.config import Config
from pipeline.delivery import Delivery, output_key
from pipeline.errors import WireError
from pipeline.events_api import STATUS_FILE
from pipeline.evidence import save_snapshot
from pipeline.evidence_ring import SnapshotClient
from pipeline.health import StageHealth, loop_problems
from pipeline.modelpkg import load_package
from pipeline.outputs import create_output
from pipeline.rules import Rule, Transition
from pipeline.transport import DEFAULTS, results_pull
from pipeline.transport_security import REASON, transport_security
from pipeline.wire import decode_results

logger = logging.getLogger(__name__)

CLIP_FINISH_TIMEOUT_S = 8.0
STATUS_WRITE_S = 2.0  # how fresh the events page's camera status is

_E2E_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
RESUME_TIMEOUT_S = 30.0  # a resumed alert whose camera sends no score this long after a restart ends


class SinkMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.e2e = Histogram("vidwatch_end_to_end_latency_seconds", "Capture of a window's last frame -> decision",
                             buckets=_E2E_BUCKETS, registry=registry)
        self.alerts = Counter("vidwatch_alerts_total", "Alerts raised", ["camera", "kind"], registry=registry)
        self.score = Gauge("vidwatch_last_score", "Latest alert-label score per camera and model",
                           ["camera", "model"], registry=registry, multiprocess_mode="livemax")
        self.rejected = Counter("vidwatch_messages_rejected_total", "Messages that failed to decode, by stage",
                                ["stage", "reason"], registry=registry)
        self.output_errors = Counter("vidwatch_output_errors_total", "Failed alert deliveries (retried)",
                                     ["output"], registry=registry)
        self.stage_seconds = stage_seconds_counter(registry)
        self.pending = Gauge("vidwatch_alerts_pending", "Alerts waiting for an output to take them",
                             registry=registry, multiprocess_mode="livesum")
        self.evidence_bytes = Gauge("vidwatch_evidence_bytes", "Bytes on disk of evidence: snapshots, clips, "
                                    "segment rings", ["kind"], registry=registry, multiprocess_mode="livemax")
        self.snapshots = Counter("vidwatch_snapshots_total", "Alert snapshots by resolution: full (from "
                                 "capture), model (fallback), none", ["resolution"], registry=registry)
        self.clips = Counter("vidwatch_clips_total", "Event clips cut, by result", ["result"], registry=registry)
        for resolution in ("full", "model", "none"):  # every series from the start, so increase() sees the first
            self.snapshots.labels(resolution)
        for result in ("ok", "failed"):
            self.clips.labels(result)


@dataclass
class CameraStatus:
    windows: deque[float] = field(default_factory=lambda: deque(maxlen=2000))
    scores: dict[str, float] = field(default_factory=dict)
    states: dict[str, str] = field(default_factory=dict)
    capture: dict[str, float] = field(default_factory=dict)
    last_seen: float = 0.0


class Sink:
    def __init__(self, config: Config, registry: CollectorRegistry | None,
                 stop: threading.Event | None = None) -> None:
        self.config, self.stop = config, stop or threading.Event()
        self.metrics = SinkMetrics(registry)
        self.rules = [Rule(r) for r in config.rules]
        manifests = {name: load_package(pkg.path, verify=False).manifest for name, pkg in config.models.items()}
        self.kinds = {name: m.task for name, m in manifests.items()}
        self.manifest_names = {m.name: name for name, m in manifests.items()}
        outputs = [(o.type, output_key(o.type, o.model_dump_json()), create_output(o)) for o in config.outputs]
        self.delivery = Delivery(outputs, self.metrics.output_errors, self.metrics.pending,
                                 spool_dir=Path(config.state_dir) / "outbox")
        self._zero_alert_series(config)
        self.status: dict[str, CameraStatus] = {c.id: CameraStatus() for c in config.cameras}
        security = transport_security(config, "sink")
        if security is not None:
            self.metrics.rejected.labels("sink", REASON)  # the series exists from the start
        self.pull = results_pull(zmq.Context.instance(), config.sink.bind or config.sink.endpoint, security,
                                 on_reject=lambda reason: self.metrics.rejected.labels("sink", reason).inc())
        self._last_status = time.monotonic()
        self._last_status_write = 0.0
        self._open: dict[str, Alert] = {}  # alert id -> its start record
        self.group_of = {c.id: c.group for c in config.cameras}
        self.snapshot_client = SnapshotClient(config.evidence.endpoint, sorted(config.groups()),
                                              config.evidence.snapshot_timeout_s, security)
        self.evidence_dir = config.evidence_dir()
        clip_client = SnapshotClient(config.evidence.endpoint, sorted(config.groups()),
                                     config.evidence.snapshot_timeout_s, security)
        self.clip_worker = ClipWorker(  # rings this host cannot see are cut by their capture node
            self.evidence_dir, config.evidence, config.sink.snapshots_dir, self._record_usage,
            lambda camera, t_from, t_to, final: clip_client.fetch_clip(self.group_of.get(camera, 0), camera, t_from,
                                                                       t_to, final))
        self.clip_worker.start()
        self.loop_at: float | None = None
        self._resumed: dict[str, float] = {}  # alert id -> monotonic deadline for a first score
        self.journal = AlertJournal(config.state_dir)
        self._resume_open_alerts()

    def health(self) -> StageHealth:
        """Ready while the loop turns; alerts waiting on a failing output are retried, not lost."""
        return StageHealth.of(loop_problems(self.loop_at), {"alerts_pending": self.delivery.queued()})

    def _resume_open_alerts(self) -> None:
        """Pick up the alerts a killed sink left open: the next scores end them (or keep them going)."""
        rules = {r.config.name: r for r in self.rules}
        for alert in self.journal.open_alerts():
            rule = rules.get(alert.rule)
            if rule is None or not rule.applies_to(alert.camera, alert.model):
                self._end_alert(alert, time.time(), alert.score, reason="sink restarted; rule or camera removed")
                continue
            rule.resume(alert.camera, alert.id, alert.score)
            self._open[alert.id] = alert
            self._resumed[alert.id] = time.monotonic() + RESUME_TIMEOUT_S
            logger.warning("sink: resumed alert %s (camera %s, rule %s) that was open when the sink stopped",
                           alert.id, alert.camera, alert.rule)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.loop_at = time.monotonic()
                if self.pull.poll(DEFAULTS.poll_ms):
                    self.receive()
                self.delivery.retry_due()
                self._deliver_clipped()
                self._maybe_expire_resumed()
                self._maybe_print_status()
            while self.pull.poll(200):  # results already in flight at shutdown still count
                self.receive()
        finally:
            self.shutdown()

    def receive(self) -> None:
        parts = self.pull.recv_multipart(copy=False)
        started = time.perf_counter()
        try:
            self._receive(parts)
        finally:
            self.metrics.stage_seconds.labels("sink").inc(time.perf_counter() - started)

    def _receive(self, parts: list[Any]) -> None:
        try:
            results, snapshots = decode_results(parts)
        except WireError as exc:
            self.metrics.rejected.labels("sink", "bad_message").inc()
            logger.warning("sink: dropped a bad message: %s", exc)
            return
        for result in results:
            try:
                if "status" in result:
                    self._update_status(result)
                    continue
                part = result.get("snapshot_part")
                self.handle(result, snapshots[part] if isinstance(part, int) and part < len(snapshots) else None)
            except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
                # A well-formed message with a malformed result: drop that result, keep the rest.
                self.metrics.rejected.labels("sink", "bad_result").inc()
                logger.warning("sink: dropped a malformed result: %r", exc)

    def handle(self, result: dict[str, Any], snapshot: bytes | None) -> None:
        """Feed one window's result to every rule that watches its camera and model."""
        camera = result["camera"]
        model = self.manifest_names.get(result["package"], result["package"])
        now = time.time()
        self.metrics.e2e.observe(max(0.0, now - float(result["t_capture"])))
        status = self.status.setdefault(camera, CameraStatus())
        status.windows.append(time.monotonic())
        status.last_seen = time.monotonic()
        for rule in self.rules:
            if not rule.applies_to(camera, model):
                continue
            label = rule.config.label or result["alert_label"]
            if label not in result["labels"]:
                continue
            score = float(result["scores"][result["labels"].index(label)])
            if self._resumed:
                self._resumed.pop(rule.alert_id(camera), None)  # scores again: the rule decides its end
            status.scores[model] = score
            self.metrics.score.labels(camera, model).set(score)
            transition = rule.update(camera, score, float(result["t_stream"]))
            if transition is not None:
                self._raise(rule, camera, model, label, transition, result, snapshot, now)

    def _raise(self, rule: Rule, camera: str, model: str, label: str, tr: Transition, result: dict[str, Any],
               snapshot: bytes | None, now: float) -> None:
        latency = round(now - float(result["t_capture"]), 3)
        if tr.kind == "end":
            opened = self._open.pop(tr.alert_id, None)
            if opened is not None:
                self._end_alert(opened, now, tr.peak, latency_s=latency)
            return
        # Rule times are stream times; the alert's start is the wall time the condition began.
        start = now - (float(result["t_stream"]) - tr.start)
        caption = (f"{camera}  {rule.config.name}  {label}={tr.peak:.2f}  "
                   f"{time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(float(result['t_capture'])))}")
        snapshot_path = self._snapshot(camera, tr.alert_id, int(result["seq"]), snapshot, result.get("heatmap"),
                                       caption)
        alert = Alert(id=tr.alert_id, state="start", camera=camera, rule=rule.config.name,
                      kind=self.kinds.get(model, "unknown"), model=model, label=label, score=round(tr.peak, 4),
                      start=round(start, 3), end=None, snapshot=snapshot_path, latency_s=latency)
        self._open[tr.alert_id] = alert
        self.metrics.alerts.labels(camera, alert.kind).inc()
        self.deliver(alert)

    def _snapshot(self, camera: str, alert_id: str, seq: int, model_jpeg: bytes | None, heatmap: Any,
                  caption: str) -> str | None:
        """The camera's own frame from the capture node, or the model-size frame if it cannot give it."""
        jpeg, why = self.snapshot_client.fetch(self.group_of.get(camera, 0), camera, seq)
        resolution = "full"
        if jpeg is None:
            logger.warning("sink: no full-resolution snapshot for %s (%s); using the model-size frame", camera, why)
            jpeg, resolution = model_jpeg, "model"
        if jpeg is None:
            self.metrics.snapshots.labels("none").inc()
            return None
        path = Path(self.config.sink.snapshots_dir) / camera / f"{alert_id}.jpg"
        try:
            saved = str(save_snapshot(path, jpeg, heatmap, caption))
        except OSError as exc:  # a full disk loses the picture, never the alert
            logger.error("sink: could not save snapshot %s: %s", path, exc)
            resolution, saved = "none", None
        self.metrics.snapshots.labels(resolution).inc()
        return saved

    def _end(self, end_record: Alert) -> None:
        """Send the end now, or once its clip is cut (``_deliver_clipped``) when clips are on."""
        if self.config.evidence.clips:
            rule = next((r.config for r in self.rules if r.config.name == end_record.rule), None)
            self.clip_worker.submit(end_record, rule.pre_s if rule else None, rule.post_s if rule else None)
        else:
            self.deliver(end_record)

    def _deliver_clipped(self) -> None:
        while True:
            try:
                alert = self.clip_worker.done.get_nowait()
            except queue.Empty:
                return
            self.metrics.clips.labels("ok" if alert.clip else "failed").inc()
            self.deliver(alert)

    def _record_usage(self, usage: Any) -> None:
        for kind, used in usage.bytes_by_kind.items():
            self.metrics.evidence_bytes.labels(kind).set(used)

    def deliver(self, alert: Alert) -> None:
        self.journal.record(alert)  # which alerts are open survives a crash of this process
        self.delivery.deliver(alert)

    def _end_alert(self, opened: Alert, now: float, peak: float, latency_s: float | None = None,
                   reason: str | None = None) -> None:
        self._end(replace(opened, state="end", end=round(now, 3), score=round(peak, 4), latency_s=latency_s,
                          reason=reason))

    def _maybe_expire_resumed(self) -> None:
        """A resumed alert whose camera sent no score in time ends, saying why (never stays open)."""
        if not self._resumed:
            return
        now = time.monotonic()
        for alert_id, deadline in list(self._resumed.items()):
            opened = self._open.get(alert_id)
            if now < deadline or opened is None:
                continue
            del self._resumed[alert_id]
            del self._open[alert_id]
            for rule in self.rules:
                if rule.config.name == opened.rule:
                    rule.forget(opened.camera)
            self._end_alert(opened, time.time(), opened.score,
                            reason=f"sink restarted; no scores from the camera within {RESUME_TIMEOUT_S:.0f} s")

    def _zero_alert_series(self, config: Config) -> None:
        """Alert counters exist at 0 for every camera and model kind, so increase() sees the first one."""
        for camera in config.cameras:
            for ref in camera.models:
                self.metrics.alerts.labels(camera.id, self.kinds.get(ref.model, "unknown"))

    def _update_status(self, record: dict[str, Any]) -> None:
        for camera, states in (record.get("status") or {}).items():
            self.status.setdefault(camera, CameraStatus()).states.update(states)
        for camera, stats in (record.get("stats") or {}).items():
            self.status.setdefault(camera, CameraStatus()).capture.update(stats)

    def _maybe_print_status(self) -> None:
        if time.monotonic() - self._last_status_write >= STATUS_WRITE_S:
            self._last_status_write = time.monotonic()
            self.write_status()
        if time.monotonic() - self._last_status < self.config.sink.status_interval_s:
            return
        self._last_status = time.monotonic()
        for line in self.status_lines():
            print(line, flush=True)

    def write_status(self) -> None:
        """Per-camera status as JSON in the evidence dir, for the events page (any process can read it)."""
        now, wall = time.monotonic(), time.time()
        cameras = {}
        for camera, st in self.status.items():
            cameras[camera] = {
                "fps_in": round(st.capture.get("fps_in", 0.0), 2), "fps_out": round(st.capture.get("fps_out", 0.0), 2),
                "windows_per_s": round(len([t for t in st.windows if now - t <= 10.0]) / 10.0, 2),
                "dropped": int(st.capture.get("dropped", 0)), "scores": dict(sorted(st.scores.items())),
                "states": dict(sorted(st.states.items())),
                "last_result": round(wall - (now - st.last_seen), 3) if st.last_seen else None,
                "open_alerts": sorted(a.rule for a in self._open.values() if a.camera == camera)}
        path = self.evidence_dir / STATUS_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"updated": round(wall, 3), "cameras": cameras}))
            os.replace(tmp, path)
        except OSError as exc:
            logger.warning("sink: cannot write %s: %s", path, exc)

    def status_lines(self) -> list[str]:
        lines = []
        now = time.monotonic()
        for camera, st in self.status.items():
            recent = [t for t in st.windows if now - t <= 10.0]
            rate = len(recent) / 10.0
            scores = " ".join(f"{m}={s:.2f}" for m, s in sorted(st.scores.items())) or "-"
            states = ",".join(f"{m}:{s}" for m, s in sorted(st.states.items()) if s != "scoring")
            if "gate_open" in st.capture:
                states = (f"gate={'open' if st.capture['gate_open'] else 'closed'} "
                          f"gated={int(st.capture.get('gated', 0))}" + (f" {states}" if states else ""))
            lines.append(f"[status] camera={camera} fps_in={st.capture.get('fps_in', 0.0):.1f} "
                         f"fps_out={st.capture.get('fps_out', 0.0):.1f} "
                         f"windows/s={rate:.1f} drops={int(st.capture.get('dropped', 0))} scores={scores}"
                         + (f" {states}" if states else ""))
        return lines

    def shutdown(self) -> None:
        """End every open alert so each start has an end, flush retries, close outputs."""
        now = round(time.time(), 3)
        for rule in self.rules:
            for _, tr in rule.close_all(float("inf")):
                opened = self._open.pop(tr.alert_id, None)
                if opened is not None:
                    self._end_alert(opened, now, tr.peak, reason="sink stopped")
        late = self.clip_worker.finish(CLIP_FINISH_TIMEOUT_S)  # cut what the rings hold; every end goes out
        self._deliver_clipped()
        for alert in late:
            self.deliver(alert)
        self.write_status()
        self.snapshot_client.close()
        self.delivery.flush()
        for lane in self.delivery.lanes:
            lane.output.close()
        self.journal.close()
        self.pull.close(linger=0)
