"""The wire protocol between stages: ZeroMQ multipart ``[header, payload...]``.

``header`` is UTF-8 JSON, small and versioned. Frame batches carry one uint8 tensor
``[B, H, W, 3]`` (several cameras' frames in one message) with per-frame camera, seq and
timestamps; results carry per-window scores and, when worth it, a JPEG snapshot. The tensor is
sent and received without copies (pyzmq ``copy=False`` + ``np.frombuffer``).

Decoding validates everything and raises :class:`WireError`; receivers count and drop such
messages and never crash on them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.errors import WireError

VERSION = 1
KIND_FRAMES = "frames"
KIND_RESULTS = "results"
_DTYPES = {"uint8": np.uint8, "float32": np.float32, "float16": np.float16}
MAX_HEADER_BYTES = 1 << 20
MAX_TENSOR_BYTES = 1 << 28  # 256 MiB: a batch of 16 full-HD frames is 100 MB; frames travel at model size
MAX_DIMS = 8


@dataclass(frozen=True)
class FrameBatch:
    cameras: list[str]
    seqs: list[int]
    t_capture: list[float]
    t_stream: list[float]
    frames: np.ndarray  # [B, H, W, 3] uint8, read-only view of the message buffer
    stats: dict[str, dict[str, float]]  # per camera: captured / dropped counters, camera fps
    gaps: list[bool] | None = None  # per frame: capture flags a break before it (optional in the header)


def encode_frames(cameras: Sequence[str], seqs: Sequence[int], t_capture: Sequence[float],
                  t_stream: Sequence[float], frames: np.ndarray,
                  stats: dict[str, dict[str, float]] | None = None, gaps: Sequence[bool] | None = None) -> list[Any]:
    """Message parts for a frame batch; the tensor goes as a buffer, not a copy. ``gaps`` (optional)
    flags frames that follow a break in their camera's frames (reopened stream, looped file); a
    jump in ``seqs`` marks one too (frames held back by the motion gate or dropped)."""
    if frames.ndim != 4 or frames.shape[0] != len(cameras):
        raise ValueError(f"frames must be [B,H,W,C] with B={len(cameras)}, got {frames.shape}")
    header = {"v": VERSION, "kind": KIND_FRAMES, "cameras": list(cameras), "seqs": [int(s) for s in seqs],
              "t_capture": [float(t) for t in t_capture], "t_stream": [float(t) for t in t_stream],
              "dtype": frames.dtype.name, "shape": list(frames.shape), "stats": stats or {}}
    if gaps is not None:
        if len(gaps) != len(cameras):
            raise ValueError(f"gaps must have one flag per frame ({len(cameras)}), got {len(gaps)}")
        header["gaps"] = [bool(g) for g in gaps]
    payload: Any = np.ascontiguousarray(frames)  # numpy arrays are buffers; pyzmq sends them without a copy
    return [json.dumps(header).encode(), memoryview(payload).cast("B")]


def decode_frames(parts: Sequence[Any]) -> FrameBatch:
    header = _header(parts, KIND_FRAMES, 2)
    cameras = header.get("cameras")
    if not isinstance(cameras, list) or not cameras or not all(isinstance(c, str) for c in cameras):
        raise WireError("header field 'cameras' must be a non-empty list of camera ids")
    if not isinstance(header.get("stats", {}), dict):
        raise WireError("header field 'stats' must be an object")
    b = len(cameras)
    for key in ("seqs", "t_capture", "t_stream"):
        if not isinstance(header.get(key), list) or len(header[key]) != b:
            raise WireError(f"header field {key!r} must be a list of {b} values")
    gaps = header.get("gaps")
    if gaps is not None and not (isinstance(gaps, list) and len(gaps) == b and all(isinstance(g, bool) for g in gaps)):
        raise WireError(f"header field 'gaps' must be a list of {b} booleans")
    frames = _tensor(header, parts[1])
    if frames.ndim != 4 or frames.shape[0] != b or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise WireError(f"frames must be uint8 [{b},H,W,3], got {frames.dtype} {list(frames.shape)}")
    try:
        return FrameBatch([str(c) for c in header["cameras"]], [int(s) for s in header["seqs"]],
                          [float(t) for t in header["t_capture"]], [float(t) for t in header["t_stream"]],
                          frames, dict(header.get("stats") or {}), gaps)
    except (TypeError, ValueError, OverflowError) as exc:
        raise WireError(f"bad header values: {exc}") from exc


def encode_results(results: list[dict[str, Any]], snapshots: list[bytes]) -> list[Any]:
    """Results are JSON dicts; result ``i`` may point at ``snapshots[k]`` via ``snapshot_part``."""
    header = {"v": VERSION, "kind": KIND_RESULTS, "results": results, "n_snapshots": len(snapshots)}
    return [json.dumps(header).encode(), *snapshots]


def decode_results(parts: Sequence[Any]) -> tuple[list[dict[str, Any]], list[bytes]]:
    header = _header(parts, KIND_RESULTS, 1)
    results = header.get("results")
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise WireError("header field 'results' must be a list of objects")
    if header.get("n_snapshots") != len(parts) - 1:
        raise WireError(f"header says {header.get('n_snapshots')} snapshots, message has {len(parts) - 1}")
    for r in results:
        for key in ("camera", "package", "scores", "labels", "t_capture", "seq"):
            if key not in r:
                raise WireError(f"result without {key!r}")
    return results, [bytes(_buffer(p)) for p in parts[1:]]


def _buffer(part: Any) -> memoryview:
    return memoryview(part.buffer if hasattr(part, "buffer") else part)


def _header(parts: Sequence[Any], kind: str, min_parts: int) -> dict[str, Any]:
    if len(parts) < min_parts:
        raise WireError(f"{kind} message needs at least {min_parts} parts, got {len(parts)}")
    raw = _buffer(parts[0])
    if raw.nbytes > MAX_HEADER_BYTES:
        raise WireError(f"header of {raw.nbytes} bytes is larger than {MAX_HEADER_BYTES}")
    try:
        header = json.loads(bytes(raw))
    except RecursionError:
        raise WireError("header is nested too deeply") from None
    except ValueError as exc:  # not JSON, not UTF-8, or an integer beyond Python's 4300-digit limit
        raise WireError(f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    if header.get("v") != VERSION:
        raise WireError(f"wire version {header.get('v')!r}, this build speaks {VERSION}")
    if header.get("kind") != kind:
        raise WireError(f"expected a {kind!r} message, got {header.get('kind')!r}")
    if not isinstance(header.get("cameras", []), list):
        raise WireError("header field 'cameras' must be a list")
    return header


def _tensor(header: dict[str, Any], part: Any) -> np.ndarray:
    dtype = _DTYPES.get(str(header.get("dtype")))
    shape = header.get("shape")
    if dtype is None:
        raise WireError(f"dtype {header.get('dtype')!r} is not one of {sorted(_DTYPES)}")
    # type() rather than isinstance(): JSON true/false are bools, which are ints to Python.
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(type(d) is int and 0 <= d <= MAX_TENSOR_BYTES for d in shape)):
        raise WireError(f"shape must be a list of at most {MAX_DIMS} ints in [0, {MAX_TENSOR_BYTES}], "
                        f"got {shape!r:.200}")
    expected = math.prod(shape) * np.dtype(dtype).itemsize  # Python ints: no overflow, unlike np.prod
    if expected > MAX_TENSOR_BYTES:
        raise WireError(f"declared tensor of {expected} bytes is larger than {MAX_TENSOR_BYTES}")
    buf = _buffer(part)
    if buf.nbytes != expected:
        raise WireError(f"payload has {buf.nbytes} bytes, shape {shape} {np.dtype(dtype).name} needs {expected}")
    return np.frombuffer(buf, dtype=dtype).reshape(shape)
