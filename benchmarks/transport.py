"""ZeroMQ PUSH/PULL throughput for frame-sized messages, as a fraction of memcpy bandwidth.

Sender and receiver are separate processes (the sender is spawned, the receiver is this one),
over ``ipc://`` and ``tcp://127.0.0.1``. Payloads go zero-copy both ways: ``send(copy=False)``
and ``recv(copy=False)`` + ``np.frombuffer``. Modes:

- ``raw``:  a minimal 2-part ``[header, payload]`` message, the floor of the transport cost;
- ``wire``: the real path, ``pipeline.wire.encode_frames`` -> send -> receive -> ``decode_frames``
  (JSON header with per-camera fields, validation, read-only view of the buffer);
- ``copy``: ``raw`` with copying send/receive, to show what zero-copy saves.

Figures are payload bytes per second; ``*_memcpy_ratio`` divides by a numpy copy of the same
size measured in the same run (bar: >= 0.30 for 1 MB messages).
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import zmq

from benchmarks.common import machine_info, main, memcpy_bandwidth, ratio
from pipeline import wire
from pipeline.transport import DEFAULTS

BATCH_SHAPE = (16, 224, 224, 3)  # 16 cameras, one 224x224 RGB frame each
WARMUP_MESSAGES = 5
DRAM_BYTES = 256 << 20
BAR_1MB_RATIO = 0.30
NOTES = (
    "memcpy_ratio divides by a numpy copy of the same size (1 MB and 2.4 MB stay in L2/L3, so this "
    "yardstick is a cache-speed copy); dram_memcpy_ratio divides by a 256 MB copy. ipc/tcp need at "
    "least two kernel copies per message plus 4 busy threads (2 Python, 2 ZeroMQ I/O) on the cores."
)
RECV_TIMEOUT_MS = 10_000


@dataclass(frozen=True)
class Case:
    name: str
    shape: tuple[int, ...]
    dtype: str
    mode: str  # raw | wire | copy

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


CASES = (
    Case("1MB", (1 << 20,), "uint8", "raw"),
    Case("1MB", (1 << 20,), "uint8", "copy"),
    Case("batch16_u8", BATCH_SHAPE, "uint8", "raw"),
    Case("batch16_u8", BATCH_SHAPE, "uint8", "wire"),
    Case("batch16_f32", BATCH_SHAPE, "float32", "raw"),
)


def _encode(case: Case, payload: np.ndarray, seq: int) -> list[Any]:
    if case.mode == "wire":
        b = payload.shape[0]
        now = time.time()
        return wire.encode_frames([f"cam{i}" for i in range(b)], [seq] * b, [now] * b, [now] * b, payload)
    return [b'{"seq": %d}' % seq, payload]


def _socket(ctx: zmq.Context, kind: int) -> zmq.Socket:
    # The pipeline's queue depth; OS-default kernel buffers (4 MB SO_SNDBUF/RCVBUF measured slower).
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.SNDHWM if kind == zmq.PUSH else zmq.RCVHWM, DEFAULTS.frames_hwm)
    return sock


def _send(endpoint: str, case: Case, count: int) -> None:
    """Sender process: ``count`` messages of the same preallocated payload, blocking sends."""
    payload = np.random.default_rng(0).integers(0, 255, case.shape).astype(case.dtype)
    ctx = zmq.Context()
    sock = _socket(ctx, zmq.PUSH)
    sock.setsockopt(zmq.LINGER, -1)  # deliver everything before exiting
    sock.connect(endpoint)
    for seq in range(count):
        sock.send_multipart(_encode(case, payload, seq), copy=case.mode == "copy")
    sock.close()
    ctx.term()


def _decode(case: Case, parts: list[Any]) -> np.ndarray:
    if case.mode == "wire":
        return wire.decode_frames(parts).frames
    buf = parts[1].buffer if case.mode != "copy" else parts[1]
    return np.frombuffer(buf, dtype=case.dtype)


def measure(case: Case, transport: str, count: int) -> float:
    """Payload bytes/s from the first message after warm-up to the last one."""
    ctx = zmq.Context()
    sock = _socket(ctx, zmq.PULL)
    sock.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
    with tempfile.TemporaryDirectory() as tmp:
        sock.bind(f"ipc://{tmp}/bench.sock" if transport == "ipc" else "tcp://127.0.0.1:*")
        endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        sender = mp.get_context("spawn").Process(target=_send, args=(endpoint, case, count))
        sender.start()
        try:
            elapsed = _receive(sock, case, count)
        finally:
            sender.join(30)
            sock.close(linger=0)
            ctx.term()
    return (count - WARMUP_MESSAGES) * case.nbytes / elapsed


def _receive(sock: zmq.Socket, case: Case, count: int) -> float:
    start = 0.0
    for i in range(count):
        if i == WARMUP_MESSAGES:
            start = time.perf_counter()
        try:
            parts: list[Any] = (
                sock.recv_multipart(copy=True) if case.mode == "copy" else sock.recv_multipart(copy=False)
            )
        except zmq.Again:
            raise RuntimeError(f"no message {i} within {RECV_TIMEOUT_MS} ms: did the sender die?") from None
        tensor = _decode(case, parts)
        if tensor.nbytes != case.nbytes:
            raise RuntimeError(f"received {tensor.nbytes} bytes, sent {case.nbytes}")
    return time.perf_counter() - start


def _best_memcpy(nbytes: int) -> float:
    return memcpy_bandwidth(nbytes, repeats=10)


def _case_row(case: Case, transport: str, quick: bool) -> dict[str, Any]:
    """Best of a few runs, with the memcpy yardstick taken right before and after (the load of
    other processes on this machine changes by the second)."""
    budget = (512 if quick else 2048) << 20  # payload bytes per measurement
    count = WARMUP_MESSAGES + max(50, budget // case.nbytes)
    memcpy = _best_memcpy(case.nbytes)
    bps = max(measure(case, transport, count) for _ in range(2 if quick else 3))
    memcpy = max(memcpy, _best_memcpy(case.nbytes))
    return {
        "bytes_per_s": round(bps),
        "msgs_per_s": round(bps / case.nbytes, 1),
        "memcpy_bytes_per_s": round(memcpy),
        "memcpy_ratio": ratio(bps, memcpy),
        "messages": count,
    }


def run(quick: bool) -> dict[str, Any]:
    info = machine_info()
    results = {f"{c.name}_{c.mode}_{t}": _case_row(c, t, quick) for t in ("ipc", "tcp") for c in CASES}
    # A copy far larger than the caches: what "memory bandwidth" means for data that is not hot.
    dram = memcpy_bandwidth(DRAM_BYTES, repeats=5)
    for row in results.values():
        row["dram_memcpy_ratio"] = ratio(row["bytes_per_s"], dram)
    return {
        "machine": info,
        "quick": quick,
        "dram_memcpy_bytes_per_s": round(dram),
        "cases": results,
        "transport_memcpy_ratio": {t: results[f"1MB_raw_{t}"]["memcpy_ratio"] for t in ("ipc", "tcp")},
        "bar_1MB_ratio": BAR_1MB_RATIO,
        "notes": NOTES,
    }


if __name__ == "__main__":
    main(run)
