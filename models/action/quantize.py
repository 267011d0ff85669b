"""INT8 static quantization of the motion graph with ONNX Runtime, calibrated on real clips.

The motion stream is the whole per-frame cost of the package; the head is a few kFLOPs per
window and stays float. The report compares INT8 with FP32 window by window on the clips.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.action.config import ActionConfig
from models.action.data import list_clips
from models.action.export import DELTA, agreement, ort_window_scores, read_window_clip
from models.action.train import clean_deltas
from models.onnx_export import quantize_static_int8
from models.packaging import GraphFile, write_package
from pipeline.modelpkg import load_package

logger = logging.getLogger(__name__)

CALIBRATION_CLIPS = 24


def calibration_clips(folder: Path, cfg: ActionConfig) -> list[np.ndarray]:
    """Up to ``CALIBRATION_CLIPS`` clips of ``folder`` (class folders), decoded like the runtime."""
    clips = list_clips(folder, cfg.labels)
    pick = np.random.default_rng(cfg.seed).permutation(len(clips))[:CALIBRATION_CLIPS]
    return [read_window_clip(clips[i].path, cfg) for i in pick]


def quantize_package(package: Path, clips: Path | list[np.ndarray], cfg: ActionConfig) -> dict[str, Any]:
    """Replace the package's motion graph by an INT8 one; returns its agreement with FP32 on ``clips``
    (a folder of labelled clips, or decoded clips ``[F, I, I, 3]``)."""
    frames = calibration_clips(clips, cfg) if isinstance(clips, Path) else clips
    samples = np.concatenate([clean_deltas(f, cfg) for f in frames])
    int8 = quantize_static_int8(package / "motion.onnx", package / "motion.int8.onnx", DELTA, samples)
    diff, agree, total = agreement((ort_window_scores(package, f, cfg), ort_window_scores(package, f, cfg, int8.name))
                                   for f in frames)
    _repackage(package, int8)
    report = {"windows": total, "top1_agreement_vs_fp32": agree, "max_abs_prob_diff": diff}
    logger.info("INT8 motion graph: %s", report)
    return report


def _repackage(package: Path, int8_graph: Path) -> None:
    m = load_package(package).manifest
    (package / "motion.onnx").unlink()
    int8_graph.rename(package / "motion.onnx")
    graphs = [GraphFile(g.name, package / g.file, g.over, dict(g.inputs), list(g.outputs),
                        tuple(g.last_frame_only)) for g in m.graphs]
    fields = m.model_dump(mode="json", exclude={"graphs", "format"})
    fields["description"] = m.description + " Motion graph quantized to INT8 (ONNX Runtime static, QOperator)."
    write_package(package, graphs, **fields)
