"""Run a stage in a thread of the test process, on real sockets, and stop it cleanly; stop a `vidwatch run`."""

from __future__ import annotations

import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.config import Config, parse_config
from tests.conftest import PEOPLE_CLIP, free_port


def make_config(models_dir: Path, tmp: Path, cameras: str, rules: str = "", extra: str = "",
                evidence: str = "clips: false, snapshot_timeout_s: 0.3") -> Config:
    """A config on free ports under ``tmp``; ``evidence`` holds extra fields of that section."""
    text = f"""
state_dir: {tmp}/state
models:
  demo-anomaly: {{path: {models_dir}/demo-anomaly}}
inference: {{endpoint: "tcp://127.0.0.1:{free_port()}", max_wait_ms: 20}}
sink: {{endpoint: "tcp://127.0.0.1:{free_port()}", snapshots_dir: {tmp}/snapshots, status_interval_s: 1}}
outputs:
  - {{type: jsonl, path: {tmp}/alerts.jsonl}}
cameras:
{cameras}
rules:
{rules or '  []'}
evidence: {{endpoint: "tcp://127.0.0.1:{free_port()}", dir: {tmp}/evidence, {evidence}}}
{extra}
"""
    return parse_config(text)


def write_run_config(models_dir: Path, tmp: Path, metrics_port: int | None = None, evidence: bool = True) -> Path:
    """A one-camera `vidwatch run` config file (demo-anomaly on the looped people clip) on free ports."""
    lines = [f"state_dir: {tmp}/state",
             f"models: {{a: {{path: {models_dir}/demo-anomaly}}}}",
             f'inference: {{endpoint: "tcp://127.0.0.1:{free_port()}"}}',
             f'sink: {{endpoint: "tcp://127.0.0.1:{free_port()}", snapshots_dir: {tmp}/snap}}',
             f"cameras: [{{id: c, source: {PEOPLE_CLIP}, loop: true, models: [{{model: a}}]}}]"]
    if metrics_port is not None:
        lines.append(f"metrics: {{port: {metrics_port}}}")
    if evidence:
        lines.append(f'evidence: {{endpoint: "tcp://127.0.0.1:{free_port()}"}}')
    config = tmp / "c.yaml"
    config.write_text("\n".join(lines) + "\n")
    return config


@contextmanager
def running(stage: Any) -> Iterator[Any]:
    thread = threading.Thread(target=stage.run, daemon=True)
    thread.start()
    try:
        yield stage
    finally:
        stage.stop.set()
        thread.join(15)
        assert not thread.is_alive(), f"{type(stage).__name__} did not stop"


def interrupt(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """Stop a ``vidwatch run`` as Ctrl-C does (SIGINT); kill it if it has not exited after ``timeout`` s."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def context_delivers(ctx: Any, timeout_ms: int = 5000) -> bool:
    """Whether a fresh PUSH -> PULL pair on ``ctx`` still gets a message through: a ZeroMQ context
    whose I/O thread is blocked (e.g. on a socket monitor nobody reads) delivers nothing at all."""
    import zmq

    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        push.connect(f"tcp://127.0.0.1:{port}")
        push.send(b"ping")
        return bool(pull.poll(timeout_ms)) and pull.recv() == b"ping"
    finally:
        push.close(0)
        pull.close(0)
