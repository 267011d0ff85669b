"""The config loader under hypothesis: random text and bytes, random YAML documents shaped like a
config, deeply nested YAML, alias bombs. Only ConfigError comes out, nothing crashes, and no input
makes the loader allocate more than a fixed cap. Seed policy: tests/pipeline/fuzzing.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from pipeline.config import load_config, parse_config
from pipeline.errors import ConfigError
from tests.pipeline.fuzzing import examples, memory_cap

pytestmark = pytest.mark.slow  # ~30 s of CPU per file; part of the >= 10,000 examples CI runs

CAP = 64 << 20
VALID = """
models: {a: {path: build/models/demo-anomaly}}
inference: {endpoint: "tcp://127.0.0.1:5550"}
cameras:
  - {id: door, source: x.mp4, fps: 5, models: [{model: a, calibrate_seconds: 3}]}
rules: [{name: r, model: a, threshold: 1.5}]
outputs: [{type: jsonl, path: var/a.jsonl}]
metrics: {host: 127.0.0.1, port: 9108}
"""
FIELDS = ["models", "cameras", "rules", "outputs", "metrics", "inference", "sink", "capture", "engine", "transport",
          "version", "name", "state_dir", "id", "source", "fps", "model", "threshold", "type", "path", "endpoint",
          "port", "host", "resize", "workers", "basic_auth", "tls", "server_key", "insecure", "env", "file"]

leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=12),
                 st.sampled_from(["tcp://10.0.0.1:1", "ipc:///x", "rtsp://u:p@h/s", "-1", "1e999", ".inf"]))
node = st.recursive(leaf, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=4), inner, max_size=5),
                    max_leaves=16)


def _parse(text: str) -> None:
    with memory_cap(CAP):
        try:
            parse_config(text)
        except ConfigError:
            pass


@examples(1000)
@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    _parse(text)


@examples(500)
@given(st.binary(max_size=300))
def test_random_bytes_as_a_file(tmp_path_factory: Any, data: bytes) -> None:
    path = Path(tmp_path_factory.mktemp("cfg")) / "c.yaml"
    path.write_bytes(data)
    with memory_cap(CAP):
        try:
            load_config(path)
        except ConfigError:
            pass


@examples(600)
@given(st.dictionaries(st.sampled_from(FIELDS), node, max_size=8))
def test_random_documents_shaped_like_a_config(document: dict[str, Any]) -> None:
    _parse(yaml.safe_dump(document, allow_unicode=True))


@examples(600)
@given(path=st.lists(st.sampled_from(FIELDS) | st.integers(0, 3), min_size=1, max_size=4), value=node)
def test_one_field_of_a_valid_config_replaced(path: list[Any], value: Any) -> None:
    document = yaml.safe_load(VALID)
    target = document
    for key in path[:-1]:
        nxt = target[key] if isinstance(target, dict) and key in target else (
            target[key] if isinstance(target, list) and isinstance(key, int) and key < len(target) else None)
        if not isinstance(nxt, dict | list):
            break
        target = nxt
    if isinstance(target, dict):
        target[path[-1]] = value
    elif isinstance(target, list) and isinstance(path[-1], int) and path[-1] < len(target):
        target[path[-1]] = value
    _parse(yaml.safe_dump(document, allow_unicode=True))


@examples(200)
@given(depth=st.integers(1, 50_000), opener=st.sampled_from(["[", "{a: ", "- ", "a:\n ", "\n- "]),
       where=st.sampled_from(FIELDS[:6]))
def test_deeply_nested_yaml(depth: int, opener: str, where: str) -> None:
    # One-line forms go as deep as asked (the loader bounds them before scanning); block forms
    # grow as depth squared in characters, so they stay shallow here (1200 levels: test_config.py).
    body = (opener * depth if opener in ("[", "{a: ", "- ") else
            "".join(opener * i + "\n" for i in range(min(depth, 40))))
    _parse(f"{where}: {body}1")


@examples(200)
@given(levels=st.integers(1, 30), width=st.integers(2, 10), where=st.sampled_from(FIELDS[:6] + ["cameras_item"]),
       merge=st.booleans())
def test_alias_bombs(levels: int, width: int, where: str, merge: bool) -> None:
    """Billion laughs: each level repeats the previous one ``width`` times by alias (or by merge key)."""
    lines = ["l0: &l0 {a: [x, x]}" if merge else "l0: &l0 [x, x]"]
    for i in range(1, levels):
        refs = ", ".join([f"*l{i - 1}"] * width)
        lines.append(f"l{i}: &l{i} {{<<: [{refs}], k{i}: [{refs}]}}" if merge else f"l{i}: &l{i} [{refs}]")
    if where == "cameras_item":
        lines.append(f"cameras: [{{id: a, source: x, models: *l{levels - 1}}}]")
    else:
        lines.append(f"{where}: *l{levels - 1}")
    _parse("\n".join(lines))
