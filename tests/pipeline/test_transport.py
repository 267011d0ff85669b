"""Worker endpoints: per-worker hosts (``{index}``, Kubernetes pods) and a bind address apart
from the address peers connect to, on real ZeroMQ sockets."""

from __future__ import annotations

import zmq

from pipeline.config import parse_config
from pipeline.transport import DEFAULTS, frames_pull, frames_push, results_pull, worker_endpoint
from tests.conftest import free_port


def test_worker_endpoints() -> None:
    assert worker_endpoint("tcp://127.0.0.1:5550", 2) == "tcp://127.0.0.1:5552"
    assert worker_endpoint("ipc:///tmp/vw", 1) == "ipc:///tmp/vw-1"
    assert worker_endpoint("tcp://vidwatch-infer-{index}.vidwatch-infer:5550", 1) == \
        "tcp://vidwatch-infer-1.vidwatch-infer:5551"
    assert worker_endpoint("tcp://*:5550", 1) == "tcp://*:5551"


def test_a_worker_bound_on_all_interfaces_gets_frames_sent_to_its_endpoint() -> None:
    base = free_port()
    config = parse_config(f"""
models: {{m: {{path: x}}}}
inference: {{workers: 2, endpoint: "tcp://127.0.0.1:{base}", bind: "tcp://*:{base}"}}
sink: {{endpoint: "tcp://127.0.0.1:5560", bind: "tcp://*:5560"}}
transport: {{insecure: true}}  # binding on all interfaces needs keys or this opt-out
cameras: [{{id: c, source: x.mp4, models: [{{model: m}}]}}]
""")
    assert config.inference.bind is not None
    ctx = zmq.Context.instance()
    pull = frames_pull(ctx, worker_endpoint(config.inference.bind, 1))
    push = frames_push(ctx, [worker_endpoint(config.inference.endpoint, 1)])[0]
    try:
        push.send(b"frame")
        assert pull.poll(5000), "nothing arrived at worker 1's bind address"
        assert pull.recv() == b"frame"
    finally:
        push.close(linger=0)
        pull.close(linger=0)


def test_an_oversized_part_is_dropped_by_zeromq_and_the_receiver_keeps_going() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    ctx = zmq.Context.instance()
    pull = results_pull(ctx, endpoint)
    push = ctx.socket(zmq.PUSH)
    push.connect(endpoint)
    push.send(b"x" * (DEFAULTS.results_max_part_bytes + 1))
    push.send(b"after")
    got = pull.recv() if pull.poll(10_000) else None
    push.close(0)
    pull.close(0)
    assert got == b"after"  # the big one never reached the application
