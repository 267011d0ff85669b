"""Real Prometheus and mosquitto servers on loopback for tests (Debian packages)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


def require(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None)
    if path is None:
        pytest.skip(f"{binary} is not installed; run deploy/install-system-deps.sh (Debian package)")
    return path


@contextmanager
def _process(cmd: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def prometheus(tmp: Path, port: int, targets: list[str], scrape: dict[str, Any] | None = None,
               jobs: dict[str, dict[str, Any]] | None = None) -> Iterator[str]:
    """A Prometheus scraping ``targets`` every second as job ``vidwatch``; yields its base URL once it
    answers. ``scrape`` adds fields to that scrape config (``scheme``, ``basic_auth``, ``tls_config``);
    ``jobs`` adds more scrape configs by job name (each with its own ``static_configs``)."""
    binary = require("prometheus")
    config = tmp / "prometheus.yml"
    scrape_configs = [{"job_name": "vidwatch", "static_configs": [{"targets": targets}], **(scrape or {})},
                      *({"job_name": name, **job} for name, job in (jobs or {}).items())]
    config.write_text(json.dumps({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                                  "scrape_configs": scrape_configs}))
    cmd = [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{port}"]
    with _process(cmd, tmp / "prometheus.log"):
        url = f"http://127.0.0.1:{port}"
        _wait_http(f"{url}/-/ready", 30, tmp / "prometheus.log")
        yield url


def query(base: str, expr: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{base}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=5) as resp:
        return list(json.load(resp)["data"]["result"])


@contextmanager
def mosquitto(tmp: Path, port: int) -> Iterator[int]:
    binary = require("mosquitto")
    config = tmp / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    with _process([binary, "-c", str(config)], tmp / "mosquitto.log"):
        deadline = time.monotonic() + 10
        import socket

        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        yield port


def _wait_http(url: str, seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer in {seconds} s; log:\n{log.read_text()[-2000:]}")
