"""TLS and basic auth on the process's HTTP server, with a real certificate, real requests and a
real Prometheus scraping through both."""

from __future__ import annotations

import base64
import hashlib
import http.client
import logging
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter

from pipeline.config import BasicAuthConfig, MetricsConfig, TLSConfig, parse_config
from pipeline.errors import ConfigError, VidwatchError
from pipeline.http_security import http_security
from pipeline.http_server import HttpServer, Response, serve_metrics
from tests.conftest import free_port
from tests.support.servers import prometheus, query, require

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost, made with openssl."""
    openssl = require("openssl")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=vidwatch-test",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    return cert, key


@pytest.fixture()
def secured(cert: tuple[Path, Path], tmp_path: Path) -> Iterator[HttpServer]:
    registry = CollectorRegistry()
    Counter("vidwatch_test_things", "things", registry=registry).inc(3)
    (tmp_path / "password").write_text(PASSWORD + "\n")
    config = MetricsConfig(host="127.0.0.1", port=free_port(), tls=TLSConfig(cert_file=cert[0], key_file=cert[1]),
                           basic_auth=BasicAuthConfig(username="prom", password_file=tmp_path / "password"))
    server = serve_metrics(config.host, config.port, registry, http_security(config))
    server.route("/healthz", lambda r: Response(200, b"ok"))
    yield server
    server.stop()


def _get(port: int, path: str, cafile: Path, auth: tuple[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    headers = {}
    if auth is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_every_route_needs_the_password_over_tls(secured: HttpServer, cert: tuple[Path, Path]) -> None:
    for path in ("/metrics", "/healthz", "/nothing"):
        status, headers, body = _get(secured.port, path, cert[0])
        assert status == 401 and headers["www-authenticate"].startswith('Basic realm="vidwatch"')
        assert b"vidwatch_test_things" not in body
        assert _get(secured.port, path, cert[0], ("prom", "wrong"))[0] == 401
        assert _get(secured.port, path, cert[0], ("someone", PASSWORD))[0] == 401
    status, _, body = _get(secured.port, "/metrics", cert[0], ("prom", PASSWORD))
    assert status == 200 and b"vidwatch_test_things_total 3.0" in body
    assert _get(secured.port, "/healthz", cert[0], ("prom", PASSWORD))[:1] == (200,)
    assert _get(secured.port, "/nothing", cert[0], ("prom", PASSWORD))[0] == 404


def test_plain_http_and_stalled_clients_do_not_stop_the_server(secured: HttpServer, cert: tuple[Path, Path]) -> None:
    plain = http.client.HTTPConnection("127.0.0.1", secured.port, timeout=5)
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        plain.request("GET", "/metrics")
        plain.getresponse().read()
    plain.close()
    with socket.create_connection(("127.0.0.1", secured.port)):  # connects, never says hello
        status, _, _ = _get(secured.port, "/metrics", cert[0], ("prom", PASSWORD))
    assert status == 200
    with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust the cert stops there
        conn = http.client.HTTPSConnection("127.0.0.1", secured.port, context=ssl.create_default_context(),
                                           timeout=5)
        conn.request("GET", "/metrics")


def test_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
    header = "Basic " + base64.b64encode(f"prom:{PASSWORD}".encode()).decode()
    monkeypatch.setenv("VW_METRICS_PASSWORD", PASSWORD)
    for config in (BasicAuthConfig(username="prom", password_sha256=digest),
                   BasicAuthConfig(username="prom", password_env="VW_METRICS_PASSWORD")):
        auth = http_security(MetricsConfig(basic_auth=config)).auth
        assert auth is not None and auth.allows(header) and not auth.allows(header[:-2] + "==")
        assert not auth.allows("Bearer x") and not auth.allows("Basic !!!") and not auth.allows(None)
    monkeypatch.setenv("VW_EMPTY", "")
    with pytest.raises(VidwatchError, match="VW_EMPTY is empty"):
        http_security(MetricsConfig(basic_auth=BasicAuthConfig(username="p", password_env="VW_EMPTY")))
    with pytest.raises(VidwatchError, match="cannot read"):
        http_security(MetricsConfig(basic_auth=BasicAuthConfig(username="p", password_file=tmp_path / "none")))
    with pytest.raises(VidwatchError, match="metrics.tls: cannot load certificate"):
        http_security(MetricsConfig(tls=TLSConfig(cert_file=tmp_path / "c.pem", key_file=tmp_path / "k.pem")))
    base = "models: {a: {path: x}}\ncameras: [{id: c, source: x.mp4, models: [{model: a}]}]\n"
    with pytest.raises(ConfigError, match="exactly one of password_sha256"):
        parse_config(base + f"metrics: {{basic_auth: {{username: p, password_sha256: {digest}, password_env: X}}}}")
    with pytest.raises(ConfigError, match=r"metrics.basic_auth.password_sha256 \(line 3\)"):
        parse_config(base + "metrics: {basic_auth: {username: p, password_sha256: plaintext}}")


def test_open_metrics_port_without_protection_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        http_security(MetricsConfig(host="0.0.0.0"))
    assert "reachable from other hosts in clear text" in caplog.text
    caplog.clear()
    http_security(MetricsConfig())  # loopback: nothing to say
    assert not caplog.text


@pytest.mark.slow
def test_prometheus_scrapes_through_tls_and_basic_auth(secured: HttpServer, cert: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    (tmp_path / "prom-password").write_text(PASSWORD)
    (tmp_path / "wrong-password").write_text("guess")
    target = [f"127.0.0.1:{secured.port}"]
    scrape = {"scheme": "https", "tls_config": {"ca_file": str(cert[0])},
              "basic_auth": {"username": "prom", "password_file": str(tmp_path / "prom-password")}}
    wrong = {**scrape, "basic_auth": {"username": "prom", "password_file": str(tmp_path / "wrong-password")},
             "static_configs": [{"targets": target}]}
    with prometheus(tmp_path, free_port(), target, scrape=scrape, jobs={"stranger": wrong}) as url:
        up, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline and not (up and query(url, 'up{job="stranger"}')):
            time.sleep(1)
            up = query(url, 'up{job="vidwatch"} == 1')
        things = query(url, "vidwatch_test_things_total")
        stranger = query(url, 'up{job="stranger"}')
    assert up, "Prometheus could not scrape through TLS + basic auth"
    assert [float(t["value"][1]) for t in things] == [3.0]  # only the authorized job got samples
    assert stranger and float(stranger[0]["value"][1]) == 0.0  # the wrong password is refused
