"""Full-resolution snapshots from the capture side, without sending full frames down the pipeline.

Frames travel to inference once, at model size. For the evidence, each capture node keeps the
last few seconds of the frames each camera *sent* to inference at native resolution (capped at
``evidence.max_width``) in memory, uncompressed, and serves them on request: the sink asks
``{camera, seq}`` over a ZeroMQ DEALER -> ROUTER socket (capture group g binds
``evidence.endpoint`` port + g) and gets one JPEG back, encoded only then.

Memory, which sets how many cameras a box holds: a frame is held as I420 (the planar YUV 4:2:0
the camera's H.264 decodes from: 1.5 bytes a pixel, half of BGR; converting costs ~0.1 ms each
way at 640x360, and only a snapshot converts back); the ring holds only frames sent to
inference (an alert always names one of those: the motion gate's held-back frames never reach a
model) and only the last ``frame_ring_s`` seconds of them, so a still camera behind the gate
holds its last keep-alive burst instead of ``frame_ring_s`` x fps frames.

Why on request and not every frame: JPEG-encoding every sampled frame would cost the capture
node a few ms per frame per camera for pictures nobody asks for (alerts are rare); holding raw
frames costs only memory (about 0.35 MB per 640x360 frame, ``frame_ring_s`` x fps of them).
Why a socket and not a file: the sink may run on another host (``vidwatch sink`` over tcp://),
and a socket reaches it where a folder does not. For the same reason the socket also cuts event
clips from this host's segment rings (``op: clip``) for a sink that cannot read them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import zmq

from pipeline.clips import CUT_TIMEOUT_S, ClipError, cut_clip, read_index
from pipeline.config import CameraConfig, Config
from pipeline.segment_ring import RingMetrics, SegmentRecorder, ring_dir
from pipeline.transport import DEFAULTS, worker_endpoint
from pipeline.transport_security import TransportSecurity, transport_security

logger = logging.getLogger(__name__)

JPEG_QUALITY = 90


@dataclass(frozen=True)
class RingFrame:
    seq: int
    t_capture: float
    packed: np.ndarray  # I420 (``pack``), or BGR for a frame with an odd side

    @property
    def bgr(self) -> np.ndarray:
        return unpack(self.packed)


def pack(bgr: np.ndarray) -> np.ndarray:
    """The frame as I420, ``[H * 3 / 2, W]`` uint8 (half of BGR's bytes); BGR frames with an odd
    side (I420 needs even ones) and grey frames are kept as they are."""
    height, width = bgr.shape[:2]
    if bgr.ndim != 3 or height % 2 or width % 2:
        return bgr
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)


def unpack(packed: np.ndarray) -> np.ndarray:
    """The BGR frame ``pack`` was given (chroma averaged over 2x2 pixels, as the camera sent it)."""
    return packed if packed.ndim == 3 else cv2.cvtColor(packed, cv2.COLOR_YUV2BGR_I420)


def cap_width(bgr: np.ndarray, max_width: int) -> np.ndarray:
    """The frame itself when narrow enough, else scaled down to ``max_width`` keeping its aspect."""
    height, width = bgr.shape[:2]
    if width <= max_width:
        return bgr
    size = (max_width, max(2, round(height * max_width / width / 2) * 2))  # even: H.264 wants it
    return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)


class FrameRing:
    """The last ``seconds`` of one camera's full-resolution frames, packed (thread-safe): at most
    ``seconds`` x ``fps`` + 1 frames, none older than ``seconds`` before the newest."""

    def __init__(self, seconds: float, fps: float) -> None:
        self.seconds = seconds
        self._frames: deque[RingFrame] = deque(maxlen=max(2, int(seconds * fps) + 1))
        self._lock = threading.Lock()
        self._nbytes = 0

    def push(self, seq: int, t_capture: float, bgr: np.ndarray) -> None:
        frame = RingFrame(seq, t_capture, pack(bgr))  # outside the lock: the server may be reading
        with self._lock:
            if len(self._frames) == self._frames.maxlen:
                self._nbytes -= self._frames[0].packed.nbytes
            self._frames.append(frame)
            self._nbytes += frame.packed.nbytes
            while self._frames[0].t_capture < t_capture - self.seconds:
                self._nbytes -= self._frames.popleft().packed.nbytes

    def nbytes(self) -> int:
        """Bytes of the frames held."""
        return self._nbytes

    def seqs(self) -> list[int]:
        """Frame numbers held, oldest first."""
        with self._lock:
            return [f.seq for f in self._frames]

    def find(self, seq: int) -> RingFrame | None:
        """The frame ``seq``, or the nearest one still held (the ring may have moved past it)."""
        with self._lock:
            frames = list(self._frames)
        if not frames:
            return None
        return min(frames, key=lambda f: abs(f.seq - seq))


class SnapshotServer(threading.Thread):
    """Answers snapshot requests for one capture group's cameras from their frame rings, and clip
    requests from their segment rings (``ring_dirs``)."""

    def __init__(self, endpoint: str, rings: dict[str, FrameRing], stop: threading.Event,
                 ring_dirs: dict[str, Path] | None = None, security: TransportSecurity | None = None) -> None:
        super().__init__(name="snapshot-server", daemon=True)
        self.rings, self.stop, self.ring_dirs = rings, stop, ring_dirs or {}
        self.sock: zmq.Socket = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if security is not None:  # only authorized clients (the sink) may pull frames and clips
            security.serve(self.sock, endpoint)
        self.sock.bind(endpoint)  # a clash is reported by the caller (capture start fails loudly)
        self.endpoint = endpoint

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                if self.sock.poll(DEFAULTS.poll_ms):
                    self._answer(self.sock.recv_multipart())
        finally:
            self.sock.close(linger=0)

    def _answer(self, parts: list[bytes]) -> None:
        if len(parts) < 2:
            return
        peer, body = parts[0], parts[-1]
        request: dict[str, Any] = {}
        try:
            request = json.loads(body)
            if request.get("op") == "clip":
                header, data = self.clip(str(request["camera"]), float(request["t_from"]), float(request["t_to"]),
                                         bool(request.get("final")))
            else:
                header, data = self.snapshot(str(request["camera"]), int(request["seq"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            header, data = {"ok": False, "error": f"bad request: {exc}"}, b""
        header["id"] = request.get("id") if isinstance(request, dict) else None
        self.sock.send_multipart([peer, b"", json.dumps(header).encode(), data])

    def clip(self, camera: str, t_from: float, t_to: float, final: bool) -> tuple[dict[str, Any], bytes]:
        """The MP4 of ``[t_from, t_to]``; ``wait`` while the ring has not recorded ``t_to`` yet."""
        folder = self.ring_dirs.get(camera)
        if folder is None:
            return {"ok": False, "error": f"camera {camera!r} is not recorded on this capture node"}, b""
        recorded = max((s.end for s in read_index(folder)), default=0.0)
        if recorded < t_to and not final:
            return {"ok": False, "wait": True, "recorded": recorded}, b""
        out = folder / f"clip-{uuid.uuid4().hex[:8]}.mp4"
        try:
            return {"ok": True}, cut_clip(folder, t_from, t_to, out).read_bytes()
        except (ClipError, OSError) as exc:
            return {"ok": False, "error": str(exc)}, b""
        finally:
            out.unlink(missing_ok=True)

    def snapshot(self, camera: str, seq: int) -> tuple[dict[str, Any], bytes]:
        ring = self.rings.get(camera)
        frame = ring.find(seq) if ring is not None else None
        if frame is None:
            return {"ok": False, "error": f"no frames held for camera {camera!r}"}, b""
        bgr = frame.bgr
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            return {"ok": False, "error": "JPEG encoding failed"}, b""
        height, width = bgr.shape[:2]
        return {"ok": True, "seq": frame.seq, "t_capture": frame.t_capture, "width": width,
                "height": height}, buf.tobytes()


def group_endpoint(base: str, group: int) -> str:
    """Capture group ``group``'s snapshot endpoint: tcp port + group, or ipc path suffix -group."""
    return worker_endpoint(base, group)


class SnapshotClient:
    """The sink's side: one DEALER per capture group; a request waits at most ``timeout_s``."""

    def __init__(self, base: str, groups: list[int], timeout_s: float,
                 security: TransportSecurity | None = None) -> None:
        self.timeout_s = timeout_s
        ctx: zmq.Context = zmq.Context.instance()
        self.sockets: dict[int, zmq.Socket] = {}
        for group in groups:
            sock = ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, 16)
            sock.setsockopt(zmq.SNDTIMEO, 0)
            if security is not None:
                security.connect_as_client(sock)
            sock.connect(group_endpoint(base, group))
            self.sockets[group] = sock
        self._next_id = 0

    def fetch(self, group: int, camera: str, seq: int) -> tuple[bytes | None, str]:
        """(JPEG, "") for the camera's frame ``seq`` (or nearest held), or (None, why not)."""
        header, data = self._request(group, {"camera": camera, "seq": seq}, self.timeout_s)
        return (data, "") if header.get("ok") else (None, str(header.get("error", "capture node refused")))

    def fetch_clip(self, group: int, camera: str, t_from: float, t_to: float,
                   final: bool) -> tuple[bytes | None, str, bool]:
        """(MP4, "", False) cut on the capture node, (None, "", True) while it has not recorded
        ``t_to`` yet (unless ``final``), or (None, why not, False)."""
        header, data = self._request(group, {"op": "clip", "camera": camera, "t_from": t_from, "t_to": t_to,
                                             "final": final}, CUT_TIMEOUT_S + self.timeout_s)
        if header.get("ok"):
            return data, "", False
        return None, str(header.get("error", "")), bool(header.get("wait"))

    def _request(self, group: int, payload: dict[str, Any], timeout_s: float) -> tuple[dict[str, Any], bytes]:
        sock = self.sockets[group]
        self._next_id += 1
        request_id = self._next_id
        try:
            sock.send_multipart([b"", json.dumps({"id": request_id, **payload}).encode()])
        except zmq.Again:
            return {"ok": False, "error": "capture node is not connected"}, b""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(int(left * 1000) + 1):
                break
            parts = sock.recv_multipart()
            header = json.loads(parts[-2]) if len(parts) >= 2 else {}
            if header.get("id") == request_id:
                return header, parts[-1]
            # else: a late answer to an earlier request that timed out
        return {"ok": False, "error": f"capture node did not answer in {timeout_s:.1f} s"}, b""

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close(linger=0)


class CameraEvidence:
    """What capture keeps of one camera for evidence: the frame ring and (clips on) the segment ring."""

    def __init__(self, ring: FrameRing, max_width: int, recorder: SegmentRecorder | None) -> None:
        self.ring, self.max_width, self.recorder = ring, max_width, recorder

    def on_frame(self, bgr: np.ndarray) -> np.ndarray:
        """Every sampled frame at native resolution, sent on or held back by the motion gate: the
        clip encoder records it (a clip shows the scene, not what the models saw). Returns the
        frame capped at ``max_width`` (``bgr`` itself when narrow enough) for ``on_sent``."""
        frame = cap_width(bgr, self.max_width)
        if self.recorder is not None:
            self.recorder.write(frame)
        return frame

    def on_sent(self, seq: int, t_capture: float, bgr: np.ndarray) -> None:
        """A frame sent to inference (native resolution): keep it for snapshots of alerts on it."""
        self.ring.push(seq, t_capture, cap_width(bgr, self.max_width))

    def start(self) -> None:
        if self.recorder is not None:
            self.recorder.start()

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


def camera_evidence(config: Config, camera: CameraConfig, ring_metrics: RingMetrics | None = None) -> CameraEvidence:
    settings = config.evidence
    recorder = (SegmentRecorder(camera.id, camera.source, camera.fps, config.evidence_dir(), settings, ring_metrics)
                if settings.clips else None)
    return CameraEvidence(FrameRing(settings.frame_ring_s, camera.fps), settings.max_width, recorder)


def start_snapshot_server(config: Config, group: int, evidence: dict[str, CameraEvidence],
                          stop: threading.Event) -> SnapshotServer | None:
    """Serve this group's frames; without the port, snapshots fall back to model size (logged)."""
    endpoint = group_endpoint(config.evidence.bind or config.evidence.endpoint, group)
    ring_dirs = {cam: ring_dir(config.evidence_dir(), cam) for cam in evidence} if config.evidence.clips else {}
    try:
        server = SnapshotServer(endpoint, {cam: ev.ring for cam, ev in evidence.items()}, stop, ring_dirs,
                                transport_security(config, f"capture-{group}"))
    except zmq.ZMQError as exc:
        logger.error("capture: cannot serve snapshots on %s (%s); alerts get model-size snapshots. "
                     "Set evidence.endpoint to a free port", endpoint, exc)
        return None
    server.start()
    return server
