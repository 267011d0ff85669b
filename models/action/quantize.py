"""INT8 static quantization of the neck graph with ONNX Runtime, calibrated on real clips.

Only the neck is quantized: the trunk is shared with other packages by sha256 (a quantized copy
would run separately and cost more than it saves), and the head is a few kFLOPs per window.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.action.config import ActionConfig
from models.action.data import list_clips
from models.action.export import NECK_OUTPUT, read_window_clip
from models.onnx_export import ort_session
from models.packaging import GraphFile, write_package
from models.trunk import TRUNK_OUTPUT
from pipeline.modelpkg import load_package

logger = logging.getLogger(__name__)

CALIBRATION_CLIPS = 24


def calibration_c4(package: Path, clips: list[np.ndarray]) -> list[np.ndarray]:
    trunk = ort_session(package / "trunk.onnx")
    return [trunk.run([TRUNK_OUTPUT], {"frames": frames})[0] for frames in clips]


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a list of c4 batches."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        # one frame at a time: the percentile calibrator stacks batches, which must be the same size
        self._it = iter([frame[None] for batch in batches for frame in batch])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {TRUNK_OUTPUT: batch}

    def rewind(self) -> None:  # pragma: no cover - part of the protocol
        pass


def quantize_neck(neck: Path, out: Path, batches: list[np.ndarray]) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(neck), str(pre))
    quantize_static(str(pre), str(out), _Reader(batches), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.99})
    pre.unlink()
    return out


def quantize_package(package: Path, calibration: Path, cfg: ActionConfig) -> dict[str, Any]:
    """Replace the package's neck by an INT8 one; returns fp32-vs-int8 agreement on the clips."""
    clips = list_clips(calibration, cfg.labels)
    pick = np.random.default_rng(cfg.seed).permutation(len(clips))[:CALIBRATION_CLIPS]
    frames = [read_window_clip(clips[i].path, cfg) for i in pick]
    c4 = calibration_c4(package, frames)
    fp32 = [ort_session(package / "neck.onnx").run([NECK_OUTPUT], {TRUNK_OUTPUT: x})[0] for x in c4]
    int8_file = quantize_neck(package / "neck.onnx", package / "neck.int8.onnx", c4)
    got = [ort_session(int8_file).run([NECK_OUTPUT], {TRUNK_OUTPUT: x})[0] for x in c4]
    head = ort_session(package / "head.onnx")
    agree, total, diff = 0, 0, 0.0
    for a, b in zip(fp32, got, strict=True):
        wa, wb = (np.stack([f[s:s + cfg.frames] for s in range(len(f) - cfg.frames + 1)]) for f in (a, b))
        pa, pb = (head.run(None, {NECK_OUTPUT: w})[0] for w in (wa, wb))
        agree, total = agree + int((pa.argmax(1) == pb.argmax(1)).sum()), total + len(pa)
        diff = max(diff, float(np.abs(pa - pb).max()))
    _repackage(package, int8_file)
    return {"windows": total, "top1_agreement_vs_fp32": agree / total, "max_abs_prob_diff": diff}


def _repackage(package: Path, int8_neck: Path) -> None:
    pkg = load_package(package)
    m = pkg.manifest
    (package / "neck.onnx").unlink()
    int8_neck.rename(package / "neck.onnx")
    graphs = [GraphFile(g.name, package / g.file, g.over, dict(g.inputs), list(g.outputs)) for g in m.graphs]
    fields = m.model_dump(mode="json", exclude={"graphs", "format"})
    fields["description"] = m.description + " Neck quantized to INT8 (ONNX Runtime static, QDQ)."
    write_package(package, graphs, **fields)
