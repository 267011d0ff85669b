"""Secrets: ${ENV} / ${file:} references in the config, and credentials masked everywhere vidwatch
writes: logs, status lines, /metrics, alert records, snapshots, `vidwatch check`, config errors."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.config import parse_config
from pipeline.errors import ConfigError
from pipeline.secrets import MASK, RedactingFilter, expand, redact, redact_url, remember
from tests.conftest import PEOPLE_CLIP, ROOT, free_port, scrape_metrics
from tests.support.rtsp import rtsp_available, rtsp_server

PASSWORD = "Zq9-hunter2-xK"  # what the test camera requires
ENV_PASSWORD = "Env-Pw-4471zz"  # reaches the config only through ${VIDWATCH_TEST_PW}


@pytest.mark.parametrize(("text", "expected"), [
    ("rtsp://admin:hunter2@10.0.0.5:554/s1", f"rtsp://admin:{MASK}@10.0.0.5:554/s1"),
    ("open 'http://u:p%40ss@cam/x.mjpg' failed", f"open 'http://u:{MASK}@cam/x.mjpg' failed"),
    ("https://cam/snap.jpg?user=a&password=pw1&x=1", f"https://cam/snap.jpg?user=a&password={MASK}&x=1"),
    ("rtsp://cam/live?token=abc.def", f"rtsp://cam/live?token={MASK}"),
    ("rtsp://10.0.0.5:554/stream1", "rtsp://10.0.0.5:554/stream1"),  # nothing secret: unchanged
    ("rtsp://viewer@10.0.0.5/s", "rtsp://viewer@10.0.0.5/s"),  # user name only
])
def test_redact_masks_url_credentials(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_remembered_secrets_are_masked_anywhere() -> None:
    remember("w/slash@and:colon")
    assert redact("rtsp://u:w/slash@and:colon@h/").count("w/slash") == 0


def test_log_filter_masks_message_args_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.secrets")
    caplog.handler.addFilter(RedactingFilter())
    try:
        raise OSError("cannot reach rtsp://a:tracepw@h/")
    except OSError:
        log.exception("camera %s failed", "rtsp://a:argpw@h/")
    text = caplog.text
    assert "argpw" not in text and "tracepw" not in text and f"a:{MASK}@h" in text


def test_env_and_file_references_are_substituted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_PW", "from-env")
    secret = tmp_path / "cam2"
    secret.write_text("from-file\n")
    data, problems = expand({"a": ["rtsp://u:${CAM_PW}@h/1", f"rtsp://u:${{file:{secret}}}@h/2"], "b": "5$$", "n": 3})
    assert problems == []
    assert data == {"a": ["rtsp://u:from-env@h/1", "rtsp://u:from-file@h/2"], "b": "5$", "n": 3}
    assert redact("x from-env y from-file") == f"x {MASK} y {MASK}"  # substituted values are secrets


def _camera_yaml(source: str, models_dir: Path, tmp: Path) -> str:
    return f"""
state_dir: {tmp}/state
models: {{a: {{path: {models_dir}/demo-anomaly}}}}
cameras:
  - id: gate
    source: "{source}"
    models: [{{model: a}}]
"""


def test_missing_variable_and_file_are_named_with_their_yaml_path(models_dir: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_VAR_VW", raising=False)
    text = _camera_yaml("rtsp://u:${NO_SUCH_VAR_VW}@h/${file:/nonexistent/vw-secret}", models_dir, tmp_path)
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    problems = info.value.problems
    assert any("cameras[0].source (line 6)" in p and "NO_SUCH_VAR_VW is not set" in p for p in problems), problems
    assert any("cameras[0].source (line 6)" in p and "/nonexistent/vw-secret" in p for p in problems), problems


def test_config_errors_never_quote_a_secret(models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The error mapper prints bad values: a password there must come out masked."""
    monkeypatch.setenv("VIDWATCH_TEST_PW", ENV_PASSWORD)
    config = tmp_path / "bad.yaml"
    config.write_text(_camera_yaml(f"rtsp://admin:{PASSWORD}@10.0.0.9/s1", models_dir, tmp_path) + f"""
inference: {{endpoint: "tcp://admin:{PASSWORD}@10.0.0.9:5550/x"}}
metrics: {{port: "${{VIDWATCH_TEST_PW}}"}}
""")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "check", str(config)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={**os.environ})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "inference.endpoint" in out and "metrics.port" in out, out  # the errors are still reported...
    assert PASSWORD not in out and ENV_PASSWORD not in out, out  # ...with the secrets masked
    assert MASK in out


@pytest.mark.slow
@pytest.mark.rtsp
def test_a_run_with_camera_passwords_leaks_them_nowhere(models_dir: Path, tmp_path: Path) -> None:
    """`vidwatch run` with an RTSP camera that requires a password (literal in the URL), one that
    gets it from ${VIDWATCH_TEST_PW}, and one unreachable camera with a password (error path):
    every log line, status line, /metrics label, alert record and snapshot is free of both."""
    ok, reason = rtsp_available()
    if not ok:
        pytest.skip(reason)
    metrics_port = free_port()
    with rtsp_server({"gate": PEOPLE_CLIP}, auth=f"admin:{PASSWORD}") as server:
        good = server.url("gate").replace("rtsp://", f"rtsp://admin:{PASSWORD}@")
        wrong = server.url("gate").replace("rtsp://", "rtsp://admin:${VIDWATCH_TEST_PW}@")  # 401: error path
        config = tmp_path / "cams.yaml"
        config.write_text(f"""
state_dir: {tmp_path}/state
models: {{a: {{path: {models_dir}/demo-anomaly}}}}
inference: {{endpoint: "tcp://127.0.0.1:{free_port()}", max_wait_ms: 20}}
sink: {{endpoint: "tcp://127.0.0.1:{free_port()}", snapshots_dir: {tmp_path}/snapshots, status_interval_s: 1}}
capture: {{open_timeout_s: 3, read_timeout_s: 3, reconnect_min_s: 0.5, reconnect_max_s: 2}}
cameras:
  - {{id: gate, source: "{good}", fps: 5, models: [{{model: a, calibrate_seconds: 2}}]}}
  - {{id: wrongpw, source: "{wrong}", fps: 5, models: [{{model: a}}]}}
  - {{id: nohost, source: "rtsp://admin:{PASSWORD}@127.0.0.1:{free_port()}/x?token={PASSWORD}", fps: 5,
      models: [{{model: a}}]}}
rules:
  - {{name: any, model: a, threshold: 0.0, min_duration_s: 0, cooldown_s: 1}}
outputs:
  - {{type: jsonl, path: {tmp_path}/alerts.jsonl}}
  - {{type: stdout}}
metrics: {{port: {metrics_port}}}
""")
        env = {**os.environ, "VIDWATCH_TEST_PW": ENV_PASSWORD, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "--log-level", "debug", "run", str(config),
                                 "--duration", "40"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        scraped, deadline = "", time.monotonic() + 90
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(1.0)
                text = scrape_metrics(metrics_port)
                if 'vidwatch_windows_scored_total{camera="gate"' in text:
                    scraped = text
                if scraped and 'vidwatch_camera_reconnects_total{camera="wrongpw"}' in text:
                    scraped = text
                    break
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, err[-3000:]
    alerts = (tmp_path / "alerts.jsonl").read_text()
    assert '"camera": "gate"' in alerts, (out + err)[-3000:]  # the authorised camera really ran
    assert "[status] camera=gate" in out and scraped, out[-2000:]
    assert "camera wrongpw:" in err and "camera nohost:" in err, err[-3000:]  # both error paths were logged
    assert f"rtsp://admin:{MASK}@" in err  # the URLs were logged, masked
    snapshots = list((tmp_path / "snapshots").rglob("*"))
    assert any(p.suffix == ".jpg" for p in snapshots)
    everything = {"stdout": out, "stderr": err, "metrics": scraped, "alerts": alerts,
                  "snapshot names": "\n".join(map(str, snapshots)),
                  "state": "\n".join(map(str, (tmp_path / "state").rglob("*")))}
    for p in snapshots:
        if p.is_file():
            everything[str(p)] = p.read_bytes().decode("latin-1")
    for where, text in everything.items():
        assert PASSWORD not in text, f"camera password leaked in {where}"
        assert ENV_PASSWORD not in text, f"${{VIDWATCH_TEST_PW}} leaked in {where}"
    records = [json.loads(line) for line in alerts.splitlines()]
    assert {r["id"] for r in records if r["state"] == "end"} == {r["id"] for r in records if r["state"] == "start"}


def test_redact_url_keeps_only_scheme_host_port_and_path() -> None:
    """How a webhook endpoint is named in logs and errors: tokens in user info or query never show."""
    assert redact_url("https://u:p@[::1]:8443/a/b?k=v#f") == "https://[::1]:8443/a/b"
    assert redact_url("http://hooks.example/x?token=abc") == "http://hooks.example/x"
