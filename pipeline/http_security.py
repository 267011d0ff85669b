"""TLS and HTTP basic auth for the process's HTTP server (``metrics`` section of the config).

Both cover every route of the server (metrics, health, events). Passwords are compared as
SHA-256 digests with ``hmac.compare_digest`` (constant time); the configured password or digest
never appears in logs or errors, only where it comes from.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import ssl
from dataclasses import dataclass

from pipeline.config import BasicAuthConfig, MetricsConfig, TLSConfig, is_loopback
from pipeline.errors import VidwatchError

logger = logging.getLogger(__name__)

REALM = "vidwatch"


@dataclass(frozen=True)
class BasicAuth:
    username: str
    password_sha256: bytes  # raw digest

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries these credentials (constant-time compare)."""
        if not authorization or not authorization[:6].lower() == "basic ":
            return False
        try:
            user, _, password = base64.b64decode(authorization[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user_ok = hmac.compare_digest(hashlib.sha256(user.encode()).digest(),
                                      hashlib.sha256(self.username.encode()).digest())
        password_ok = hmac.compare_digest(hashlib.sha256(password.encode()).digest(), self.password_sha256)
        return user_ok & password_ok  # both compared every time: timing does not tell which was wrong


@dataclass(frozen=True)
class HttpSecurity:
    ssl_context: ssl.SSLContext | None = None
    auth: BasicAuth | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"


def http_security(config: MetricsConfig) -> HttpSecurity:
    """Load the TLS certificate and the basic-auth password the config names; warn when the port is
    open to other hosts without them."""
    security = HttpSecurity(None if config.tls is None else tls_context(config.tls),
                            None if config.basic_auth is None else basic_auth(config.basic_auth))
    if not is_loopback(f"tcp://{config.host}:{config.port}") and (security.auth is None or
                                                                     security.ssl_context is None):
        logger.warning("metrics/health on %s:%d are reachable from other hosts %s; set metrics.tls and "
                       "metrics.basic_auth (README 'Security') unless the network is trusted", config.host,
                       config.port, "in clear text" if security.ssl_context is None else "without a password")
    return security


def tls_context(config: TLSConfig) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.cert_file, config.key_file)
    except (OSError, ssl.SSLError) as exc:
        why = getattr(exc, "strerror", None) or exc
        raise VidwatchError(f"metrics.tls: cannot load certificate {config.cert_file} with key {config.key_file}: "
                            f"{why}; check the paths and that the key matches the certificate") from None
    return context


def basic_auth(config: BasicAuthConfig) -> BasicAuth:
    if config.password_sha256 is not None:
        return BasicAuth(config.username, bytes.fromhex(config.password_sha256))
    if config.password_file is not None:
        try:
            password = config.password_file.read_text().strip()  # as Prometheus reads password_file
        except OSError as exc:
            raise VidwatchError(f"metrics.basic_auth.password_file: cannot read {config.password_file}: "
                                f"{exc.strerror}") from None
        where = f"file {config.password_file}"
    else:
        assert config.password_env is not None
        password = os.environ.get(config.password_env, "")
        where = f"environment variable {config.password_env}"
    if not password:
        raise VidwatchError(f"metrics.basic_auth: the password in {where} is empty")
    return BasicAuth(config.username, hashlib.sha256(password.encode()).digest())
