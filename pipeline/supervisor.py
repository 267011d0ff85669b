"""``vidwatch run``: every stage as its own process on one host, restarted if it crashes,
stopped in flow order (capture, inference, sink) so results in flight still reach the sink.

Metrics from all processes are merged (prometheus_client multiprocess mode) and served on one
port by this supervisor process, with ``/healthz`` and ``/readyz`` (``pipeline.health``): each
stage process reports its health in a file the supervisor reads. Under systemd
(``Type=notify``) the supervisor sends ``READY=1`` once every stage is ready and feeds the
watchdog from its loop while it is healthy.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any

from pipeline.config import Config
from pipeline.health import (
    Reporter,
    StageHealth,
    add_health_routes,
    last_problems,
    read_report,
    sd_notify,
    watchdog_interval,
)
from pipeline.secrets import known_secrets

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

logger = logging.getLogger(__name__)

STAGE_ORDER = ("capture", "infer", "sink")
RESTART_BACKOFF_S = (1.0, 30.0)
STOP_TIMEOUT_S = 10.0
# The watchdog stops being fed (systemd restarts the service) when a stage has not been ready
# for this long: the supervisor's own restarts have not brought it back.
UNREADY_LIMIT_S = 300.0


@dataclass
class StageProcess:
    kind: str
    index: int
    process: BaseProcess | None = None
    restarts: int = 0  # consecutive, for the backoff (reset once a stage ran a while)
    total_restarts: int = 0  # since the supervisor started: vidwatch_stage_restarts_total
    next_start: float = 0.0
    done: bool = False  # exited cleanly on its own (capture of files that ended)
    started_at: float = field(default_factory=time.monotonic)
    ready_at: float = field(default_factory=time.monotonic)  # last time it was seen ready
    launches: int = 0

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.index}"


def stage_main(kind: str, index: int, config: Config, log_level: int, supervisor: int,
               health_dir: str, known_secrets: tuple[str, ...] = ()) -> None:
    """Entry point of a stage process (spawned by the process ``supervisor``), which stops it with
    SIGTERM.

    The stop event is this process's own: a ``multiprocessing.Event`` shared with the supervisor
    deadlocks once a stage is SIGKILLed while waiting on it (its ``Condition`` counts the dead
    waiter as sleeping, and the supervisor's ``set()`` waits forever for it to wake)."""
    from pipeline import secrets

    stop = threading.Event()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when to stop
    signal.signal(signal.SIGTERM, lambda *_: set_from_signal(stop))
    _stop_with_parent(stop, supervisor)
    logging.basicConfig(level=log_level, format=f"%(asctime)s {kind}-{index} %(levelname)s %(message)s")
    for value in known_secrets:  # substituted ${ENV}/${file:} values, masked here too
        secrets.remember(value)
    secrets.remember_config_sources([c.source for c in config.cameras])
    secrets.install_log_filter()
    reporter = Reporter(health_dir, f"{kind}-{index}", stop).start()
    try:
        stage = reporter.local.stage = build_stage(kind, index, config, None, stop)
    except Exception as exc:
        reporter.local.failure = secrets.redact(f"failed to start: {exc}")
        reporter.report()
        logger.exception("%s-%d failed to start", kind, index)  # through the redacting filter
        raise SystemExit(1) from None
    reporter.report()
    try:
        stage.run()
    except Exception:  # logged through the redacting filter, not multiprocessing's raw traceback
        logger.exception("%s-%d crashed", kind, index)
        raise SystemExit(1) from None


def set_from_signal(event: Any) -> None:
    """Set an Event from a signal handler without deadlocking.

    The handler runs in the main thread, possibly inside ``event.wait()`` while it holds the
    event's (non-reentrant) lock; ``event.set()`` there would wait for itself forever. A thread
    sets it as soon as the lock is free.
    """
    threading.Thread(target=event.set, name="signal-stop", daemon=True).start()


def _stop_with_parent(stop: Any, parent: int) -> None:
    """A stage must not outlive a supervisor that was killed (SIGKILL, OOM): watch the parent.

    ``parent`` comes from the supervisor itself: it may already be gone when this runs."""

    def watch() -> None:
        while not stop.is_set():
            if os.getppid() != parent:
                logging.getLogger(__name__).warning("supervisor %d is gone; stopping", parent)
                stop.set()
                return
            time.sleep(0.5)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def build_stage(kind: str, index: int, config: Config, registry: Any, stop: Any) -> Any:
    if kind == "capture":
        from pipeline.capture import CaptureNode

        return CaptureNode(config, index, registry, stop)
    if kind == "infer":
        from pipeline.inference import InferenceWorker

        return InferenceWorker(config, index, registry, stop)
    if kind == "sink":
        from pipeline.sink import Sink

        return Sink(config, registry, stop)
    raise ValueError(f"unknown stage {kind!r}")


class RestartsCollector:
    """``vidwatch_stage_restarts_total{stage}``: crashes the supervisor restarted, per stage process.

    Collected from the supervisor's own bookkeeping at scrape time: the supervisor is not one of
    the multiprocess-mode writers, and every stage has its series (at 0) from the start."""

    def __init__(self, stages: list[StageProcess]) -> None:
        self.stages = stages

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily("vidwatch_stage_restarts", "Stage processes restarted after a crash",
                                     labels=["stage"])
        for stage in self.stages:
            family.add_metric([stage.name], stage.total_restarts)
        yield family


class Supervisor:
    def __init__(self, config: Config, log_level: int = logging.INFO) -> None:
        from pipeline.engines import resolve

        # At start-up, before any process: auto picks its engine once (logged, the same in every
        # worker); an engine this machine cannot run fails here naming what is missing.
        config = config.model_copy(update={"engine": resolve(config.engine)})
        self.config, self.log_level = config, log_level
        self.ctx = mp.get_context("spawn")  # no forked copies of sockets, threads or ORT sessions
        self.stages = ([StageProcess("sink", 0)]
                       + [StageProcess("infer", i) for i in range(config.inference.workers)]
                       + [StageProcess("capture", g) for g in config.groups()])
        self.stopping = threading.Event()
        self.metrics_dir = tempfile.mkdtemp(prefix="vidwatch-metrics-")
        self.health_dir = os.path.join(self.metrics_dir, "health")  # stage reports (pipeline.health)
        os.mkdir(self.health_dir)
        self.http: Any = None  # pipeline.http_server.HttpServer once run() starts it
        self.notified_ready = False
        self.watchdog_s = watchdog_interval()
        self._last_watchdog = 0.0

    def run(self, duration: float | None = None) -> int:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = self.metrics_dir
        self._serve_metrics()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: set_from_signal(self.stopping))
        deadline = time.monotonic() + duration if duration else None
        try:
            while not self.stopping.is_set():
                self._tick()
                self._notify_systemd()
                if deadline is not None and time.monotonic() >= deadline:
                    logger.info("duration reached; stopping")
                    break
                if all(s.done for s in self.stages if s.kind == "capture"):
                    logger.info("every capture node finished; stopping")
                    time.sleep(2.0)  # let the last windows reach the sink
                    break
                self.stopping.wait(0.5)
        finally:
            self.stop()
        return 0

    def _serve_metrics(self) -> None:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        from pipeline.events_api import register_events
        from pipeline.http_security import http_security
        from pipeline.http_server import serve_metrics

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.metrics_dir)
        registry.register(RestartsCollector(self.stages))
        m = self.config.metrics
        self.http = serve_metrics(m.host, m.port, registry, http_security(m))
        page = register_events(self.http, self.config)  # reads the sink's files: see pipeline/events_api.py
        add_health_routes(self.http, self.readiness)
        scheme = self.http.security.scheme
        print(f"metrics: {scheme}://{m.host}:{m.port}/metrics", flush=True)
        print(f"events page: {scheme}://{m.host}:{m.port}{page}", flush=True)

    def _tick(self) -> None:
        now = time.monotonic()
        for stage in self.stages:
            proc = stage.process
            if proc is not None and not proc.is_alive():
                self._reap(stage, now)
            if stage.process is None and not stage.done and now >= stage.next_start:
                self._start(stage)

    def readiness(self) -> dict[str, StageHealth]:
        """Every stage's health as ``/readyz`` shows it: its process must be alive and its own
        latest report (same pid, fresh) ready. Called from the HTTP thread and the loop."""
        now, wall = time.monotonic(), time.time()
        result = {}
        for stage in list(self.stages):
            proc = stage.process
            if self.stopping.is_set():
                health = StageHealth(False, ["stopping"])
            elif proc is None and stage.done:
                health = StageHealth(True, [], {"state": "finished (end of its files)"})
            elif proc is None and stage.launches == 0:
                health = StageHealth(False, ["not started yet"])
            elif proc is None:
                last = [f"last report: {p}" for p in last_problems(self.health_dir, stage.name)]
                health = StageHealth(False, [f"down (exited); restart in {max(0.0, stage.next_start - now):.0f} s, "
                                             f"restarts so far: {stage.restarts}", *last])
            elif not proc.is_alive():
                health = StageHealth(False, [f"down (exit code {proc.exitcode}); restarting"])
            else:
                health = read_report(self.health_dir, stage.name, proc.pid, wall)
                health = replace(health, detail={**health.detail, "pid": proc.pid})
            result[stage.name] = health
        return result

    def healthy(self) -> bool:
        """The watchdog is fed only while every stage was ready within ``UNREADY_LIMIT_S``."""
        now = time.monotonic()
        return all(now - s.ready_at < UNREADY_LIMIT_S for s in self.stages)

    def _notify_systemd(self) -> None:
        now = time.monotonic()
        health = self.readiness()
        for stage in self.stages:
            if health[stage.name].ready:
                stage.ready_at = now
        if not self.notified_ready and all(h.ready for h in health.values()):
            self.notified_ready = True
            logger.info("every stage is ready")
            sd_notify("READY=1\nSTATUS=every stage is ready")
        if self.watchdog_s and now - self._last_watchdog >= self.watchdog_s and self.healthy():
            self._last_watchdog = now
            sd_notify("WATCHDOG=1")

    def _start(self, stage: StageProcess) -> None:
        stage.process = self.ctx.Process(
            target=stage_main, name=f"vidwatch-{stage.name}", daemon=False,
            args=(stage.kind, stage.index, self.config, self.log_level, os.getpid(),
                  self.health_dir, tuple(known_secrets())))
        os.environ["VIDWATCH_STAGE"] = stage.name  # inherited: tools can tell the processes apart
        stage.process.start()
        stage.launches += 1
        stage.started_at = time.monotonic()
        logger.info("started %s (pid %s)", stage.name, stage.process.pid)

    def _reap(self, stage: StageProcess, now: float) -> None:
        from prometheus_client import multiprocess

        assert stage.process is not None
        code, pid = stage.process.exitcode, stage.process.pid
        stage.process = None
        if pid is not None:
            multiprocess.mark_process_dead(pid, self.metrics_dir)
        if code == 0 and stage.kind == "capture":
            stage.done = True
            logger.info("%s finished", stage.name)
            return
        # Crashed: restart with exponential backoff; a stage that ran a while starts from scratch.
        if now - stage.started_at > 60:
            stage.restarts = 0
        delay = min(RESTART_BACKOFF_S[0] * 2 ** stage.restarts, RESTART_BACKOFF_S[1])
        stage.restarts += 1
        stage.total_restarts += 1
        stage.next_start = now + delay
        logger.error("%s exited with code %s; restarting in %.0f s", stage.name, code, delay)

    def stop(self) -> None:
        self.stopping.set()  # /readyz answers "stopping" from now on
        sd_notify("STOPPING=1")
        for kind in STAGE_ORDER:  # SIGTERM (see stage_main), each kind's stages together
            running = [s for s in self.stages if s.kind == kind and s.process is not None]
            for stage in running:
                assert stage.process is not None
                if stage.process.is_alive():
                    stage.process.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT_S
            for stage in running:
                assert stage.process is not None
                stage.process.join(max(0.0, deadline - time.monotonic()))
                if stage.process.is_alive():
                    logger.warning("%s did not stop in %.0f s; killing it", stage.name, STOP_TIMEOUT_S)
                    stage.process.kill()
                    stage.process.join()
        if self.http is not None:
            self.http.stop()
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
