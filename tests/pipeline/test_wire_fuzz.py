"""The wire decoder under hypothesis: random bytes, truncated and mutated messages, huge declared
shapes, wrong dtypes, non-UTF-8 and deeply nested headers. Only WireError comes out, nothing
crashes, and no input makes the decoder allocate more than a fixed cap (it never copies a
payload and refuses a declared tensor before looking at it). Seed policy: tests/pipeline/fuzzing.py."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import WireError
from pipeline.wire import MAX_HEADER_BYTES, decode_frames, decode_results, encode_frames, encode_results
from tests.pipeline.fuzzing import examples, memory_cap

pytestmark = pytest.mark.slow  # ~30 s of CPU per file; part of the >= 10,000 examples CI runs

# A header is at most MAX_HEADER_BYTES of JSON; parsed, that is a few times as much in objects.
CAP = 48 * MAX_HEADER_BYTES

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                      st.text(max_size=8))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
dims = st.one_of(st.integers(0, 8), st.integers(0, 2**64), st.sampled_from([-1, 2**31, 2**63 - 1, 2**63, 2**100]),
                 json_leaf)


def _decode(decoder: Any, parts: list[Any]) -> None:
    with memory_cap(CAP):
        try:
            decoder(parts)
        except WireError:
            pass


def _valid_frames(b: int, h: int, w: int) -> list[Any]:
    frames = np.zeros((b, h, w, 3), np.uint8)
    return encode_frames([f"c{i}" for i in range(b)], list(range(b)), [0.0] * b, [0.0] * b, frames,
                         {"c0": {"captured": 1.0}})


@examples(2000)
@given(st.lists(st.binary(max_size=64), min_size=0, max_size=4))
def test_random_bytes(parts: list[bytes]) -> None:
    _decode(decode_frames, parts)
    _decode(decode_results, parts)


@examples(2000)
@given(b=st.integers(1, 3), h=st.integers(1, 6), w=st.integers(1, 6), field=st.sampled_from(
    ["v", "kind", "cameras", "seqs", "t_capture", "t_stream", "dtype", "shape", "stats", "extra"]),
    value=st.one_of(json_value, st.lists(dims, max_size=5), st.sampled_from(["uint8", "float32", "int64", "U4"])),
    cut=st.one_of(st.none(), st.integers(0, 200)), drop_payload=st.booleans())
def test_mutated_frame_headers(b: int, h: int, w: int, field: str, value: Any, cut: int | None,
                               drop_payload: bool) -> None:
    """A valid message with one header field replaced, the payload truncated or missing."""
    header_raw, payload = _valid_frames(b, h, w)
    header = json.loads(header_raw)
    header[field] = value
    body = bytes(payload)[:cut] if cut is not None else bytes(payload)
    _decode(decode_frames, [json.dumps(header).encode()] if drop_payload else [json.dumps(header).encode(), body])


@examples(1500)
@given(shape=st.lists(dims, min_size=0, max_size=6), dtype=st.sampled_from(["uint8", "float32", "float16", "bool"]),
       payload=st.binary(max_size=256))
def test_huge_or_odd_declared_shapes(shape: list[Any], dtype: str, payload: bytes) -> None:
    header = {"v": 1, "kind": "frames", "cameras": ["a"], "seqs": [0], "t_capture": [0.0], "t_stream": [0.0],
              "dtype": dtype, "shape": shape, "stats": {}}
    _decode(decode_frames, [json.dumps(header).encode(), payload])


@examples(1000)
@given(results=st.lists(st.dictionaries(st.sampled_from(
    ["camera", "package", "scores", "labels", "t_capture", "seq", "snapshot_part", "status", "stats"]), json_value,
    max_size=9), max_size=3), n_snapshots=st.one_of(st.integers(-1, 3), json_leaf),
    snapshots=st.lists(st.binary(max_size=16), max_size=3))
def test_mutated_results(results: list[dict[str, Any]], n_snapshots: Any, snapshots: list[bytes]) -> None:
    header_raw, *_ = encode_results(results, snapshots)
    header = json.loads(header_raw)
    header["n_snapshots"] = n_snapshots
    _decode(decode_results, [json.dumps(header).encode(), *snapshots])


@examples(500)
@given(depth=st.integers(1, 200_000), opener=st.sampled_from(["[", '{"a":']),
       encoding=st.sampled_from(["utf-8", "utf-16", "latin-1", "utf-32"]), junk=st.binary(max_size=8))
def test_deep_nesting_and_other_encodings(depth: int, opener: str, encoding: str, junk: bytes) -> None:
    text = '{"v": 1, "kind": "frames", "cameras": ' + opener * depth + "1"
    raw = text.encode(encoding, errors="replace")[:MAX_HEADER_BYTES] + junk
    _decode(decode_frames, [raw, b""])
    _decode(decode_results, [raw])


def test_huge_header_is_refused_before_parsing() -> None:
    raw = b'{"v": 1, "pad": "' + b"x" * MAX_HEADER_BYTES + b'"}'
    with memory_cap(4 * MAX_HEADER_BYTES):  # the check happens before any JSON objects are made
        try:
            decode_frames([raw, b""])
        except WireError as exc:
            assert "larger than" in str(exc)
        else:
            raise AssertionError("an oversized header was accepted")
