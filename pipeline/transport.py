"""ZeroMQ sockets for the stages, with every socket option named in one place.

Bounded queues everywhere: a slow consumer makes the producer drop (and count), never block
a camera and never grow memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import zmq

from pipeline.errors import VidwatchError


@dataclass(frozen=True)
class SocketDefaults:
    frames_hwm: int = 4  # messages (each a batch of frames) queued per peer before send blocks
    results_hwm: int = 1000  # results are small; keep many rather than lose an alert
    linger_ms: int = 0  # at shutdown drop unsent frames; results sockets override below
    results_linger_ms: int = 2000  # give the sink time to receive the last results
    send_timeout_ms: int = 200  # a send that cannot proceed this long is a drop
    poll_ms: int = 100  # receive loops wake this often to check for shutdown


DEFAULTS = SocketDefaults()


def worker_endpoint(base: str, index: int) -> str:
    """Worker ``index``'s frame endpoint: tcp port + index, or ipc path suffix -index; ``{index}``
    in the host is replaced by the index (a host per worker: ``vidwatch-infer-{index}.vidwatch-infer``)."""
    base = base.replace("{index}", str(index))
    match = re.match(r"^(tcp://[^:]+:)(\d+)$", base)
    if match:
        return f"{match.group(1)}{int(match.group(2)) + index}"
    return f"{base}-{index}"


def frames_push(ctx: zmq.Context, endpoints: list[str]) -> list[zmq.Socket]:
    """One PUSH per inference worker, so a camera's frames go to the worker that owns it."""
    sockets = []
    for endpoint in endpoints:
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, DEFAULTS.frames_hwm)
        sock.setsockopt(zmq.LINGER, DEFAULTS.linger_ms)
        sock.setsockopt(zmq.SNDTIMEO, DEFAULTS.send_timeout_ms)
        sock.connect(endpoint)
        sockets.append(sock)
    return sockets


def frames_pull(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, DEFAULTS.frames_hwm)
    sock.setsockopt(zmq.LINGER, DEFAULTS.linger_ms)
    _bind(sock, endpoint)
    return sock


def results_push(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, DEFAULTS.results_hwm)
    sock.setsockopt(zmq.LINGER, DEFAULTS.results_linger_ms)
    sock.setsockopt(zmq.SNDTIMEO, DEFAULTS.send_timeout_ms)
    sock.connect(endpoint)
    return sock


def results_pull(ctx: zmq.Context, endpoint: str) -> zmq.Socket:
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, DEFAULTS.results_hwm)
    sock.setsockopt(zmq.LINGER, DEFAULTS.linger_ms)
    _bind(sock, endpoint)
    return sock


def _bind(sock: zmq.Socket, endpoint: str) -> None:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise VidwatchError(f"cannot bind {endpoint}: {exc}; is another vidwatch running? "
                            f"Change the endpoint in the config") from exc
