"""Shared fixtures: real model packages, real data, free loopback ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MODELS_DIR = ROOT / "build" / "models"
PEOPLE_CLIP = ROOT / "deploy" / "samples" / "people.mp4"


def scrape_metrics(port: int) -> str:
    """The text of http://127.0.0.1:PORT/metrics, or "" while nothing answers there."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The shipped packages (``make models``); the demo anomaly package is built if missing."""
    if not (MODELS_DIR / "demo-anomaly" / "manifest.json").exists():
        from models import calibrated_anomaly
        from models.build import INPUT_SIZE, trunk_path

        calibrated_anomaly.build(MODELS_DIR, trunk_path(MODELS_DIR), *INPUT_SIZE)
    return MODELS_DIR


@pytest.fixture(scope="session")
def demo_package_path(models_dir: Path) -> Path:
    return models_dir / "demo-anomaly"


@pytest.fixture
def port() -> int:
    return free_port()
