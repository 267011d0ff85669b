"""The shared HTTP server on a real loopback socket: metrics, routes, failures kept local."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from pipeline.http_server import Request, Response, json_response, serve_metrics


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture()
def server():  # type: ignore[no-untyped-def]
    registry = CollectorRegistry()
    Counter("vidwatch_test_things", "things", registry=registry).inc(3)
    srv = serve_metrics("127.0.0.1", 0, registry)
    yield srv
    srv.stop()


def test_metrics_are_served(server) -> None:  # type: ignore[no-untyped-def]
    status, body = get(f"http://127.0.0.1:{server.port}/metrics")
    assert status == 200
    assert b"vidwatch_test_things_total 3.0" in body


def test_routes_exact_and_longest_prefix(server) -> None:  # type: ignore[no-untyped-def]
    server.route("/api/", lambda r: Response(200, b"api"), prefix=True)
    server.route("/api/events/", lambda r: json_response({"path": r.path, "q": r.query}), prefix=True)
    server.route("/healthz", lambda r: Response(200, b"ok"))
    assert get(f"http://127.0.0.1:{server.port}/healthz") == (200, b"ok")
    assert get(f"http://127.0.0.1:{server.port}/api/cameras") == (200, b"api")
    status, body = get(f"http://127.0.0.1:{server.port}/api/events/7?camera=door")
    assert status == 200 and b'"door"' in body and b"/api/events/7" in body
    assert get(f"http://127.0.0.1:{server.port}/nothing")[0] == 404


def test_a_failing_route_answers_500_and_the_rest_keeps_serving(server) -> None:  # type: ignore[no-untyped-def]
    def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    server.route("/broken", broken)
    assert get(f"http://127.0.0.1:{server.port}/broken")[0] == 500
    assert get(f"http://127.0.0.1:{server.port}/metrics")[0] == 200
