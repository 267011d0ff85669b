"""CurveZMQ between stages on real TCP sockets: strangers are refused and counted, the authorized
capture keeps scoring; the config refuses exposed endpoints without keys; key files and env keys."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from prometheus_client import CollectorRegistry

from pipeline.capture import CaptureNode
from pipeline.config import Config, KeySource, parse_config
from pipeline.errors import ConfigError, VidwatchError
from pipeline.inference import InferenceWorker
from pipeline.sink import Sink
from pipeline.transport_security import (
    TransportSecurity,
    public_keys,
    secret_key,
    transport_security,
    write_keypairs,
)
from pipeline.wire import encode_frames, encode_results
from tests.conftest import PEOPLE_CLIP, ROOT, free_port
from tests.pipeline.stage_helpers import context_delivers, make_config, running

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="this libzmq was built without CurveZMQ")


def _transport(keys: Path) -> str:
    return f"""transport:
  server_key: {keys}/server.key_secret
  server_public_key: {keys}/server.key
  client_key: {keys}/client.key_secret
  authorized_clients: [{keys}/client.key]
"""


def _value(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def _forged_result(seq: int) -> dict[str, object]:
    """A result that, if accepted, would raise an alert on camera 'ghost' (score 9 >> threshold)."""
    now = time.time()
    return {"camera": "ghost", "package": "demo-anomaly", "labels": ["anomaly"], "alert_label": "anomaly",
            "scores": [9.0], "seq": seq, "first_seq": seq, "t_capture": now, "t_stream": float(seq), "t_decided": now,
            "heatmap": None}


class Stranger:
    """A peer on its own ZeroMQ context: with an unauthorized key (``key``) or none at all."""

    def __init__(self, endpoint: str, server_public: bytes, key: tuple[bytes, bytes] | None) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.PUSH)
        self.sock.setsockopt(zmq.SNDTIMEO, 50)
        self.sock.setsockopt(zmq.LINGER, 0)
        if key is not None:
            self.sock.curve_serverkey, (self.sock.curve_publickey, self.sock.curve_secretkey) = server_public, key
        self.sock.connect(endpoint)
        self.attempts = 0

    def send(self, parts: list[object]) -> None:
        self.attempts += 1
        try:
            # Queued locally at best: it can only leave after a handshake, which never succeeds
            # (between failed handshakes there is no pipe and the send times out).
            self.sock.send_multipart(parts)
        except zmq.Again:
            pass

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


@pytest.mark.slow
def test_strangers_are_refused_and_counted_while_the_authorized_capture_keeps_scoring(
        models_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    write_keypairs(keys, ("server", "client", "intruder"))
    cameras = (f"  - {{id: door, source: {PEOPLE_CLIP}, fps: 5, loop: true, playback_speed: 4, group: 0, "
               f"models: [{{model: demo-anomaly, calibrate_seconds: 1}}]}}\n"
               f"  - {{id: ghost, source: {PEOPLE_CLIP}, fps: 5, group: 1, "
               f"models: [{{model: demo-anomaly, calibrate_seconds: 0.2}}]}}")
    rules = "  - {name: r, model: demo-anomaly, threshold: 5.0, clear_threshold: 4.0, cooldown_s: 1}"
    config = make_config(models_dir, tmp_path, cameras, rules, extra=_transport(keys))
    server_public = next(iter(public_keys(config.transport.server_public_key)))  # type: ignore[arg-type]
    reg = {name: CollectorRegistry() for name in ("sink", "infer", "capture")}
    sink, worker = Sink(config, reg["sink"]), InferenceWorker(config, 0, reg["infer"])
    capture = CaptureNode(config, 0, reg["capture"])  # group 0: door only; nobody captures ghost
    frames = np.zeros((2, 224, 224, 3), np.uint8)
    intruder = zmq.auth.load_certificate(str(keys / "intruder.key_secret"))
    strangers = [Stranger(endpoint, server_public, key) for endpoint in
                 (config.inference.endpoint, config.sink.endpoint) for key in (intruder, None)]
    rejected = {"infer": {"stage": "inference", "reason": "unauthenticated"},
                "sink": {"stage": "sink", "reason": "unauthenticated"}}
    with running(sink), running(worker), running(capture):
        deadline = time.monotonic() + 60
        seq = 0
        while time.monotonic() < deadline:
            seq += 1
            for frames_peer in strangers[:2]:
                frames_peer.send(encode_frames(["ghost", "ghost"], [seq, seq], [time.time()] * 2,
                                               [seq / 5] * 2, frames))
            for results_peer in strangers[2:]:
                results_peer.send(encode_results([_forged_result(seq)], []))
            door = _value(reg["infer"], "vidwatch_windows_scored_total", {"camera": "door", "model": "demo-anomaly"})
            if seq >= 20 and door >= 10 and all(_value(reg[k], "vidwatch_messages_rejected_total", v) >= 2
                                  for k, v in rejected.items()):
                break
            time.sleep(0.2)
        door_before = _value(reg["infer"], "vidwatch_windows_scored_total",
                             {"camera": "door", "model": "demo-anomaly"})
        time.sleep(3)  # the authorized capture keeps scoring while the strangers keep trying
        door_after = _value(reg["infer"], "vidwatch_windows_scored_total", {"camera": "door", "model": "demo-anomaly"})
        ghost_scored = _value(reg["infer"], "vidwatch_windows_scored_total",
                              {"camera": "ghost", "model": "demo-anomaly"})
        ghost_score = reg["sink"].get_sample_value("vidwatch_last_score", {"camera": "ghost", "model": "demo-anomaly"})
        # Control: the same forged result with the authorized client key is taken, so the zeros
        # above are the transport refusing the strangers, not a message the sink would drop anyway.
        allowed = Stranger(config.sink.endpoint, server_public,
                           zmq.auth.load_certificate(str(keys / "client.key_secret")))
        for _ in range(50):
            allowed.send(encode_results([_forged_result(seq + 1)], []))
            if reg["sink"].get_sample_value("vidwatch_last_score", {"camera": "ghost", "model": "demo-anomaly"}):
                break
            time.sleep(0.1)
        control = reg["sink"].get_sample_value("vidwatch_last_score", {"camera": "ghost", "model": "demo-anomaly"})
        allowed.close()
    for stranger in strangers:
        stranger.close()
    assert ghost_scored == 0 and ghost_score is None, "a stranger's frames or results were accepted"
    assert all(s.attempts >= 20 for s in strangers)
    for key, labels in rejected.items():
        # two strangers per stage, each refused at least once (again at each reconnect)
        assert _value(reg[key], "vidwatch_messages_rejected_total", labels) >= 2, key
        assert _value(reg[key], "vidwatch_messages_rejected_total", {**labels, "reason": "bad_message"}) == 0
    assert door_after > door_before >= 10, "the authorized capture stopped scoring"
    assert _value(reg["sink"], "vidwatch_end_to_end_latency_seconds_count", {}) > 0  # door results reached the sink
    assert control == 9.0


def _server_with_an_intruder_key(tmp_path: Path) -> tuple[Path, Config, TransportSecurity]:
    """Keys for a server, its client and an intruder under ``tmp_path/keys``; a config using the first
    two, and the server's transport security."""
    keys = tmp_path / "keys"
    write_keypairs(keys, ("server", "client", "intruder"))
    config = make_config(Path("/nonexistent"), tmp_path, "  - {id: c, source: x.mp4, models: [{model: demo-anomaly}]}",
                         extra=_transport(keys))
    security = transport_security(config, "test")
    assert security is not None
    return keys, config, security


def test_monitor_tells_a_missing_key_from_an_unknown_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Each rejected handshake is counted once, with the right reason in the log."""
    from pipeline.transport import results_pull

    keys, config, security = _server_with_an_intruder_key(tmp_path)
    counted: list[str] = []
    pull = results_pull(zmq.Context.instance(), config.sink.endpoint, security, on_reject=counted.append)
    server_public = next(iter(public_keys(config.transport.server_public_key)))  # type: ignore[arg-type]
    intruder_key = zmq.auth.load_certificate(str(keys / "intruder.key_secret"))
    intruder = Stranger(config.sink.endpoint, server_public, intruder_key)
    with caplog.at_level(logging.WARNING, logger="pipeline.transport_security"):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not counted:
            time.sleep(0.05)
    intruder.close()
    assert not pull.poll(200)
    pull.close(0)
    assert counted and set(counted) == {"unauthenticated"}
    assert "client key is not authorized" in caplog.text


def test_exposed_tcp_without_keys_is_refused_with_how_to(tmp_path: Path) -> None:
    text = """
models: {a: {path: x}}
inference: {endpoint: "tcp://0.0.0.0:5550"}
sink: {endpoint: "tcp://10.0.0.5:5560"}
cameras: [{id: c, source: x.mp4, models: [{model: a}]}]
"""
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    message = str(err.value)
    assert "inference.endpoint (line 3): tcp://0.0.0.0:5550 is reachable from other hosts" in message
    assert "sink.endpoint (line 4): tcp://10.0.0.5:5560" in message
    assert "vidwatch keys generate" in message and "transport.insecure: true" in message
    # loopback and ipc need no keys; insecure: true is accepted (and warned about at every start)
    parse_config(text.replace("0.0.0.0", "127.0.0.1").replace("10.0.0.5", "localhost"))
    parse_config(text.replace('"tcp://0.0.0.0:5550"', "ipc:///tmp/x").replace("10.0.0.5", "127.0.0.2"))
    insecure = parse_config(text + "transport: {insecure: true}\n")
    assert insecure.transport.insecure


def test_insecure_mode_is_logged_loudly_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(Path("/x"), tmp_path, "  - {id: c, source: x.mp4, models: [{model: demo-anomaly}]}",
                         extra="transport: {insecure: true}")
    config = config.model_copy(update={"sink": config.sink.model_copy(update={"endpoint": "tcp://0.0.0.0:5999"})})
    with caplog.at_level(logging.WARNING):
        assert transport_security(config, "sink") is None
    assert "INSECURE TRANSPORT" in caplog.text and "sink.endpoint=tcp://0.0.0.0:5999" in caplog.text


def test_incomplete_or_conflicting_key_settings_are_config_errors(tmp_path: Path) -> None:
    base = "models: {a: {path: x}}\ncameras: [{id: c, source: x.mp4, models: [{model: a}]}]\n"
    with pytest.raises(ConfigError, match="missing: server_public_key, client_key, authorized_clients"):
        parse_config(base + "transport: {server_key: k.key_secret}\n")
    with pytest.raises(ConfigError, match="insecure: true and keys are both set"):
        parse_config(base + "transport: {server_key: a, server_public_key: b, client_key: c, "
                            "authorized_clients: [d], insecure: true}\n")
    with pytest.raises(ConfigError, match="exactly one of file"):
        parse_config(base + "transport: {server_key: {file: a, env: B}, server_public_key: b, client_key: c, "
                            "authorized_clients: [d]}\n")


def test_keys_from_files_folders_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.config import KeySource

    written = write_keypairs(tmp_path / "k")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in written}
    assert modes == {"server.key": 0o644, "server.key_secret": 0o600, "client.key": 0o644,
                     "client.key_secret": 0o600}
    public, secret = secret_key(KeySource(file=tmp_path / "k" / "server.key_secret"))
    assert public_keys(KeySource(file=tmp_path / "k" / "server.key")) == {public}
    assert len(public_keys(KeySource(file=tmp_path / "k"))) == 2  # a folder of public keys
    monkeypatch.setenv("VW_SERVER_KEY", secret.decode())
    assert secret_key(KeySource(env="VW_SERVER_KEY")) == (public, secret)
    monkeypatch.setenv("VW_BAD", "not-a-key")
    with pytest.raises(VidwatchError, match="VW_BAD is not a 40-character Z85") as err:
        secret_key(KeySource(env="VW_BAD"))
    assert "not-a-key" not in str(err.value)  # errors name where a key comes from, never its value
    with pytest.raises(VidwatchError, match="holds only a public key"):
        secret_key(KeySource(file=tmp_path / "k" / "server.key"))
    with pytest.raises(VidwatchError, match="already exist"):
        write_keypairs(tmp_path / "k")


def test_keys_generate_command_and_check(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "keys", "generate", str(tmp_path / "keys")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "server_key: " in out.stdout and (tmp_path / "keys" / "client.key_secret").exists()
    again = subprocess.run([sys.executable, "-m", "pipeline.cli", "keys", "generate", str(tmp_path / "keys")],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert again.returncode == 2 and "--force" in again.stderr


def test_only_the_authorized_sink_can_pull_evidence_frames_from_a_capture_node(tmp_path: Path) -> None:
    """The evidence endpoint (capture serves full-resolution frames and clips) is CurveZMQ too."""
    import threading

    from pipeline.evidence_ring import FrameRing, SnapshotClient, SnapshotServer, group_endpoint
    from pipeline.transport_security import TransportSecurity

    keys = tmp_path / "keys"
    write_keypairs(keys, ("server", "client", "intruder"))
    config = make_config(Path("/x"), tmp_path, "  - {id: cam, source: x.mp4, models: [{model: demo-anomaly}]}",
                         extra=_transport(keys))
    base = config.sink.endpoint.rsplit(":", 1)[0] + f":{free_port()}"
    ring = FrameRing(seconds=2.0, fps=10)
    ring.push(1, time.time(), np.full((36, 64, 3), 99, np.uint8))
    stop = threading.Event()
    server = SnapshotServer(group_endpoint(base, 0), {"cam": ring}, stop, security=transport_security(config, "t"))
    server.start()
    intruder_config = config.transport.model_copy(update={"client_key": KeySource(file=keys / "intruder.key_secret")})
    clients = {"sink": SnapshotClient(base, [0], 5.0, transport_security(config, "sink")),
               "intruder": SnapshotClient(base, [0], 2.0, TransportSecurity(intruder_config)),
               "no key": SnapshotClient(base, [0], 2.0)}
    try:
        got = {name: client.fetch(0, "cam", 1)[0] for name, client in clients.items()}
    finally:
        stop.set()
        server.join(5)
        for client in clients.values():
            client.close()
    assert got["sink"] is not None and got["sink"][:2] == b"\xff\xd8"  # a JPEG
    assert got["intruder"] is None and got["no key"] is None


def test_check_names_keys_this_host_cannot_load(models_dir: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    write_keypairs(keys, ("client",))  # a capture host: no server secret here
    (keys / "server.key").write_text((keys / "client.key").read_text())
    config = tmp_path / "c.yaml"
    config.write_text(f"""
models: {{a: {{path: {models_dir}/demo-anomaly}}}}
inference: {{endpoint: "tcp://192.0.2.1:5550"}}
cameras: [{{id: c, source: x.mp4, models: [{{model: a}}]}}]
{_transport(keys)}""")
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "check", str(config)], capture_output=True,
                         text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "warning: transport.server_key: cannot read the CurveZMQ key file" in out.stderr
    assert "needed on hosts that run infer, sink" in out.stderr
    assert "client_key" not in out.stderr  # this host has its client key


# Contexts of the test below: each holds a ZAP handler thread for the life of the context; never terminated.
_CONTEXTS: list[zmq.Context] = []


def test_the_rejection_monitor_reads_until_its_socket_is_gone(tmp_path: Path) -> None:
    """The monitor's reader stays until libzmq says the monitor stopped: a reader gone before the
    socket's last event would leave libzmq's I/O thread blocked, and every socket of the context."""
    from pipeline.transport import results_pull

    keys, config, security = _server_with_an_intruder_key(tmp_path)
    ctx = zmq.Context()
    _CONTEXTS.append(ctx)
    counted: list[str] = []
    pull = results_pull(ctx, config.sink.endpoint, security, on_reject=counted.append)
    monitors = [t for t in threading.enumerate() if t.name == f"zmq-monitor-{config.sink.endpoint}"]
    server_public = next(iter(public_keys(config.transport.server_public_key)))  # type: ignore[arg-type]
    intruder_key = zmq.auth.load_certificate(str(keys / "intruder.key_secret"))
    intruder = Stranger(config.sink.endpoint, server_public, intruder_key)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not counted:
            time.sleep(0.05)
        assert counted, "the intruder was never counted"
        pull.close(0)  # while the intruder keeps knocking
        assert monitors and all(_joined(t, 10) for t in monitors), "the monitor never ended"
        assert context_delivers(ctx), "the context stopped delivering after the server socket closed"
    finally:
        intruder.close()


def _joined(thread: threading.Thread, timeout: float) -> bool:
    thread.join(timeout)
    return not thread.is_alive()
