"""CurveZMQ on the stage sockets: encryption, server authentication and an allow-list of clients.

Binding sockets (inference workers' frames, the sink's results) are CurveZMQ servers; a ZAP
handler (pyzmq's ``ThreadAuthenticator``, one per ZeroMQ context) accepts only the configured
client public keys. A peer that fails the handshake (a key not on the list, no key at all, a
garbled handshake) never gets a message through; a socket monitor on every server socket counts
each such handshake (``vidwatch_messages_rejected_total{reason="unauthenticated"}``) and logs it,
at most once a minute per socket so a reconnecting stranger cannot flood the log.

Keys come from files written by ``vidwatch keys generate`` or from environment variables; errors
name where a key comes from, never the key.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from pipeline.config import Config, KeySource, TransportSecurityConfig, exposed_endpoints
from pipeline.errors import VidwatchError

logger = logging.getLogger(__name__)

RejectCallback = Callable[[str], None]
REASON = "unauthenticated"
LOG_EVERY_S = 60.0
_FAILED: dict[int, str] = {zmq.EVENT_HANDSHAKE_FAILED_AUTH: "client key is not authorized",
           zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "no CurveZMQ key or a bad handshake",
           zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake failed"}


def transport_security(config: Config, stage: str) -> TransportSecurity | None:
    """The stage's CurveZMQ settings, or None for plain sockets (loopback, ipc, or ``insecure``)."""
    if not zmq.has("curve") and config.transport.enabled:
        raise VidwatchError("transport keys are configured but this libzmq has no CurveZMQ; "
                            "install pyzmq from PyPI (its wheels bundle libsodium)")
    if config.transport.enabled:
        return TransportSecurity(config.transport)
    exposed = exposed_endpoints(config)
    if exposed:  # only possible with insecure: true (the config refuses it otherwise)
        logger.warning("%s: INSECURE TRANSPORT: %s carry frames and results in clear text, unauthenticated "
                       "(transport.insecure: true); anyone who reaches these ports can inject frames or forge "
                       "alerts. Add keys: vidwatch keys generate DIR (README 'Security')",
                       stage, ", ".join(f"{p}={e}" for p, e in exposed.items()))
    return None


class TransportSecurity:
    """Loads keys on first use, so a host holds only the keys its stages need."""

    def __init__(self, config: TransportSecurityConfig) -> None:
        self.config = config

    def serve(self, sock: zmq.Socket, domain: str, on_reject: RejectCallback | None = None) -> None:
        """Make ``sock`` (before bind) a CurveZMQ server accepting only the authorized clients."""
        assert self.config.server_key is not None
        public, secret = secret_key(self.config.server_key)
        allowed = set()
        for source in self.config.authorized_clients:
            allowed |= public_keys(source)
        _authenticator(sock.context).configure_curve_callback(domain, _AllowList(allowed))
        sock.curve_server = True
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.zap_domain = domain.encode()
        RejectionMonitor(sock, domain, on_reject).start()

    def connect_as_client(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (before connect) a CurveZMQ client with this host's key."""
        assert self.config.client_key is not None and self.config.server_public_key is not None
        public, secret = secret_key(self.config.client_key)
        servers = public_keys(self.config.server_public_key)
        if len(servers) != 1:
            raise VidwatchError(f"transport.server_public_key ({self.config.server_public_key.describe()}) "
                                f"must hold one key, found {len(servers)}")
        sock.curve_serverkey = next(iter(servers))
        sock.curve_publickey = public
        sock.curve_secretkey = secret


# -- keys ------------------------------------------------------------------------------------
def secret_key(source: KeySource) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``.key_secret`` file or an environment variable."""
    if source.env is not None:
        secret = _z85_from_env(source.env)
        return zmq.curve_public(secret), secret
    assert source.file is not None
    public, maybe_secret = _certificate(source.file)
    if maybe_secret is None:
        raise VidwatchError(f"{source.file} holds only a public key; this needs the secret key file "
                            f"(the .key_secret that vidwatch keys generate wrote)")
    mode = source.file.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning("secret key file %s is readable by other users (mode %o); chmod 600 it",
                       source.file, stat.S_IMODE(mode))
    return public, maybe_secret


def public_keys(source: KeySource) -> set[bytes]:
    """Z85 public keys from a key file, a folder of ``*.key`` files, or an environment variable."""
    if source.env is not None:
        return {_z85_from_env(source.env)}
    assert source.file is not None
    if source.file.is_dir():
        keys = {key for key, _ in zmq.auth.load_certificates(str(source.file)).items()}
        if not keys:
            raise VidwatchError(f"folder {source.file} has no public key files (*.key)")
        return keys
    return {_certificate(source.file)[0]}


def _certificate(path: Path) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise VidwatchError(f"cannot read the CurveZMQ key file {path}: {exc}; "
                            f"create keys with: vidwatch keys generate DIR") from None
    return public, secret


def _z85_from_env(name: str) -> bytes:
    value = os.environ.get(name, "").strip().encode()
    if not value:
        raise VidwatchError(f"environment variable {name} (a CurveZMQ key) is not set")
    try:
        if len(zmq.utils.z85.decode(value)) == 32:
            return value
    except (ValueError, KeyError, IndexError):
        pass
    raise VidwatchError(f"environment variable {name} is not a 40-character Z85 CurveZMQ key "
                        f"(the value between the quotes in a key file)")


def write_keypairs(folder: Path, names: tuple[str, ...] = ("server", "client"), force: bool = False) -> list[Path]:
    """``NAME.key`` (public, 0644) and ``NAME.key_secret`` (0600) for each name; returns the files."""
    folder.mkdir(parents=True, exist_ok=True)
    existing = [folder / f"{n}{ext}" for n in names for ext in (".key", ".key_secret")
                if (folder / f"{n}{ext}").exists()]
    if existing and not force:
        raise VidwatchError(f"{', '.join(map(str, existing))} already exist; keep them, or pass --force "
                            f"to replace them (every stage then needs the new keys)")
    written = []
    old = os.umask(0o077)  # the secret file is never readable by others, not even for a moment
    try:
        for name in names:
            for path in (folder / f"{name}.key", folder / f"{name}.key_secret"):
                path.unlink(missing_ok=True)
            public, secret = zmq.auth.create_certificates(str(folder), name)
            os.chmod(public, 0o644)
            os.chmod(secret, 0o600)
            written += [Path(public), Path(secret)]
    finally:
        os.umask(old)
    return written


# -- ZAP and rejection counting --------------------------------------------------------------
class _AllowList:
    """pyzmq's credentials-provider protocol: ``callback(domain, z85_key) -> bool``."""

    def __init__(self, keys: set[bytes]) -> None:
        self.keys = frozenset(keys)

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


_authenticators: dict[int, ThreadAuthenticator] = {}
_lock = threading.Lock()


def _authenticator(ctx: zmq.Context) -> ThreadAuthenticator:
    """The context's one ZAP handler (ZeroMQ allows one per context), started on first use and
    kept for the context's life; each server socket registers its own domain on it."""
    with _lock:
        auth = _authenticators.get(id(ctx))
        if auth is None or not auth.is_alive():
            auth = ThreadAuthenticator(ctx, log=logging.getLogger("zmq.auth"))
            auth.start()
            _authenticators[id(ctx)] = auth
        return auth


class RejectionMonitor(threading.Thread):
    """Counts failed handshakes on one server socket; ends when the socket closes."""

    def __init__(self, sock: zmq.Socket, domain: str, on_reject: RejectCallback | None) -> None:
        super().__init__(name=f"zmq-monitor-{domain}", daemon=True)
        self.domain, self.on_reject = domain, on_reject  # no reference to sock: it may be collected
        events = sum(_FAILED) | zmq.EVENT_MONITOR_STOPPED
        # Made here, in the socket's thread; from now on only the monitor thread touches it.
        self.monitor = sock.get_monitor_socket(events)
        self.rejected = 0
        self._logged_at = -LOG_EVERY_S
        self._since_log = 0

    def run(self) -> None:
        # Read until libzmq says the monitor stopped (it does when the socket is destroyed, after
        # its linger): a reader that left earlier would leave libzmq's I/O thread blocked on the
        # next event, and with it every socket of the context (pipeline.peer_watch).
        try:
            while True:
                event = recv_monitor_message(self.monitor)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    break
                try:
                    self._rejected(_FAILED.get(int(event["event"]), "handshake failed"))
                except Exception:  # a failing callback must not stop the reading
                    logger.exception("%s: counting a rejected handshake failed", self.domain)
        except zmq.ZMQError:  # the context is going away
            pass
        finally:
            self.monitor.close(linger=0)

    def _rejected(self, why: str) -> None:
        self.rejected += 1
        self._since_log += 1
        if self.on_reject is not None:
            self.on_reject(REASON)
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_S:
            logger.warning("%s: rejected %d peer handshake(s) (%s); nothing from them was accepted",
                           self.domain, self._since_log, why)
            self._logged_at, self._since_log = now, 0
