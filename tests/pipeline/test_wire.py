import json

import numpy as np
import pytest
import zmq

from pipeline.errors import WireError
from pipeline.wire import decode_frames, decode_results, encode_frames, encode_results


def _frames(b: int = 3) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (b, 8, 6, 3), dtype=np.uint8)


def test_frames_round_trip_over_a_real_socket_without_copies() -> None:
    ctx = zmq.Context.instance()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push.connect(f"tcp://127.0.0.1:{port}")
    frames = _frames()
    push.send_multipart(encode_frames(["a", "b", "a"], [1, 7, 2], [1.0, 2.0, 3.0], [0.1, 0.2, 0.3], frames,
                                      {"a": {"captured": 10}}), copy=False)
    parts = pull.recv_multipart(copy=False)
    batch = decode_frames(parts)
    assert batch.cameras == ["a", "b", "a"] and batch.seqs == [1, 7, 2]
    np.testing.assert_array_equal(batch.frames, frames)
    assert not batch.frames.flags.owndata  # a view of the received buffer
    assert batch.stats["a"]["captured"] == 10
    push.close(0)
    pull.close(0)


GOOD = encode_frames(["a"], [1], [1.0], [0.0], _frames(1))


@pytest.mark.parametrize("parts, reason", [
    ([b"\x00\xff garbage"], "needs at least 2 parts"),
    ([b"not json", b""], "not JSON"),
    ([b"[1, 2]", b""], "not a JSON object"),
    ([GOOD[0].replace(b'"v": 1', b'"v": 9'), GOOD[1]], "wire version 9"),
    ([GOOD[0], b"short"], "payload has 5 bytes"),
    ([GOOD[0].replace(b'"uint8"', b'"int64"'), GOOD[1]], "dtype"),
    ([GOOD[0].replace(b'"seqs": [1]', b'"seqs": [1, 2]'), GOOD[1]], "seqs"),
    ([GOOD[0].replace(b'"kind": "frames"', b'"kind": "results"'), GOOD[1]], "expected a 'frames' message"),
])
def test_bad_frame_messages_raise_wire_error(parts: list, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode_frames(parts)


def test_results_round_trip_and_validation() -> None:
    record = {"camera": "a", "package": "p", "scores": [0.1], "labels": ["x"], "t_capture": 1.0, "seq": 3}
    parts = encode_results([record], [b"jpeg"])
    results, snaps = decode_results(parts)
    assert results == [record] and snaps == [b"jpeg"]
    with pytest.raises(WireError, match="snapshots"):
        decode_results(parts[:1])
    with pytest.raises(WireError, match="without 'seq'"):
        decode_results(encode_results([{k: v for k, v in record.items() if k != "seq"}], []))


def test_mutated_messages_only_ever_raise_wire_error() -> None:
    """Flip bytes of a valid header and payload many times: decoding fails cleanly or succeeds."""
    rng = np.random.default_rng(1)
    header, payload = bytes(GOOD[0]), bytes(GOOD[1])
    for _ in range(2000):
        h = bytearray(header)
        for pos in rng.integers(0, len(h), rng.integers(1, 4)):
            h[pos] = int(rng.integers(0, 256))
        parts = [bytes(h), payload[: int(rng.integers(0, len(payload) + 1))]]
        try:
            decode_frames(parts)
        except WireError:
            pass
    for header_obj in ({"v": 1, "kind": "frames"}, {"v": 1, "kind": "frames", "cameras": "abc"},
                       {"v": 1, "kind": "frames", "cameras": [1]}, {"v": 1, "kind": "frames", "cameras": ["a"],
                                                                     "stats": [], "seqs": [1]}):
        with pytest.raises(WireError):
            decode_frames([json.dumps(header_obj).encode(), payload])


def test_gap_flags_travel_and_are_optional() -> None:
    parts = encode_frames(["a", "b"], [1, 9], [1.0, 2.0], [0.1, 0.2], _frames(2), gaps=[False, True])
    assert decode_frames(parts).gaps == [False, True]
    assert decode_frames(GOOD).gaps is None  # older capture nodes send none: gaps show as seq jumps
    bad = json.loads(bytes(parts[0]))
    bad["gaps"] = [1, 0]
    with pytest.raises(WireError, match="'gaps' must be a list of 2 booleans"):
        decode_frames([json.dumps(bad).encode(), parts[1]])


# -- regressions found by the hypothesis fuzz tests (test_wire_fuzz.py) -----------------------
def _frames_header(**fields: object) -> bytes:
    header = json.loads(encode_frames(["a"], [0], [0.0], [0.0], np.zeros((1, 2, 2, 3), np.uint8))[0])
    return json.dumps({**header, **fields}).encode()


@pytest.mark.parametrize("shape", [[False], [True, 2, 2, 3], [2**32, 2**32, 1, 3], [2**62, 4, 1, 3]])
def test_declared_shapes_that_overflow_or_are_bools_are_wire_errors(shape: list[object]) -> None:
    """Found: shape [False] with an empty payload raised TypeError from reshape; a shape whose
    product overflows int64 in np.prod (2**32 * 2**32 -> 0) passed the size check."""
    with pytest.raises(WireError, match="shape must be|larger than"):
        decode_frames([_frames_header(shape=shape), b""])


def test_a_declared_tensor_beyond_the_cap_is_refused_before_looking_at_the_payload() -> None:
    with pytest.raises(WireError, match="larger than"):
        decode_frames([_frames_header(shape=[64, 4096, 4096, 3]), b""])


@pytest.mark.parametrize("raw", [b'{"v": 1, "kind": "frames", "cameras": ' + b"[" * 1985 + b"1",
                                 b'{"v": 1, "n": ' + b"1" * 5000 + b"}"])
def test_deeply_nested_headers_and_huge_integers_are_wire_errors(raw: bytes) -> None:
    """Found: 1985 nested lists raised RecursionError from json.loads; a 5000-digit integer raised
    ValueError (Python's int digit limit), neither a JSONDecodeError."""
    with pytest.raises(WireError, match="nested too deeply|not JSON"):
        decode_frames([raw, b""])
    with pytest.raises(WireError):
        decode_results([raw])


@pytest.mark.parametrize("field", ["seqs", "t_capture"])
def test_infinite_or_huge_numbers_are_wire_errors(field: str) -> None:
    """Found: seqs [Infinity] raised OverflowError from int()."""
    value = [float("inf")] if field == "seqs" else [10 ** 400]
    with pytest.raises(WireError, match="bad header values"):
        decode_frames([_frames_header(**{field: value}), bytes(12)])


def test_an_empty_tensor_with_a_dimension_beyond_the_address_space_is_a_wire_error() -> None:
    """Found: shape [0, 2**61] float32 has 0 bytes, passed the size check, and reshape raised
    ValueError ("array is too big")."""
    with pytest.raises(WireError, match="shape must be"):
        decode_frames([_frames_header(shape=[0, 2**61], dtype="float32"), b""])
