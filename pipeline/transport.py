"""ZeroMQ sockets for the stages, with every socket option named in one place.

Bounded queues everywhere: a slow consumer makes the producer drop (and count), never block
a camera and never grow memory. With transport keys configured every socket is CurveZMQ
(``pipeline.transport_security``): binding sockets are servers that accept only authorized
clients, connecting sockets are clients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq

from pipeline import peer_watch
from pipeline.errors import VidwatchError
from pipeline.wire import MAX_TENSOR_BYTES

if TYPE_CHECKING:
    from pipeline.transport_security import RejectCallback, TransportSecurity


@dataclass(frozen=True)
class SocketDefaults:
    frames_hwm: int = 4  # messages (each a batch of frames) queued per peer before send blocks
    results_hwm: int = 1000  # results are small; keep many rather than lose an alert
    linger_ms: int = 0  # at shutdown drop unsent frames; results sockets override below
    results_linger_ms: int = 2000  # give the sink time to receive the last results
    send_timeout_ms: int = 200  # a send that cannot proceed this long is a drop
    poll_ms: int = 100  # receive loops wake this often to check for shutdown
    # Largest message part a receiver takes; a peer sending more is disconnected before ZeroMQ
    # allocates it. Frames: the decoder's tensor cap; results: JSON and JPEG snapshots.
    frames_max_part_bytes: int = MAX_TENSOR_BYTES
    results_max_part_bytes: int = 64 << 20


DEFAULTS = SocketDefaults()


def worker_endpoint(base: str, index: int) -> str:
    """Worker ``index``'s frame endpoint: tcp port + index, or ipc path suffix -index; ``{index}``
    in the host is replaced by the index (a host per worker: ``vidwatch-infer-{index}.vidwatch-infer``)."""
    base = base.replace("{index}", str(index))
    match = re.match(r"^(tcp://[^:]+:)(\d+)$", base)
    if match:
        return f"{match.group(1)}{int(match.group(2)) + index}"
    return f"{base}-{index}"


def frames_push(ctx: zmq.Context, endpoints: list[str],
                security: TransportSecurity | None = None) -> list[zmq.Socket]:
    """One PUSH per inference worker, so a camera's frames go to the worker that owns it."""
    sockets = []
    for endpoint in endpoints:
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, DEFAULTS.frames_hwm)
        sock.setsockopt(zmq.LINGER, DEFAULTS.linger_ms)
        sock.setsockopt(zmq.SNDTIMEO, DEFAULTS.send_timeout_ms)
        peer_watch.prepare(sock)  # queue nothing for a worker that is down (counted as worker_down)
        _connect(sock, endpoint, security)
        sockets.append(sock)
    return sockets


def frames_pull(ctx: zmq.Context, endpoint: str, security: TransportSecurity | None = None,
                on_reject: RejectCallback | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, DEFAULTS.frames_hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, DEFAULTS.frames_max_part_bytes)
    sock.setsockopt(zmq.LINGER, DEFAULTS.linger_ms)
    _bind(sock, endpoint, security, on_reject)
    return sock


def results_push(ctx: zmq.Context, endpoint: str, security: TransportSecurity | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, DEFAULTS.results_hwm)
    sock.setsockopt(zmq.LINGER, DEFAULTS.results_linger_ms)
    sock.setsockopt(zmq.SNDTIMEO, DEFAULTS.send_timeout_ms)
    _connect(sock, endpoint, security)
    return sock


def results_pull(ctx: zmq.Context, endpoint: str, security: TransportSecurity | None = None,
                 on_reject: RejectCallback | None = None) -> zmq.Socket:
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, DEFAULTS.results_hwm)
    sock.setsockopt(zmq.MAXMSGSIZE, DEFAULTS.results_max_part_bytes)
    sock.setsockopt(zmq.LINGER, DEFAULTS.linger_ms)
    _bind(sock, endpoint, security, on_reject)
    return sock


def _connect(sock: zmq.Socket, endpoint: str, security: TransportSecurity | None) -> None:
    if security is not None:
        security.connect_as_client(sock)
    sock.connect(endpoint)


def _bind(sock: zmq.Socket, endpoint: str, security: TransportSecurity | None = None,
          on_reject: RejectCallback | None = None) -> None:
    if security is not None:
        security.serve(sock, endpoint, on_reject)  # the endpoint names the ZAP domain: one per socket
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise VidwatchError(f"cannot bind {endpoint}: {exc}; is another vidwatch running? "
                            f"Change the endpoint in the config") from exc
