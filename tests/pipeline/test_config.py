from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.config import load_config, parse_config
from pipeline.errors import ConfigError
from tests.conftest import ROOT

VALID = """
models:
  a: {path: build/models/demo-anomaly}
cameras:
  - id: c1
    source: x.mp4
    models: [{model: a}]
"""


@pytest.mark.parametrize("name", ["demo.yaml", "full.yaml"])
def test_shipped_examples_validate(name: str) -> None:
    config = load_config(ROOT / "deploy" / "examples" / name)
    assert config.cameras


def test_defaults_and_frozen() -> None:
    config = parse_config(VALID)
    assert config.cameras[0].fps == 5.0
    assert config.inference.max_batch == 16
    with pytest.raises(ValidationError, match="frozen"):
        config.cameras[0].fps = 3  # type: ignore[misc]


def test_error_names_path_line_value_and_allowed() -> None:
    text = VALID + """  - id: c2
    source: y.mp4
    fps: -5
    models: [{model: a}]
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text, "cams.yaml")
    problem = err.value.problems[0]
    assert problem == "cameras[1].fps (line 10): must be > 0, got -5"


def test_unknown_field_names_its_line() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(VALID.replace("source: x.mp4", "source: x.mp4\n    fsp: 5"))
    assert err.value.problems == ["cameras[0].fsp (line 7): unknown field; check the spelling "
                                  "(see deploy/examples/full.yaml)"]


def test_unknown_model_reference_names_its_line() -> None:
    text = VALID + """  - id: c2
    source: 0
    models: [{model: nope}]
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert err.value.problems == ["cameras[1].models[0].model (line 10): 'nope' is not defined under models: "
                                  "(defined: a)"]


def test_cross_checks() -> None:
    text = VALID + """rules:
  - {name: r, model: a, threshold: 0.5, clear_threshold: 0.9, cameras: [ghost]}
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    problems = "\n".join(err.value.problems)
    assert "clear_threshold (0.9) must be <= threshold (0.5)" in problems


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        parse_config("cameras: [")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_bad_endpoint() -> None:
    with pytest.raises(ConfigError, match=r"inference.endpoint .*ZeroMQ endpoint"):
        parse_config(VALID + "inference: {endpoint: 'localhost:5550'}\n")


def test_evidence_defaults_and_a_ring_too_short_for_a_clip() -> None:
    config = parse_config(VALID + "state_dir: /srv/vw\n")
    assert config.evidence_dir() == Path("/srv/vw/evidence")
    assert config.evidence.ring_seconds() == 60 + 5 + 5 + 30
    with pytest.raises(ConfigError) as err:
        parse_config(VALID + "evidence: {max_clip_s: 60, ring_s: 20}\n")
    assert "ring_s (20.0) must be >= max_clip_s + pre_s (65.0)" in err.value.problems[0]
    with pytest.raises(ConfigError) as err:
        parse_config(VALID + "evidence: {endpoint: 'localhost:5570'}\n")
    assert err.value.problems[0].startswith("evidence.endpoint (line 8): must be a ZeroMQ endpoint")


def test_motion_gate_defaults_then_camera_overrides_field_by_field() -> None:
    text = VALID.replace("cameras:", """motion_gate: {enabled: true, hold_s: 3}
cameras:""") + """  - id: c2
    source: y.mp4
    models: [{model: a}]
    motion_gate: {enabled: false, masks: [[[0, 0], [0.5, 0], [0.5, 0.2]]]}
"""
    config = parse_config(text)
    first, second = config.cameras[0].motion_gate, config.cameras[1].motion_gate
    assert first.enabled and first.hold_s == 3 and not first.masks
    assert not second.enabled and second.hold_s == 3 and len(second.masks) == 1
    assert not parse_config(VALID).cameras[0].motion_gate.enabled  # off unless asked for


def test_bad_motion_gate_defaults_are_reported_once_with_their_line() -> None:
    text = VALID.replace("cameras:", "motion_gate: {hold_s: -1}\ncameras:")
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert [p.split(":")[0] for p in err.value.problems] == ["motion_gate.hold_s (line 4)"]


# -- regressions found by the hypothesis fuzz tests (test_config_fuzz.py) ---------------------
def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    """Found: a file holding b'\\x80' raised UnicodeDecodeError out of load_config."""
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\x80")
    with pytest.raises(ConfigError, match="not UTF-8 text: byte 0x80 at offset 0"):
        load_config(path)


@pytest.mark.parametrize("text", ["models: " + "[" * 1000 + "1",
                                  "models: " + "{a: " * 1000 + "1",
                                  "models:\n" + "".join("  " * i + "- \n" for i in range(1200))])
def test_deeply_nested_yaml_is_a_config_error(text: str) -> None:
    """Found: 1000 nested [ or {a: raised RecursionError out of parse_config (and 5000 took 2 s
    first: PyYAML's scanner is quadratic in flow depth, so flow nesting is bounded before it)."""
    with pytest.raises(ConfigError, match="nested"):
        parse_config(text)


def test_an_alias_bomb_is_refused_before_it_is_built() -> None:
    lines = ["l0: &l0 [x, x]", *(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 20))]
    with pytest.raises(ConfigError, match="expands to more than"):
        parse_config("\n".join([*lines, "models: *l19"]))


def test_anchors_and_merge_keys_still_work() -> None:
    config = parse_config("""
models: {a: {path: x}}
cameras:
  - &cam {id: one, source: a.mp4, fps: 4, models: [{model: a}]}
  - {<<: *cam, id: two, fps: 2}
""")
    assert [(c.id, c.fps, c.source) for c in config.cameras] == [("one", 4.0, "a.mp4"), ("two", 2.0, "a.mp4")]


@pytest.mark.parametrize("text", ["\x1f", "\x00", "models: {a: {path: \x07}}"])
def test_control_characters_are_a_config_error(text: str) -> None:
    """Found (after composing once): PyYAML's reader refuses control characters in the loader's
    constructor, which ran outside the try; ReaderError escaped parse_config."""
    with pytest.raises(ConfigError, match="not valid YAML: unacceptable character"):
        parse_config(text)
