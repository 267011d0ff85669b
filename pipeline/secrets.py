"""Secrets in the config: where they come from (environment, files) and how they are kept out of
everything vidwatch writes (logs, status lines, errors, alerts, metrics).

Config strings may reference secrets, so the YAML itself can be committed:

    source: "rtsp://admin:${CAM1_PASSWORD}@10.0.0.21/stream1"      # an environment variable
    source: "rtsp://admin:${file:/run/secrets/cam1}@10.0.0.21/s1"   # a file's content (trailing newline cut)
    note:   "costs $$5"                                              # $$ is a literal $

:func:`expand` substitutes them in every string value of the parsed YAML before validation and
remembers each substituted value; :func:`redact` is the one function every boundary that may show
a source or an error uses: it masks URL passwords (``scheme://user:***@host``), credential query
parameters (``?password=***``, ``token=``, ``key=``...) and every remembered secret value.
:class:`RedactingFilter` applies it to every log record as a second line of defence.
"""

from __future__ import annotations

import logging
import os
import re
import urllib.parse
from pathlib import Path
from typing import Any

MASK = "***"

# scheme://user:password@host -> scheme://user:***@host (the password may hold anything but '@' and '/')
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^\s:/@'\"]*):(?P<pw>[^\s@/'\"]*)@")
_SECRET_PARAMS = ("password", "passwd", "pass", "pwd", "token", "access_token", "auth", "key", "api_key",
                  "apikey", "secret", "signature", "sig", "credential", "credentials")
_QUERY_SECRET = re.compile(r"(?P<name>[?&;](?:" + "|".join(_SECRET_PARAMS) + r"))=(?P<value>[^&\s#'\"]*)",
                           re.IGNORECASE)
_REFERENCE = re.compile(r"\$\$|\$\{(?P<ref>[^}]*)\}")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MIN_SECRET_LEN = 3  # shorter values would mask ordinary text everywhere

_known: set[str] = set()


def remember(value: str) -> None:
    """Treat ``value`` as a secret from now on in this process (masked wherever it appears)."""
    if len(value) >= _MIN_SECRET_LEN:
        _known.add(value)


def known_secrets() -> list[str]:
    """The remembered secrets, to hand to a child process (``remember`` each there)."""
    return sorted(_known)


def redact(text: Any) -> str:
    """``text`` (anything: formatted with ``str``) with every credential masked."""
    out = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@" if m["pw"] else m[0], str(text))
    out = _QUERY_SECRET.sub(lambda m: f"{m['name']}={MASK}", out)
    for secret in sorted(_known, key=len, reverse=True):
        out = out.replace(secret, MASK)
    return out


def redact_url(url: str) -> str:
    """``url`` reduced to scheme, host, port and path: user info, query string and fragment (where
    tokens hide) dropped, for naming an endpoint whose query may carry any token (webhooks)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def url_password(url: str) -> str | None:
    """The password in ``url``'s user info, if any."""
    match = _URL_USERINFO.search(url)
    return match["pw"] if match and match["pw"] else None


def remember_config_sources(sources: list[str | int]) -> None:
    """Remember the passwords written literally in camera URLs, so they are masked even where a
    library reformats the URL (e.g. percent-decoded)."""
    for source in sources:
        if isinstance(source, str) and (pw := url_password(source)):
            remember(pw)


class RedactingFilter(logging.Filter):
    """Masks credentials in a log record's message and traceback; attach to every handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = redact(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_filter(root: logging.Logger | None = None) -> None:
    """Put a :class:`RedactingFilter` on every handler of the root logger (call after basicConfig)."""
    root = root or logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


# -- references in the config ----------------------------------------------------------------
def expand(data: Any, path: tuple[Any, ...] = ()) -> tuple[Any, list[tuple[tuple[Any, ...], str]]]:
    """Substitute ``${VAR}`` / ``${file:PATH}`` in every string of ``data``.

    Returns the new data and the problems as ``(yaml path, message)`` pairs, naming the missing
    variable or unreadable file (never a secret value)."""
    problems: list[tuple[tuple[Any, ...], str]] = []
    if isinstance(data, dict):
        out: dict[Any, Any] = {}
        for key, value in data.items():
            out[key], sub = expand(value, (*path, key))
            problems += sub
        return out, problems
    if isinstance(data, list):
        items = []
        for i, value in enumerate(data):
            item, sub = expand(value, (*path, i))
            items.append(item)
            problems += sub
        return items, problems
    if isinstance(data, str) and "$" in data:
        def substitute(match: re.Match[str]) -> str:
            if match[0] == "$$":
                return "$"
            value, problem = _resolve(match["ref"])
            if problem:
                problems.append((path, problem))
                return ""
            remember(value)
            return value

        return _REFERENCE.sub(substitute, data), problems
    return data, problems


def _resolve(ref: str) -> tuple[str, str | None]:
    if ref.startswith("file:"):
        name = ref.removeprefix("file:").strip()
        try:
            return Path(name).read_text(encoding="utf-8").rstrip("\r\n"), None
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            return "", f"secret file {name!r} cannot be read ({why}); create it or fix the path in ${{file:...}}"
    if not _ENV_NAME.match(ref):
        return "", (f"'${{{ref}}}' is not a valid reference: use ${{ENV_VAR}}, ${{file:/path/to/secret}}, "
                    f"or $$ for a literal $")
    if ref not in os.environ:
        return "", f"environment variable {ref} is not set; export it before starting vidwatch (or write $$ for a $)"
    return os.environ[ref], None
