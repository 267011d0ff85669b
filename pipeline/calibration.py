"""Fitters: turn features collected from normal footage into a package's ``state`` arrays.

A fitter runs in the inference stage when a camera calibrates live, and in ``models/`` when a
package is fitted offline, so it is numpy only (no torch). It receives the per-frame sources
named in the manifest's ``calibration.collect``, each stacked over the collected frames as
``[F, ...]``, and returns the arrays the graphs read as ``state.<key>``. Live calibration also
passes ``collected[SEGMENT]`` (``[F]`` ints): frames with different values are not consecutive (a
gap in the camera's frames, e.g. the motion gate held some back), so no window may span them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pipeline.registry import Registry

Fitter = Callable[[Mapping[str, np.ndarray], int, Mapping[str, Any]], dict[str, np.ndarray]]

FITTERS: Registry[Fitter] = Registry("fitter")
SEGMENT = "segment"
# Per fitter (same name), optional: why a camera's saved state cannot feed this package's graphs (None: it
# can). A package may predate the state layout a newer fitter saved; the camera then recalibrates.
StateCheck = Callable[[Mapping[str, np.ndarray], Mapping[str, Any]], str | None]
STATE_CHECKS: Registry[StateCheck] = Registry("saved-state check")


APPEARANCE_FRAMES = ("all", "last")


def last_frame_window_scores(motion: np.ndarray, appearance: np.ndarray, length: int,
                             segments: np.ndarray | None = None) -> np.ndarray:
    """Unscaled scores of every run of ``length`` consecutive frames (inside one segment) when a window
    reads only its last frame's appearance (fit parameter ``appearance_frames="last"``): the mean over
    the window's frames k of ``max(motion[k] + appearance[last])``; ``motion``/``appearance`` weighted."""
    f = len(motion)
    if f < length:
        raise ValueError(f"need at least {length} frames to fit, got {f}")
    flat_motion = motion.reshape(f, -1)
    flat_appearance = appearance.reshape(f, -1)
    peaks = np.stack([(flat_motion[k:f - length + 1 + k] + flat_appearance[length - 1:]).max(axis=1)
                      for k in range(length)])  # [length, W]: frame k of each window with its last appearance
    return _inside_segments(peaks.mean(axis=0).astype(np.float32), length, segments)


def persist_maps(maps: np.ndarray) -> np.ndarray:
    """Temporal persistence inside each window, ``maps [..., T, h, w]`` -> the same shape.

    A location keeps its anomaly only as far as a neighbouring frame of the window shows as much within
    one cell of it: ``P_t = min(M_t, maxpool3x3(M_u))``, ``u = t + 1`` (``t - 1`` for the window's last
    frame; a 1-frame window, itself). A mover crosses at most one 16-px cell per frame at surveillance
    speeds, so an object's evidence survives, while a one-frame blip (a flow error on a walker, a brief
    occlusion) does not (models/anomaly/README.md round 8, fit parameter ``persist``)."""
    t = maps.shape[-3]
    frames = np.arange(1, t + 1)
    neighbour = np.take(maps, np.maximum(np.where(frames >= t, frames - 2, frames), 0), axis=-3)
    padded = np.pad(neighbour, [(0, 0)] * (maps.ndim - 2) + [(1, 1), (1, 1)], constant_values=-np.inf)
    h, w = maps.shape[-2:]
    pooled = padded[..., :h, :w].copy()
    for i, j in ((i, j) for i in range(3) for j in range(3) if i or j):
        np.maximum(pooled, padded[..., i:i + h, j:j + w], out=pooled)
    return np.minimum(maps, pooled)


def window_stack(motion: np.ndarray, appearance: np.ndarray, length: int, appearance_frames: str = "all",
                 starts: np.ndarray | None = None) -> np.ndarray:
    """Maps ``[W, length, h, w]`` of the windows starting at ``starts`` (default: every run of ``length``
    consecutive frames), each frame ``motion[k] + appearance[k]``, or with ``appearance_frames="last"``
    ``motion[k] + appearance[window end]``; ``motion``/``appearance`` ``[F, h, w]``, weighted."""
    f = len(motion)
    if f < length:
        raise ValueError(f"need at least {length} frames to fit, got {f}")
    starts = np.arange(f - length + 1) if starts is None else starts
    frames = starts[:, None] + np.arange(length)  # [W, length]
    looks = frames[:, -1:] if appearance_frames == "last" else frames
    return (motion[frames] + appearance[looks]).astype(np.float32)


def sliding_window_means(frames: np.ndarray, length: int, segments: np.ndarray | None = None) -> np.ndarray:
    """Means of every run of ``length`` consecutive rows: ``[F, ...] -> [W, ...]``; ``W = F - length + 1``
    without ``segments``, else only the runs that lie inside one segment (never across a gap)."""
    if frames.shape[0] < length:
        raise ValueError(f"need at least {length} frames to fit, got {frames.shape[0]}")
    csum = np.cumsum(frames.astype(np.float64), axis=0)
    csum = np.concatenate([np.zeros_like(csum[:1]), csum], axis=0)
    return _inside_segments(((csum[length:] - csum[:-length]) / length).astype(np.float32), length, segments)


def _inside_segments(windows: np.ndarray, length: int, segments: np.ndarray | None) -> np.ndarray:
    """The rows of ``windows`` (one per run of ``length`` consecutive frames) whose run lies in one segment."""
    if segments is None:
        return windows
    inside = segments[length - 1:] == segments[:len(segments) - length + 1]
    if not inside.any():
        raise ValueError(f"no run of {length} consecutive frames to fit on (gaps split every run)")
    return windows[inside]


@FITTERS.register("window_gaussian")
def fit_window_gaussian(collected: Mapping[str, np.ndarray], window_frames: int,
                        params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Per-location diagonal Gaussian of window-mean feature maps ``[C, h, w]``.

    The score of a window is the largest per-location mean squared z-score; ``scale`` maps the
    ``quantile`` of calibration scores to 1.0, so a score above 1 is "less normal than
    ``quantile`` of what the camera showed while calibrating".
    """
    source = str(params.get("source", next(k for k in collected if k != SEGMENT)))
    quantile = float(params.get("quantile", 0.995))
    var_floor = float(params.get("var_floor", 1e-2))
    windows = sliding_window_means(collected[source], window_frames, collected.get(SEGMENT))  # [W, C, h, w]
    mean = windows.mean(axis=0)
    inv_std = 1.0 / np.sqrt(windows.var(axis=0) + var_floor)
    z2 = (((windows - mean) * inv_std) ** 2).mean(axis=1)  # [W, h, w]
    scores = z2.reshape(len(z2), -1).max(axis=1)
    threshold = max(float(np.quantile(scores, quantile)), 1e-6)
    return {"mean": mean.astype(np.float32), "inv_std": inv_std.astype(np.float32),
            "scale": np.array([1.0 / threshold], dtype=np.float32)}


# -- anomaly: per-location motion Gaussian + appearance k-NN memory --------------------------
# The numpy scorer below is the reference the exported ONNX window graph is tested against
# (models/anomaly/scorer.py); the fitter needs it to put the threshold on held-out normal scores.

def coreset_banks(features: np.ndarray, size: int, seed: int, proj_dim: int = 32) -> np.ndarray:
    """Greedy k-center coreset per location: ``[L, F, C] -> [L, min(size, F), C]``.

    Selection runs on a seeded random projection (PatchCore's trick) to stay fast on a CPU; the
    kept rows are the original features. Same seed and input give the same bank.
    """
    n_loc, n, channels = features.shape
    size = min(size, n)
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((channels, min(proj_dim, channels))).astype(np.float32) / np.sqrt(proj_dim)
    x = features @ proj  # [L, F, P]
    x_sq = (x**2).sum(-1)
    chosen = np.empty((n_loc, size), np.int64)
    chosen[:, 0] = rng.integers(0, n, n_loc)
    rows = np.arange(n_loc)
    nearest = np.full((n_loc, n), np.inf, np.float32)
    for i in range(1, size + 1):
        centre = x[rows, chosen[:, i - 1]]  # [L, P]
        d2 = x_sq - 2 * (x @ centre[:, :, None])[..., 0] + x_sq[rows, chosen[:, i - 1]][:, None]
        nearest = np.minimum(nearest, d2)
        if i < size:
            chosen[:, i] = nearest.argmax(axis=1)
    return features[rows[:, None], chosen]


def anomaly_maps(c4: np.ndarray | None, flow: np.ndarray, state: Mapping[str, np.ndarray]) -> np.ndarray:
    """Per-frame anomaly maps ``[F, h, w]`` from ``c4 [F, C, h, w]`` and ``flow [F, 4, h, w]``.

    map = w_motion * mean_k z_k^2 (per-location Gaussian of the flow cell statistics)
        + w_appearance * distance to the nearest normal c4 feature at that location.
    A motion-only state (no ``bank``, see :func:`motion_only`) takes no ``c4``: its map is the motion term.
    """
    weights = state["weights"]
    if "bank" not in state:
        return (weights[0] * motion_map(flow, state)).astype(np.float32)
    if c4 is None:
        raise ValueError("this anomaly state has an appearance memory: its maps need the c4 features")
    motion, appearance = anomaly_parts(c4, flow, state)
    return (weights[0] * motion + weights[1] * appearance).astype(np.float32)


def anomaly_parts(c4: np.ndarray, flow: np.ndarray, state: Mapping[str, np.ndarray],
                  chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Unweighted motion and appearance maps, each ``[F, h, w]``."""
    return motion_map(flow, state), appearance_map(c4, state, chunk)


def motion_map(flow: np.ndarray, state: Mapping[str, np.ndarray]) -> np.ndarray:
    """Mean squared (clipped) z-score of the flow cell statistics ``[F, 4, h, w]`` -> ``[F, h, w]``."""
    z = np.maximum((flow - state["flow_mean"]) * state["flow_inv_std"], state["flow_lower"])
    return (z**2).mean(axis=1)


def bank_group(bank: np.ndarray, h: int, w: int) -> int:
    """How many consecutive (row-major) locations read each memory of ``bank [B, M, C]``: 1 for a memory
    per cell (``B = h*w``), ``w`` for one per image row (``B = h``, a row pool stored once per row)."""
    if bank.ndim != 3 or bank.shape[0] not in (h * w, h):
        raise ValueError(f"appearance bank of shape {tuple(bank.shape)} fits neither a memory per cell "
                         f"[{h * w}, M, C] nor one per image row [{h}, M, C] of the {h}x{w} cell grid; "
                         f"refit the package (vidwatch fit anomaly) or recalibrate the camera")
    return h * w // bank.shape[0]


def appearance_map(c4: np.ndarray, state: Mapping[str, np.ndarray], chunk: int = 64) -> np.ndarray:
    """Distance of each ``c4 [F, C, h, w]`` patch to the nearest entry of its location's memory -> ``[F, h, w]``.

    ``state["bank"]`` is ``[h*w, M, C]`` (a memory per cell) or ``[h, M, C]`` (one per image row, read
    by every cell of the row: the queries of a row are stacked against its one memory)."""
    f, channels, h, w = c4.shape
    bank, bank_sq = state["bank"], state["bank_sq"]
    group = bank_group(bank, h, w)
    appearance = np.empty((f, h * w), np.float32)
    for start in range(0, f, chunk):
        q = c4[start:start + chunk].reshape(-1, channels, h * w).transpose(2, 0, 1)  # [L, n, C]
        n = q.shape[1]
        q = q.reshape(len(bank), group * n, channels)  # [B, group*n, C]: a memory's locations, row-major
        d2 = (q**2).sum(-1)[..., None] - 2 * q @ bank.transpose(0, 2, 1) + bank_sq[:, None, :]
        appearance[start:start + chunk] = np.sqrt(np.maximum(d2.min(axis=-1), 0.0)).reshape(h * w, n).T
    return appearance.reshape(f, h, w)


FRAME_SCORES = ("peak", "window")


def suffix_means(peaks: np.ndarray) -> np.ndarray:
    """``[..., T]`` -> element k's mean of ``peaks[..., k:]`` (a window frame's own peak and the next ones')."""
    sums = np.cumsum(peaks[..., ::-1], axis=-1)[..., ::-1]
    return (sums / np.arange(peaks.shape[-1], 0, -1)).astype(peaks.dtype)


def anomaly_window(maps: np.ndarray, scale: np.ndarray, frame_score: str = "peak",
                   persist: bool = False) -> dict[str, np.ndarray]:
    """``maps [N, T, h, w]`` -> ``scores [N, 1]`` (mean over T of each frame's peak),
    ``frame_scores [N, T]`` and ``heatmap [N, h, w]`` (max over T), all scaled.

    ``frame_score="peak"``: each frame's own peak. ``"window"``: frame k reads the mean of the window's
    peaks k..T-1 (temporal smoothing: a frame that starts a window reads the window score, the mean of its
    peak and the next T-1; a clip's last frames, which start no window, read their own and the following
    peaks, never earlier frames'). ``persist``: the maps pass :func:`persist_maps` first."""
    if frame_score not in FRAME_SCORES:
        raise ValueError(f"unknown frame_score {frame_score!r}; valid: {', '.join(FRAME_SCORES)}")
    if persist:
        maps = persist_maps(maps)
    peaks = maps.reshape(*maps.shape[:2], -1).max(axis=-1) * scale[0]
    scores = peaks.mean(axis=1, keepdims=True)
    frame_scores = suffix_means(peaks) if frame_score == "window" else peaks
    return {"scores": scores, "frame_scores": frame_scores, "heatmap": maps.max(axis=1) * scale[0]}


MOTION_POOLS = ("cell", "row")
# Which flow channels (dx, dy, speed_q, moving_frac) count, and whether a deviation below normal
# counts: "all" every channel both ways; "faster" direction both ways but only more speed / more
# moving pixels than normal; "speed" only more speed than normal (an empty or crowded cell alone
# never scores). Weights fold into inv_std (0 drops a channel); the lower bound clips z from below.
MOTION_MODES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "all": ((1.0, 1.0, 1.0, 1.0), (-1e30, -1e30, -1e30, -1e30)),
    "faster": ((1.0, 1.0, 1.0, 1.0), (-1e30, -1e30, 0.0, 0.0)),
    "speed": ((0.0, 0.0, 4.0, 0.0), (-1e30, -1e30, 0.0, -1e30)),
}


def flow_statistics(flow: np.ndarray, var_floor: float, pool: str = "cell") -> tuple[np.ndarray, np.ndarray]:
    """Mean and inverse std of flow cell stats ``[F, 4, h, w]`` per location, each ``[4, h, w]``.

    ``pool="cell"``: each cell its own statistics. ``pool="row"``: every cell of an image row shares
    the statistics of the whole row (all columns, all frames). On a fixed camera looking along a
    ground plane, depth and so the pixel size and speed of a normal walker depend on the row: the
    row statistics are a perspective-aware normaliser learnt from the footage, estimated from 20x
    more samples than one cell's, so rarely visited cells are not judged on a handful of frames.
    """
    if pool == "cell":
        mean, var = flow.mean(axis=0), flow.var(axis=0)
    elif pool == "row":
        mean = np.broadcast_to(flow.mean(axis=(0, 3), keepdims=True)[0], flow.shape[1:])
        var = np.broadcast_to(flow.var(axis=(0, 3), keepdims=True)[0], flow.shape[1:])
    else:
        raise ValueError(f"unknown motion pool {pool!r}; valid: {', '.join(MOTION_POOLS)}")
    return (np.ascontiguousarray(mean, np.float32),
            np.ascontiguousarray(1.0 / np.sqrt(var + var_floor), np.float32))


def motion_state(flow: np.ndarray, var_floor: float, pool: str = "cell", mode: str = "all") -> dict[str, np.ndarray]:
    """``flow_mean``, ``flow_inv_std`` (channel weights folded in) and ``flow_lower``, each ``[4, h, w]``."""
    if mode not in MOTION_MODES:
        raise ValueError(f"unknown motion mode {mode!r}; valid: {', '.join(MOTION_MODES)}")
    weights, lower = (np.asarray(v, np.float32)[:, None, None] for v in MOTION_MODES[mode])
    mean, inv_std = flow_statistics(flow, var_floor, pool)
    return {"flow_mean": mean, "flow_inv_std": (inv_std * np.sqrt(weights)).astype(np.float32),
            "flow_lower": np.ascontiguousarray(np.broadcast_to(lower, mean.shape), np.float32)}


APPEARANCE_POOLS = ("cell", "row")


def appearance_banks(c4: np.ndarray, size: int, seed: int, pool: str = "cell", per_row: bool = False) -> np.ndarray:
    """Normal ``c4`` patch memory: a coreset per cell (``[h*w, M, C]``), or (``pool="row"``) one per
    image row drawn from every cell of the row and shared by them, so a cell rarely visited in the
    normal footage is judged against what was seen at that depth anywhere in the scene. A row memory
    is stored once per row (``[h, M, C]``) with ``per_row``, else repeated for each cell of the row
    (``[h*w, M, C]``, the layout of packages before round 6; the scores are the same)."""
    f, channels, h, w = c4.shape
    features = np.ascontiguousarray(c4.reshape(f, channels, h * w).transpose(2, 0, 1), dtype=np.float32)
    if pool == "cell":
        return coreset_banks(features, size, seed)
    if pool != "row":
        raise ValueError(f"unknown appearance pool {pool!r}; valid: {', '.join(APPEARANCE_POOLS)}")
    rows = coreset_banks(features.reshape(h, w * f, channels), size, seed)  # locations are row-major
    return rows if per_row else np.ascontiguousarray(np.repeat(rows, w, axis=0))


def fit_motion_state(flow: np.ndarray, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The motion part's state (``flow_mean``, ``flow_inv_std``, ``flow_lower``) from ``params``."""
    return motion_state(flow, float(params.get("var_floor", 0.01)), str(params.get("pool", "cell")),
                        str(params.get("motion_mode", "all")))


def fit_appearance_state(c4: np.ndarray, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The appearance part's state (``bank``, ``bank_sq``) from ``params``: ``bank_size``, ``seed``,
    ``appearance_pool`` and ``bank_rows`` (a row pool's memory stored once per row; packages whose
    manifest lacks it, fitted before round 6, keep the repeated layout their graph was exported for)."""
    bank = appearance_banks(c4, int(params.get("bank_size", 64)), int(params.get("seed", 0)),
                            str(params.get("appearance_pool", "cell")), bool(params.get("bank_rows", False)))
    return {"bank": bank.astype(np.float32), "bank_sq": (bank**2).sum(-1).astype(np.float32)}


def _fit_anomaly_parts(c4: np.ndarray, flow: np.ndarray, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {**fit_motion_state(flow, params), **fit_appearance_state(c4, params), "weights": np.ones(2, np.float32)}


def held_out_motion(flow: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Motion maps of each half of the frames under motion statistics fitted on the other half."""
    return np.concatenate([motion_map(flow[score], fit_motion_state(flow[fit], params))
                           for fit, score in _halves(len(flow))])


def held_out_appearance(c4: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Appearance maps of each half of the frames under a memory fitted on the other half."""
    return np.concatenate([appearance_map(c4[score], fit_appearance_state(c4[fit], params))
                           for fit, score in _halves(len(c4))])


def _halves(n: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(fit, score) slices: the second half scores the first, then the first half the second."""
    half = n // 2
    return (slice(half, None), slice(0, half)), (slice(0, half), slice(half, None))


def _held_out_parts(c4: np.ndarray, flow: np.ndarray, params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Motion and appearance maps of each half of the frames under a model fitted on the other (the two
    parts are fitted independently, so each is held out on its own)."""
    return held_out_motion(flow, params), held_out_appearance(c4, params)


def _peak_quantile(maps: np.ndarray, quantile: float) -> float:
    return max(float(np.quantile(maps.reshape(len(maps), -1).max(axis=1), quantile)), 1e-6)


@FITTERS.register("anomaly_motion_appearance")
def fit_anomaly_motion_appearance(collected: Mapping[str, np.ndarray], window_frames: int,
                                  params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Fit the motion + appearance anomaly scorer on normal footage.

    ``collected`` holds ``params["appearance"]`` (default ``trunk.c4``, ``[F, C, h, w]``) and
    ``params["motion"]`` (default ``runtime.flow``, ``[F, 4, h, w]``). Motion statistics are per
    cell or per image row (``pool``, see :func:`flow_statistics`); ``motion_mode`` picks which
    deviations count (``MOTION_MODES``); the appearance memory is per cell or per row
    (``appearance_pool``, see :func:`appearance_banks`). Each part is normalized by
    the ``part_quantile`` of its held-out per-frame peaks (2-fold, contiguous halves: a k-NN
    memory scores its own rows 0), appearance weighted by ``appearance_weight``; ``scale`` maps
    the ``quantile`` of held-out window scores to 1.0.
    """
    c4, flow = _collected(collected, params)
    if len(flow) < max(2 * window_frames, 4):
        raise ValueError(f"need at least {max(2 * window_frames, 4)} frames to fit, got {len(flow)}")
    if c4 is None:  # a motion-only package (appearance weight 0) collects no appearance feature
        motion = held_out_motion(flow, params)
        # zero appearance maps: the same weights and scale as a fit whose appearance part has weight 0
        appearance = np.zeros_like(motion)
        state = {**fit_motion_state(flow, params), "weights": np.ones(2, np.float32)}
    else:
        motion, appearance = held_out_anomaly_parts(c4, flow, params)
        state = fit_anomaly_parts(c4, flow, params)
    state["weights"], state["scale"] = anomaly_weights_scale(motion, appearance, window_frames, params,
                                                             collected.get(SEGMENT))
    return state


def motion_only(params: Mapping[str, Any]) -> bool:
    """A design whose appearance part has weight 0: its package needs no trunk and no appearance memory."""
    return float(params.get("appearance_weight", 0.5)) == 0.0


@STATE_CHECKS.register("anomaly_motion_appearance")
def check_anomaly_state(state: Mapping[str, np.ndarray], params: Mapping[str, Any]) -> str | None:
    """A package whose calibration predates ``bank_rows`` has a graph exported for a memory per cell
    ``[h*w, M, C]`` only; a row memory stored once (``[h, M, C]``, saved by a newer package) cannot feed it."""
    if params.get("bank_rows") or "bank" not in state or "flow_mean" not in state:
        return None
    h, w = state["flow_mean"].shape[-2:]
    if state["bank"].shape[0] != h * w:
        return (f"its appearance memory is {list(state['bank'].shape)} (one per image row, saved by a newer "
                f"package) but this package's graph takes one per cell [{h * w}, M, C]")
    return None


def _collected(collected: Mapping[str, np.ndarray],
               params: Mapping[str, Any]) -> tuple[np.ndarray | None, np.ndarray]:
    """(appearance or None, motion) features; appearance may be absent only for a motion-only design."""
    appearance, motion = str(params.get("appearance", "trunk.c4")), str(params.get("motion", "runtime.flow"))
    if motion not in collected:
        raise ValueError(f"the anomaly fit needs the motion feature {motion!r}; collected: {sorted(collected)}")
    if appearance not in collected and not motion_only(params):
        raise ValueError(f"the anomaly fit needs the appearance feature {appearance!r} (appearance_weight "
                         f"{params.get('appearance_weight')}); collected: {sorted(collected)}")
    return (np.asarray(collected[appearance], np.float32) if appearance in collected else None,
            np.asarray(collected[motion], np.float32))


def fit_anomaly_parts(c4: np.ndarray, flow: np.ndarray, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Motion statistics and appearance banks fitted on all of ``c4``/``flow`` (weights still 1)."""
    return _fit_anomaly_parts(c4, flow, params)


def held_out_anomaly_parts(c4: np.ndarray, flow: np.ndarray,
                           params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Unweighted motion and appearance maps of normal footage, each half scored by a fit on the other."""
    return _held_out_parts(c4, flow, params)


def anomaly_weights_scale(motion: np.ndarray, appearance: np.ndarray, window_frames: int,
                          params: Mapping[str, Any], segments: np.ndarray | None = None,
                          ) -> tuple[np.ndarray, np.ndarray]:
    """Part weights and score scale from held-out normal maps: no labels, only normal footage.
    ``segments``: see ``SEGMENT`` (live calibration across gaps); windows stay inside one."""
    part_q = float(params.get("part_quantile", 0.99))
    weights = np.array([1.0 / _peak_quantile(motion, part_q),
                        float(params.get("appearance_weight", 0.5)) / _peak_quantile(appearance, part_q)],
                       np.float32)
    if params.get("persist", False):
        windows = persist_maps(window_stack(weights[0] * motion, weights[1] * appearance, window_frames,
                                            str(params.get("appearance_frames", "all"))))
        peaks = windows.reshape(*windows.shape[:2], -1).max(axis=-1)
        window_scores = _inside_segments(peaks.mean(axis=1).astype(np.float32), window_frames, segments)
    elif params.get("appearance_frames", "all") == "last":
        window_scores = last_frame_window_scores(weights[0] * motion, weights[1] * appearance, window_frames, segments)
    else:
        maps = weights[0] * motion + weights[1] * appearance
        peaks = maps.reshape(len(maps), -1).max(axis=1)
        window_scores = sliding_window_means(peaks[:, None], window_frames, segments)[:, 0]
    threshold = max(float(np.quantile(window_scores, float(params.get("quantile", 0.995)))), 1e-6)
    return weights, np.array([1.0 / threshold], np.float32)
