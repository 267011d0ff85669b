"""Health of a process: ``/healthz`` (alive) and ``/readyz`` (every stage up, cameras open or
retrying, models loaded) on the process's HTTP server, plus systemd's ``sd_notify``.

A stage says how it is with ``health() -> StageHealth``. A stage run alone (``vidwatch infer``)
answers ``/readyz`` from its own object. Under ``vidwatch run`` the stages live in child
processes, so each child writes its health to a small JSON file (``<health dir>/<stage>.json``,
atomically, every ``REPORT_INTERVAL_S``) and the supervisor reads them. A file rather than a
multiprocess gauge or a shared ``Value`` because it carries the reasons (which camera is down,
what is loading), it names the pid that wrote it (a report left by a child that was killed is
never taken for its successor's), and its age is a heartbeat (a stage that hangs stops writing
and turns not ready, which a flag set once would never show).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from pipeline.http_server import HttpServer, Request, Response, json_response

logger = logging.getLogger(__name__)

REPORT_INTERVAL_S = 1.0
STALE_AFTER_S = 15.0  # a report older than this: the stage is hung (or its writer thread died)


@dataclass(frozen=True)
class StageHealth:
    """``ready`` false names why in ``problems``; ``detail`` is informative (camera states...)."""

    ready: bool
    problems: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    @staticmethod
    def of(problems: list[str], detail: dict[str, Any] | None = None) -> StageHealth:
        return StageHealth(not problems, problems, detail or {})


class HasHealth(Protocol):
    def health(self) -> StageHealth: ...


STARTING = StageHealth(False, ["starting: loading models and opening sockets"])
_URL_CREDENTIALS = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)


def redact(text: str) -> str:
    """``rtsp://user:secret@cam/...`` -> ``rtsp://***@cam/...``: /readyz may be reachable by anyone
    who can scrape, and a stage's startup error can quote a camera URL."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


# -- HTTP routes ------------------------------------------------------------------------------
def add_health_routes(server: HttpServer, readiness: Callable[[], Mapping[str, StageHealth]]) -> None:
    """``/healthz``: 200 while the process serves HTTP. ``/readyz``: 200 when every stage is
    ready, else 503; both bodies are JSON, ``/readyz`` lists each stage and what is not ready."""
    started = time.time()

    def healthz(request: Request) -> Response:
        return json_response({"status": "alive", "pid": os.getpid(), "uptime_s": round(time.time() - started, 1)})

    def readyz(request: Request) -> Response:
        stages = {name: replace(h, problems=[redact(p) for p in h.problems]) for name, h in readiness().items()}
        not_ready = {name: h.problems for name, h in stages.items() if not h.ready}
        ready = bool(stages) and not not_ready
        body = {"status": "ready" if ready else "not ready", "not_ready": not_ready,
                "stages": {name: asdict(h) for name, h in stages.items()}}
        return json_response(body, 200 if ready else 503)

    server.route("/healthz", healthz)
    server.route("/readyz", readyz)


class LocalStage:
    """Readiness of a stage in this process: starting until ``stage`` is set, then its own."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stage: HasHealth | None = None
        self.failure: str | None = None

    def readiness(self) -> dict[str, StageHealth]:
        if self.failure is not None:
            return {self.name: StageHealth(False, [self.failure])}
        if self.stage is None:
            return {self.name: STARTING}
        try:
            return {self.name: self.stage.health()}
        except Exception as exc:  # a health check that breaks is itself a reason not to be ready
            return {self.name: StageHealth(False, [f"health check failed: {exc!r}"])}


# -- reports between a stage process and its supervisor ---------------------------------------
def report_path(health_dir: str | Path, stage: str) -> Path:
    return Path(health_dir) / f"{stage}.json"


def write_report(health_dir: str | Path, stage: str, health: StageHealth) -> None:
    path = report_path(health_dir, stage)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "time": time.time(), **asdict(health)}))
    os.replace(tmp, path)  # the reader sees the old report or the new one, never half of one


def read_report(health_dir: str | Path, stage: str, pid: int | None, now: float | None = None) -> StageHealth:
    """The health ``pid`` last reported for ``stage``; not ready when absent, stale or another pid's."""
    try:
        report = json.loads(report_path(health_dir, stage).read_text())
    except (OSError, ValueError):
        return STARTING
    if report.get("pid") != pid:
        return STARTING  # left by a previous process of this stage
    age = (now or time.time()) - float(report.get("time", 0))
    if age > STALE_AFTER_S:
        return StageHealth(False, [f"no health report for {age:.0f} s (stage hung?)"])
    return StageHealth(bool(report.get("ready")), list(report.get("problems", [])), dict(report.get("detail", {})))


def last_problems(health_dir: str | Path, stage: str) -> list[str]:
    """What the last process of ``stage`` reported as wrong, whoever it was (e.g. why it died)."""
    try:
        return [str(p) for p in json.loads(report_path(health_dir, stage).read_text()).get("problems", [])]
    except (OSError, ValueError, AttributeError):
        return []


class Reporter:
    """Writes a stage process's health for its supervisor every ``REPORT_INTERVAL_S``."""

    def __init__(self, health_dir: str | Path, stage: str, stop: Any) -> None:
        self.local = LocalStage(stage)
        self.health_dir, self.stop = health_dir, stop
        self._thread = threading.Thread(target=self._loop, name="health-report", daemon=True)

    def start(self) -> Reporter:
        self.report()
        self._thread.start()
        return self

    def report(self) -> None:
        (name, health), = self.local.readiness().items()
        try:
            write_report(self.health_dir, name, health)
        except OSError as exc:
            logger.warning("cannot write health report for %s: %s", name, exc)

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.report()
            self.stop.wait(REPORT_INTERVAL_S)


# -- systemd ----------------------------------------------------------------------------------
def sd_notify(message: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``message`` (e.g. ``READY=1``) to systemd's ``NOTIFY_SOCKET``; False when not under
    systemd (no socket) or the send failed. Abstract sockets (``@name``) are supported."""
    address = (environ if environ is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        logger.warning("sd_notify to %s failed: %s", address, exc)
        return False


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), None without a watchdog."""
    env = environ if environ is not None else os.environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2e6
    except ValueError:
        return None


LOOP_STALL_S = 30.0


def loop_problems(loop_at: float | None, now: float | None = None) -> list[str]:
    """A stage's main loop stamps ``loop_at`` (monotonic) each turn; not running or stalled is not ready."""
    if loop_at is None:
        return ["main loop not running yet"]
    stalled = (now or time.monotonic()) - loop_at
    return [f"main loop stalled for {stalled:.0f} s"] if stalled > LOOP_STALL_S else []
