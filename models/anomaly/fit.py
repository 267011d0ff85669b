"""Fit the anomaly package on normal footage: features -> numpy fitter -> graphs + state + manifest.

Features are computed by the runtime's own pieces (the trunk graph through a pipeline engine,
``pipeline.features.flow``) and fitted by the same numpy fitter live calibration runs, so an
offline-fitted package and a camera that calibrated itself differ only in the footage.
"""

from __future__ import annotations

import logging
import re
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.anomaly.footage import FootageError, find_clips, read_clip
from models.anomaly.scorer import MOTION_STATE_INPUTS, OUTPUTS, STATE_INPUTS, export_scorer
from models.backbone import SPEC
from models.packaging import GraphFile, write_package
from models.trunk import TRUNK_OUTPUT, build_trunk
from pipeline.calibration import FITTERS, motion_only
from pipeline.engines import create_engine
from pipeline.features import create_feature
from pipeline.features.flow import CHANNELS, KIND, borrow_first, grid_shape

logger = logging.getLogger(__name__)

FITTER = "anomaly_motion_appearance"
APPEARANCE, MOTION = f"trunk.{TRUNK_OUTPUT}", "runtime.flow"


@dataclass(frozen=True)
class AnomalyConfig:
    """Every choice of the anomaly package, written to its manifest."""

    height: int = 240
    width: int = 360
    fps: float = 10.0  # flow magnitudes are in pixels per frame at this rate
    window_frames: int = 9  # alert score = mean of the window's per-frame peaks
    # "peak": a frame's own peak; "window": the window mean (temporal smoothing: a weak far-field mover adds up,
    # a brief near-field spike does not; README round 10)
    frame_score: str = "window"
    flow_preset: str = "medium"  # DIS preset; every cheaper one measured misses the rule (README rounds 3-5)
    flow_scale: float = 1.0  # DIS on the input downscaled by this (cells of 16*scale px there: same grid)
    flow_far_rows: int = 0  # top cell rows taking a second, fine DIS pass on the far-field band (0: none)
    flow_far_preset: str = "medium"  # that pass's DIS preset, at full resolution (README round 4)
    flow_first: str = "next"  # a run's first frame borrows the second frame's flow ("zero": none; README round 3)
    flow_quantile: float = 0.9  # speed quantile per 16-px cell; higher keeps small far-field movers
    calibration_seconds: float = 120.0
    fit: dict[str, Any] = field(default_factory=lambda: {
        # motion only, statistics per cell, only more speed / moving pixels than normal counts: chosen by nested CV
        # on the other test clips and the far-field probe together (README round 10; rounds 2-9 shipped
        # per-row statistics and appearance weight 1)
        "appearance": APPEARANCE, "motion": MOTION, "bank_size": 64, "appearance_weight": 0.0,
        "var_floor": 0.01, "part_quantile": 0.99, "quantile": 0.995, "pool": "cell", "motion_mode": "faster",
        "appearance_pool": "cell",
        "bank_rows": True,  # a row memory stored once per row, [h, M, C] (README round 6)
        "appearance_frames": "last",  # windows read their last frame's appearance only (README round 7)
        "persist": False})  # temporal persistence in the window graph: its rule was not met (README round 8)

    @property
    def flow_spec(self) -> dict[str, Any]:
        spec = {"kind": KIND, "height": self.height, "width": self.width, "cell": 16, "preset": self.flow_preset,
                "quantile": self.flow_quantile}
        # scale 1 left out: feature-cache keys of earlier runs stay valid (the cache ignores ``first``)
        if self.flow_scale != 1.0:
            spec["scale"] = self.flow_scale
        if self.flow_far_rows:  # likewise left out without a band
            spec["far_rows"], spec["far_preset"] = self.flow_far_rows, self.flow_far_preset
        spec["first"] = self.flow_first
        return spec

    @property
    def grid(self) -> tuple[int, int]:
        return grid_shape(self.height, self.width, 16)


def extract_features(clips: list[Path], trunk: Path | None, config: AnomalyConfig, batch: int = 16,
                     threads: int = 2) -> dict[str, np.ndarray]:
    """``trunk.c4`` and ``runtime.flow`` of every frame of every clip (flow restarts per clip); ``runtime.flow``
    only with ``trunk`` None (a motion-only design)."""
    engine = create_engine("onnxruntime", trunk, {"intra_op_threads": threads}) if trunk is not None else None
    c4_parts: list[np.ndarray] = []
    flow_parts: list[np.ndarray] = []
    for clip in clips:
        flow = create_feature(config.flow_spec)
        frames = list(read_clip(clip, config.height, config.width, config.fps))
        stats = np.stack([flow(frame) for frame in frames])
        # a clip is one run of consecutive frames: its first frame is handled as live after a gap
        flow_parts.extend(borrow_first(stats) if config.flow_first == "next" else stats)
        for start in range(0, len(frames), batch) if engine is not None else ():
            c4_parts.append(engine.run({"frames": np.stack(frames[start:start + batch])})[TRUNK_OUTPUT])
        logger.info("features of %s: %d frames", clip, len(frames))
    features = {MOTION: np.stack(flow_parts)}
    return {APPEARANCE: np.concatenate(c4_parts), **features} if c4_parts else features


def fit_package(normal: Path, out: Path, seed: int = 0, trunk: Path | None = None, name: str | None = None,
                config: AnomalyConfig | None = None) -> Path:
    """Fit on every clip under ``normal`` and write the package folder ``out``. A design whose appearance
    weight is 0 is packaged motion only: no trunk graph, no appearance memory (``trunk`` is then unused)."""
    config = config or AnomalyConfig()
    started = time.perf_counter()
    clips = find_clips(normal)
    only_motion = motion_only(config.fit)
    with tempfile.TemporaryDirectory() as tmp:
        trunk = None if only_motion else _usable_trunk(trunk, config, Path(tmp))
        features = extract_features(clips, trunk, config)
        frames = len(features[MOTION])
        if frames < 2 * config.window_frames:
            raise FootageError(normal, f"holds {frames} frames; fitting needs at least {2 * config.window_frames}")
        state = FITTERS.get(FITTER)(features, config.window_frames, {**config.fit, "seed": seed})
        channels = 0 if only_motion else features[APPEARANCE].shape[1]
        scorer = export_scorer(Path(tmp) / "anomaly.onnx", state, config.window_frames, channels, config.grid,
                               config.frame_score, bool(config.fit.get("persist", False)))
        fit_info = {"clips": len(clips), "frames": frames, "seed": seed,
                    "seconds": round(time.perf_counter() - started, 1)}
        write_package(out, _graphs(trunk, scorer, config), state,
                      **_manifest(name or _package_name(out), config, fit_info))
    logger.info("fitted %s on %d frames of %d clips in %.0f s", out, fit_info["frames"], len(clips),
                time.perf_counter() - started)
    return out


def _usable_trunk(trunk: Path | None, config: AnomalyConfig, tmp: Path) -> Path:
    """The given trunk when it takes frames of the package input size; else a freshly exported one."""
    if trunk is not None:
        import onnxruntime as ort

        shape = ort.InferenceSession(str(trunk), providers=["CPUExecutionProvider"]).get_inputs()[0].shape
        if list(shape[1:3]) == [config.height, config.width]:
            return trunk
        logger.warning("trunk %s takes %s frames, the package needs %dx%d: exporting its own", trunk,
                       shape[1:3], config.height, config.width)
    return build_trunk(tmp / "trunk.onnx", config.height, config.width)


def _graphs(trunk: Path | None, scorer: Path, config: AnomalyConfig) -> list[GraphFile]:
    if trunk is None:  # motion only: the window graph reads the flow feature and the motion state
        return [GraphFile("anomaly", scorer, "window",
                          {"flow": MOTION, **{k: f"state.{k}" for k in MOTION_STATE_INPUTS}}, list(OUTPUTS))]
    scorer_inputs = {"c4": APPEARANCE, "flow": MOTION, **{k: f"state.{k}" for k in STATE_INPUTS}}
    # "last": the window graph broadcasts its last frame's appearance over the window's motion maps
    last = ("c4",) if config.fit.get("appearance_frames", "all") == "last" else ()
    return [GraphFile("trunk", trunk, "frame", {"frames": "frames"}, [TRUNK_OUTPUT]),
            GraphFile("anomaly", scorer, "window", scorer_inputs, list(OUTPUTS), last)]


def _package_name(out: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", out.resolve().name) or "anomaly"


def _manifest(name: str, config: AnomalyConfig, fit_info: dict[str, Any]) -> dict[str, Any]:
    quantile = config.fit["quantile"]
    return {
        "name": name, "version": "1.0.0", "task": "anomaly",
        "description": "Unsupervised anomaly detection fitted on a camera's normal footage: per-location "
                       "Gaussian of DIS optical-flow cell statistics"
                       + ("" if motion_only(config.fit) else " + k-NN distance of EfficientNet-Lite0 c4 patches "
                                                             "to a coreset per cell or per image row")
                       + f"; score 1.0 = the {quantile} quantile of held-out normal window scores.",
        "input": {"height": config.height, "width": config.width, "mean": SPEC.mean, "std": SPEC.std},
        "window": {"frames": config.window_frames, "stride": 1, "dynamic_frames": True, "fps": config.fps},
        "runtime_features": {"flow": config.flow_spec},
        "labels": ["anomaly"], "alert_label": "anomaly",
        "scores": "anomaly.scores", "frame_scores": "anomaly.frame_scores", "heatmap": "anomaly.heatmap",
        "threshold": 1.0,
        "calibration": {"fit": FITTER, "collect": [MOTION] if motion_only(config.fit) else [APPEARANCE, MOTION],
                        "seconds": config.calibration_seconds,
                        "params": dict(config.fit)},
        "outputs_doc": {
            "scores": f"[N,1] mean over the window of each frame's peak anomaly; 1.0 = fitted threshold "
                      f"({quantile} quantile of held-out normal window scores)",
            "frame_scores": ("[N,T] each frame's peak anomaly (max over locations), same scale"
                             if config.frame_score == "peak" else
                             "[N,T] frame k: the mean of the window's peaks k..T-1 (temporal smoothing: the "
                             "window's first frame reads the window score, the mean peak of itself and the "
                             f"{config.window_frames - 1} frames after it; a clip's last frames, as far as it goes)"),
            "heatmap": f"[N,{config.grid[0]},{config.grid[1]}] max over the window of the per-location anomaly, "
                       f"same scale; one cell = 16x16 input pixels",
            "runtime.flow": f"[4,h,w] DIS flow per 16x16 cell: {', '.join(CHANNELS)}",
        },
        "metrics": {"fit": {**fit_info, "threshold_quantile": quantile, "config": asdict(config)}},
    }
