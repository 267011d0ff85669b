"""ONNX Runtime (CPU) vs PyTorch on our two graphs, and INT8 vs FP32 in ONNX Runtime.

Models, both EfficientNet-Lite0 with the ImageNet weights, exported into a temporary folder:

- ``trunk``: uint8 NHWC 224x224 frames -> ``c4`` (what the inference stage runs per frame),
  via ``models.trunk.build_trunk``;
- ``full``: normalized float NCHW 224x224 -> 1000 logits, via ``models.onnx_export.export_onnx``.

ORT sessions use the pipeline's own ``session_options`` (graph optimization ALL, sequential,
``intra_op_threads``); torch runs eager under ``inference_mode`` with ``torch.set_num_threads``.
Engines take turns in blocks (``time_interleaved``) so their ratio survives background load.

INT8: ``quantize_static`` (QOperator, per-channel int8 weights, uint8 activations, MinMax)
calibrated on real frames of ``shared/data/samples/*.mp4``; accuracy on *other* frames of the same
videos. QOperator, not QDQ: on these graphs QDQ ran no faster than FP32 (the SAME-padding ``Pad``
nodes, fed by shape arithmetic, keep ORT from fusing DQ -> Conv -> Q), QOperator ran ~1.8x faster
with the same outputs.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from benchmarks.common import machine_info, main, ratio, summarize, time_interleaved
from models.backbone import load_pretrained
from models.onnx_export import export_onnx
from models.trunk import Trunk, build_trunk
from pipeline.engines.onnxruntime_engine import session_options

SIZE = 224
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "samples"
CALIBRATION_FRAMES = 32
EVAL_FRAMES = 16
LITE_MEAN, LITE_STD = 127.0, 128.0  # models.backbone.SPEC, scalar on every channel


@dataclass(frozen=True)
class Model:
    name: str
    path: Path
    module: torch.nn.Module
    input_name: str
    prepare: Callable[[np.ndarray], np.ndarray]  # uint8 NHWC frames -> this graph's input


def _normalized_nchw(frames: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(((frames.astype(np.float32) - LITE_MEAN) / LITE_STD).transpose(0, 3, 1, 2))


def export_models(folder: Path) -> dict[str, Model]:
    with contextlib.redirect_stdout(sys.stderr):  # build_trunk prints its parity line
        trunk_path = build_trunk(folder / "trunk.onnx", SIZE, SIZE)
    full = load_pretrained().eval()
    full_path = export_onnx(
        full, (torch.zeros(1, 3, SIZE, SIZE),), folder / "full.onnx", ["x"], ["logits"],
        {"x": {0: "n"}, "logits": {0: "n"}},
    )  # fmt: skip
    return {
        "trunk": Model("trunk", trunk_path, Trunk(load_pretrained()).eval(), "frames", lambda f: f),
        "full": Model("full", full_path, full, "x", _normalized_nchw),
    }


def real_frames(count: int, phase: float) -> tuple[np.ndarray, str]:
    """``count`` RGB 224x224 frames spread evenly over the sample videos; ``phase`` in [0, 1)
    shifts the picks so calibration and evaluation frames differ. Random if no videos."""
    videos = sorted(SAMPLES.glob("*.mp4"))
    if not videos:
        rng = np.random.default_rng(int(phase * 1000))
        return rng.integers(0, 256, (count, SIZE, SIZE, 3), dtype=np.uint8), "random (no sample videos)"
    per_video = -(-count // len(videos))
    frames = [f for video in videos for f in _video_frames(video, per_video, phase)]
    return np.stack(frames[:count]), ", ".join(v.name for v in videos)


def _video_frames(path: Path, count: int, phase: float) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    try:
        for i in range(count):
            cap.set(cv2.CAP_PROP_POS_FRAMES, int((i + phase) * total / count))
            ok, frame = cap.read()
            if ok:
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                yield cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    finally:
        cap.release()


def ort_session(path: Path, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = session_options({"intra_op_threads": threads})
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _timing(quick: bool, batch: int) -> tuple[int, int]:
    """(rounds, calls per round): fewer calls for big batches, same order of seconds per cell."""
    calls = max(1, (8 if quick else 24) // batch)
    return (2 if quick else 3), calls


def _runner(session: Any, input_name: str, x: np.ndarray) -> Callable[[], object]:
    return lambda: session.run(None, {input_name: x})


def _torch_runner(module: torch.nn.Module, x: np.ndarray) -> Callable[[], object]:
    xt = torch.from_numpy(x)

    def call() -> None:
        with torch.inference_mode():
            module(xt)

    return call


def compare_engines(
    model: Model, frames: np.ndarray, batches: list[int], threads: list[int], quick: bool
) -> dict[str, Any]:
    """ORT vs torch, per thread count and batch size: median ms and torch/ORT time ratio."""
    rows: dict[str, Any] = {}
    for t in threads:
        session = ort_session(model.path, t)
        torch.set_num_threads(t)
        for b in batches:
            x = model.prepare(frames[:b])
            fns = {"ort": _runner(session, model.input_name, x), "torch": _torch_runner(model.module, x)}
            times = time_interleaved(fns, *_timing(quick, b))
            ort_ms, torch_ms = summarize(times["ort"]), summarize(times["torch"])
            rows[f"threads{t}_batch{b}"] = {
                "ort": ort_ms,
                "torch": torch_ms,
                "ort_images_per_s": round(b / ort_ms["median_ms"] * 1e3, 1),
                "ort_vs_torch_speedup": ratio(torch_ms["median_ms"], ort_ms["median_ms"]),
            }
    return rows


class _FrameReader:
    """``CalibrationDataReader`` over a stack of inputs, a few frames per call."""

    def __init__(self, name: str, inputs: np.ndarray, batch: int = 8) -> None:
        self._batches = iter([{name: inputs[i : i + batch]} for i in range(0, len(inputs), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


@contextlib.contextmanager
def _root_log_level(level: int) -> Iterator[None]:
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(before)


def quantize(model: Model, calibration: np.ndarray, folder: Path) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = folder / f"{model.name}.prep.onnx"
    quant_pre_process(str(model.path), str(prepared))
    out = folder / f"{model.name}.int8.onnx"
    reader = _FrameReader(model.input_name, model.prepare(calibration))
    CalibrationDataReader.register(_FrameReader)
    # Calibrators print progress; the quantizer warns on the root logger about every int64 shape
    # tensor of the SAME-padding arithmetic (harmless: those are not quantized).
    with contextlib.redirect_stdout(sys.stderr), _root_log_level(logging.ERROR):
        quantize_static(
            str(prepared), str(out), reader, quant_format=QuantFormat.QOperator, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
    return out


def output_agreement(fp32: np.ndarray, int8: np.ndarray) -> dict[str, float]:
    """How far INT8 outputs are from FP32 on the same frames."""
    a, b = fp32.reshape(len(fp32), -1), int8.reshape(len(int8), -1)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    agreement = {
        "max_abs_diff": float(np.abs(a - b).max()),
        "fp32_max_abs": float(np.abs(a).max()),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
    }
    if fp32.ndim == 2:  # logits
        agreement["top1_agreement"] = float((a.argmax(1) == b.argmax(1)).mean())
    return {k: round(v, 5) for k, v in agreement.items()}


def compare_int8(model: Model, int8_path: Path, frames: np.ndarray, batches: list[int], threads: list[int],
                 quick: bool) -> dict[str, Any]:  # fmt: skip
    x_eval = model.prepare(frames)
    fp32_s, int8_s = ort_session(model.path, 1), ort_session(int8_path, 1)
    rows: dict[str, Any] = {
        "accuracy": output_agreement(fp32_s.run(None, {model.input_name: x_eval})[0],
                                     int8_s.run(None, {model.input_name: x_eval})[0]),
    }  # fmt: skip
    for t in threads:
        fp32_s, int8_s = ort_session(model.path, t), ort_session(int8_path, t)
        for b in batches:
            fns = {kind: _runner(s, model.input_name, x_eval[:b]) for kind, s in (("fp32", fp32_s), ("int8", int8_s))}
            times = time_interleaved(fns, *_timing(quick, b))
            fp32_ms, int8_ms = summarize(times["fp32"]), summarize(times["int8"])
            rows[f"threads{t}_batch{b}"] = {
                "fp32": fp32_ms,
                "int8": int8_ms,
                "int8_vs_fp32_speedup": ratio(fp32_ms["median_ms"], int8_ms["median_ms"]),
            }
    return rows


def run(quick: bool) -> dict[str, Any]:
    logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    threads = [1, 2]
    batches = [1, 8, 16]
    int8_batches = [8] if quick else [1, 8, 16]
    calibration, source = real_frames(CALIBRATION_FRAMES, 0.0)
    evaluation, _ = real_frames(EVAL_FRAMES, 0.5)
    result: dict[str, Any] = {"machine": machine_info(), "quick": quick, "frames": source}
    with tempfile.TemporaryDirectory() as tmp:
        models = export_models(Path(tmp))
        for name, model in models.items():
            result[name] = {"ort_vs_torch": compare_engines(model, evaluation, batches, threads, quick)}
            int8_path = quantize(model, calibration, Path(tmp))
            result[name]["int8_vs_fp32"] = compare_int8(model, int8_path, evaluation, int8_batches, threads, quick)
    result["ort_vs_torch_speedup"] = {
        f"{name}_{cell}": row["ort_vs_torch_speedup"]
        for name in models
        for cell, row in result[name]["ort_vs_torch"].items()
    }
    return result


if __name__ == "__main__":
    main(run)
