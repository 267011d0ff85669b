"""The one HTTP server every process runs: ``/metrics`` plus routes other parts register.

Health checks, the events API and the metrics exposition share one port per process (the
``metrics`` section of the config), so operators open one port and one scrape config. The
standard library's threading server is enough for a handful of read-only routes and keeps the
runtime free of a web framework. TLS and basic auth (``pipeline.http_security``) apply to every
route: the TLS handshake runs in the request's thread, the credentials are checked before any
handler sees the request.
"""

from __future__ import annotations

import logging
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.http_security import REALM, HttpSecurity

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


def json_response(payload: Any, status: int = 200) -> Response:
    import json

    return Response(status, json.dumps(payload, indent=1).encode(), "application/json")


def metrics_handler(registry: Any) -> Handler:
    """``/metrics`` in the exposition format the scraper asks for (text or OpenMetrics)."""
    from prometheus_client.exposition import choose_encoder

    def handle(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(200, encoder(registry), content_type)

    return handle


class HttpServer:
    """Routes by exact path or by prefix (``route("/api/", h, prefix=True)``); longest match wins."""

    def __init__(self, host: str, port: int, security: HttpSecurity | None = None) -> None:
        self._exact: dict[str, Handler] = {}
        self._prefixes: dict[str, Handler] = {}
        self.security = security or HttpSecurity()
        self._server = _QuietServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        if self.security.ssl_context is not None:
            # Handshake later, in the request's thread: a slow client must not hold up accept().
            self._server.socket = self.security.ssl_context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def route(self, path: str, handler: Handler, prefix: bool = False) -> None:
        (self._prefixes if prefix else self._exact)[path] = handler

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def dispatch(self, request: Request) -> Response:
        handler = self._exact.get(request.path)
        if handler is None:
            matches = [p for p in self._prefixes if request.path.startswith(p)]
            if not matches:
                return Response(404, f"no route for {request.path}\n".encode())
            handler = self._prefixes[max(matches, key=len)]
        try:
            return handler(request)
        except Exception:  # one broken route must not take the metrics endpoint down
            logger.exception("HTTP handler for %s failed", request.path)
            return Response(500, b"internal error; see the process log\n")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            timeout = REQUEST_TIMEOUT_S  # a client that stalls (handshake or request) is dropped

            def setup(self) -> None:
                super().setup()
                if isinstance(self.request, ssl.SSLSocket):
                    self.request.do_handshake()

            def parse_request(self) -> bool:
                if not super().parse_request():
                    return False
                auth = server.security.auth
                if auth is not None and not auth.allows(self.headers.get("Authorization")):
                    body = b"authentication required\n"
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"')
                    self.send_header("Content-Type", "text/plain; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                url = urllib.parse.urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                request = Request("GET", url.path, urllib.parse.parse_qs(url.query), headers)
                self._send(server.dispatch(request))

            def _send(self, response: Response) -> None:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(response.body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                logger.debug("http: " + format, *args)

        return _Handler


REQUEST_TIMEOUT_S = 30.0


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A failed TLS handshake, a port scanner, a client gone mid-reply: not worth a traceback.
        logger.debug("http: request from %s failed", client_address[0] if client_address else "?", exc_info=True)


def serve_metrics(host: str, port: int, registry: Any, security: HttpSecurity | None = None) -> HttpServer:
    """Start the process's HTTP server with ``/metrics``; callers add their own routes."""
    server = HttpServer(host, port, security)
    server.route("/metrics", metrics_handler(registry))
    server.start()
    return server
