"""The events API and page, read-only, as routes on the process's one HTTP server.

Under ``vidwatch run`` the HTTP server lives in the supervisor and the sink in a child process,
so the API reads what the sink leaves on disk rather than the sink's memory: the alerts JSON-lines
file (the first ``jsonl`` output: durable, fsync'ed, the record of truth), the snapshot and clip
files, and ``status.json`` (per-camera fps, scores, states) the sink rewrites every status
interval. The same routes then work alone (``vidwatch events CONFIG``, after a run ended) and in
``vidwatch sink``, and nothing new crosses a process boundary.

Routes: ``/events`` (the page), ``/api/cameras``, ``/api/events?camera=&rule=&since=&until=&limit=
&offset=``, ``/api/events/<id>/snapshot`` and ``/api/events/<id>/clip`` (HTTP Range, 206). Files
are found by alert id through the JSONL record and must resolve inside the snapshots or clips
folder: a URL never names a path, so path traversal has nothing to work with.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.http_server import HttpServer, Request, Response, json_response

logger = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("static") / "events.html"
PAGE_PATH = "/events"
STATUS_FILE = "status.json"
MAX_LIMIT = 500
RANGE_CHUNK = 4 << 20  # an open-ended Range gets at most this much; the browser asks for the rest
STALE_S = 15.0  # a camera with no result for this long is shown as down
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_MEDIA = {"snapshot": ("snapshot", "image/jpeg"), "clip": ("clip", "video/mp4")}


class EventsApi:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.jsonl = next((o.path for o in config.outputs if o.type == "jsonl"), None)  # type: ignore[union-attr]
        self.roots = {"snapshot": config.sink.snapshots_dir, "clip": config.evidence_dir() / "clips"}
        self.status_path = config.evidence_dir() / STATUS_FILE
        self._cache: tuple[tuple[float, int], list[dict[str, Any]]] | None = None
        self._lock = threading.Lock()

    def register(self, server: HttpServer) -> None:
        server.route(PAGE_PATH, self.page)
        server.route("/api/cameras", self.cameras)
        server.route("/api/events", self.events)
        server.route("/api/events/", self.media, prefix=True)

    # -- routes ---------------------------------------------------------------------------
    def page(self, request: Request) -> Response:
        return Response(200, PAGE.read_bytes(), "text/html; charset=utf-8", {"Cache-Control": "no-cache"})

    def cameras(self, request: Request) -> Response:
        status = _read_json(self.status_path)
        live = status.get("cameras", {}) if isinstance(status, dict) else {}
        updated = float(status.get("updated", 0.0)) if isinstance(status, dict) else 0.0
        cameras = []
        now = time.time()  # a sink that stopped writing leaves every camera down, not frozen up
        for camera in self.config.cameras:  # never the source: an RTSP URL can carry a password
            st = live.get(camera.id, {})
            last = st.get("last_result")
            up = bool(last) and now - float(last) < STALE_S
            cameras.append({"id": camera.id, "fps": camera.fps, "models": [m.model for m in camera.models],
                            "state": "up" if up else "down", **st})
        return json_response({"updated": updated or None, "cameras": cameras})

    def events(self, request: Request) -> Response:
        q = {k: v[-1] for k, v in request.query.items() if v}
        try:
            since, until = float(q.get("since", 0)), float(q.get("until", 1e12))
            limit = min(max(int(q.get("limit", 50)), 1), MAX_LIMIT)
            offset = max(int(q.get("offset", 0)), 0)
        except ValueError:
            return json_response({"error": "since/until are Unix seconds; limit/offset integers"}, 400)
        matching = [e for e in self._events()
                    if q.get("camera") in (None, e["camera"]) and q.get("rule") in (None, e["rule"])
                    and since <= e["start"] <= until]
        page = matching[offset:offset + limit]
        return json_response({"total": len(matching), "offset": offset, "limit": limit,
                              "events": [self._public(e) for e in page],
                              **({} if self.jsonl else {"note": "no jsonl output configured: no events kept"})})

    def media(self, request: Request) -> Response:
        parts = request.path.removeprefix("/api/events/").split("/")
        if len(parts) != 2 or not _ID.match(parts[0]) or parts[1] not in _MEDIA:
            return Response(404, b"not found\n")
        field, content_type = _MEDIA[parts[1]]
        event = next((e for e in self._events() if e["id"] == parts[0]), None)
        path = self._inside(self.roots[field], event.get(field) if event else None)
        if path is None:
            return Response(404, f"no {field} for this event\n".encode())
        return file_response(path, content_type, request.headers.get("range"))

    # -- data -----------------------------------------------------------------------------
    def _events(self) -> list[dict[str, Any]]:
        """Alerts from the JSONL, start and end merged per id, newest first (cached by mtime/size)."""
        if self.jsonl is None:
            return []
        try:
            stat = self.jsonl.stat()
        except OSError:
            return []
        key = (stat.st_mtime, stat.st_size)
        with self._lock:
            if self._cache is None or self._cache[0] != key:
                self._cache = (key, _merge(self.jsonl))
            return self._cache[1]

    def _public(self, event: dict[str, Any]) -> dict[str, Any]:
        out = {k: event.get(k) for k in ("id", "camera", "rule", "kind", "model", "label", "score", "start", "end",
                                          "latency_s", "clip_error")}
        out["state"] = "ended" if event.get("end") is not None else "open"
        for name, (field, _) in _MEDIA.items():
            present = self._inside(self.roots[field], event.get(field)) is not None
            out[f"{name}_url"] = f"/api/events/{event['id']}/{name}" if present else None
        return out

    @staticmethod
    def _inside(root: Path, recorded: Any) -> Path | None:
        if not isinstance(recorded, str) or not recorded:
            return None
        try:
            path, base = Path(recorded).resolve(), root.resolve()
        except (OSError, RuntimeError):
            return None
        return path if path.is_relative_to(base) and path.is_file() else None


def _merge(path: Path) -> list[dict[str, Any]]:
    events: dict[str, dict[str, Any]] = {}
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            record = json.loads(line)
            events.setdefault(str(record["id"]), {}).update({k: v for k, v in record.items() if v is not None})
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line while the sink writes
    merged = [e for e in events.values() if isinstance(e.get("start"), int | float) and "camera" in e]
    return sorted(merged, key=lambda e: -float(e["start"]))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def file_response(path: Path, content_type: str, range_header: str | None) -> Response:
    """The file, or the byte range asked for (206): browsers seek and play video this way."""
    size = path.stat().st_size
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-cache"}
    match = _RANGE.match(range_header.strip()) if range_header else None
    if range_header and match is None or match is not None and not any(match.groups()):
        return Response(416, b"", content_type, {**headers, "Content-Range": f"bytes */{size}"})
    if match is None:
        return Response(200, path.read_bytes(), content_type, headers)
    first, last = match.groups()
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else min(size - 1, start + RANGE_CHUNK - 1)
    else:
        start, end = max(0, size - int(last)), size - 1
    if start >= size or start > end:
        return Response(416, b"", content_type, {**headers, "Content-Range": f"bytes */{size}"})
    with path.open("rb") as fh:
        fh.seek(start)
        body = fh.read(end - start + 1)
    return Response(206, body, content_type, {**headers, "Content-Range": f"bytes {start}-{end}/{size}"})


def register_events(server: HttpServer, config: Config) -> str:
    """Add the events page and API to ``server``; returns the page's path."""
    EventsApi(config).register(server)
    return PAGE_PATH
