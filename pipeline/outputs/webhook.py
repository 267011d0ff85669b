"""Alerts POSTed as JSON to an HTTP endpoint (standard library ``urllib``; no extra dependency).

One request per alert event (``start`` and ``end``). Anything but a 2xx answer raises, so the sink
keeps the alert queued and retries it with backoff: delivery is at-least-once, and the
``Idempotency-Key`` header (``<alert id>:<state>``) lets a receiver drop the duplicates a retry
after a lost answer can cause.

Header values and the signing secret may hold credentials: they may name environment variables
(``"Bearer ${VIDWATCH_WEBHOOK_TOKEN}"``) so the YAML holds no secret, and they never appear in
logs, errors or the config's repr; the URL is shown without user info and query string. User info
in the URL (``https://user:pw@host/...``) becomes a Basic ``Authorization`` header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from pipeline.alerts import Alert
from pipeline.errors import VidwatchError
from pipeline.secrets import redact_url

OUTPUT_KEY = "webhook"
USER_AGENT = "vidwatch-webhook/1"
SIGNATURE_HEADER = "X-Vidwatch-Signature"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class WebhookOutputConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["webhook"] = "webhook"
    url: str = Field(description="http:// or https:// endpoint that takes one JSON alert per request")
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, SecretStr] = Field(default_factory=dict,
                                          description="extra headers; ${ENV_VAR} in a value is filled in")
    timeout_s: float = Field(5.0, gt=0, le=60, description="per request; the sink waits this long at most")
    secret: SecretStr | None = Field(None, description="HMAC-SHA256 of the body sent in X-Vidwatch-Signature")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urllib.parse.urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL with a host, got {redact_url(value)!r}")
        return value


def expand_env(value: str, what: str) -> str:
    """Fill ``${NAME}`` from the environment; an unset name is an error naming it (not its value)."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise VidwatchError(f"{what} refers to ${{{name}}}, which is not set in the environment; "
                                f"export it before starting vidwatch")
        return os.environ[name]

    return _ENV_REF.sub(fill, value)


def _split_userinfo(url: str) -> tuple[str, str | None]:
    """``https://user:pw@host/x`` -> (``https://host/x``, a Basic ``Authorization`` value), as curl does."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None:
        return url, None
    user = urllib.parse.unquote(parts.username)
    password = urllib.parse.unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    netloc = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), f"Basic {token}"


def unset_env_refs(config: WebhookOutputConfig) -> list[str]:
    """The ``${NAME}`` references in headers and secret that this environment does not set."""
    values = [v.get_secret_value() for v in config.headers.values()]
    if config.secret is not None:
        values.append(config.secret.get_secret_value())
    return sorted({name for value in values for name in _ENV_REF.findall(value) if name not in os.environ})


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would resend the credentials to another address: treat it as a failure instead."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


class WebhookOutput:
    def __init__(self, config: WebhookOutputConfig) -> None:
        self.config = config
        self.where = f"webhook {redact_url(config.url)}"
        self._headers = {name: expand_env(value.get_secret_value(), f"outputs webhook header {name}")
                         for name, value in config.headers.items()}
        secret = config.secret.get_secret_value() if config.secret is not None else None
        self._secret = expand_env(secret, "outputs webhook secret").encode() if secret is not None else None
        self._url, basic = _split_userinfo(config.url)
        if basic and not any(name.lower() == "authorization" for name in self._headers):
            self._headers["Authorization"] = basic
        self._opener = urllib.request.build_opener(_NoRedirects())

    def request(self, alert: Alert) -> urllib.request.Request:
        """The HTTP request for ``alert`` (public so tests and tools can inspect what is sent)."""
        body = alert.to_json().encode()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "Idempotency-Key": f"{alert.id}:{alert.state}", "X-Vidwatch-Event": f"alert.{alert.state}",
                   **self._headers}
        if self._secret is not None:
            digest = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"sha256={digest}"
        return urllib.request.Request(self._url, data=body, headers=headers, method=self.config.method)

    def emit(self, alert: Alert) -> None:
        try:
            with self._opener.open(self.request(alert), timeout=self.config.timeout_s) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            exc.close()
            raise VidwatchError(f"{self.where} answered HTTP {exc.code}; the alert stays queued") from None
        except (urllib.error.URLError, OSError) as exc:  # refused, DNS, TLS, timeout
            reason = getattr(exc, "reason", exc)
            raise VidwatchError(f"{self.where} could not be reached ({reason}); the alert stays queued") from None
        if not 200 <= status < 300:
            raise VidwatchError(f"{self.where} answered HTTP {status}; the alert stays queued")

    def close(self) -> None:
        pass
