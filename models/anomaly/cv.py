"""Nested leave-one-clip-out cross-validation of anomaly variants on labelled test clips.

Protocol (``vidwatch eval anomaly --cv``):

1. Every variant is fitted on the unlabelled normal footage only (``--normal``), by the same
   numpy fitter live calibration runs; its scores are in units of its own normal threshold
   (1.0 = the fitter's quantile of held-out normal window scores), which needs no test labels,
   so scores of different variants and folds are comparable and can be pooled.
2. For each labelled clip k (the outer fold), the variant with the best pooled frame AUC on the
   *other* clips is chosen, and an alarm threshold on its score maximizing recall minus
   false-alarm rate on those same other clips. Clip k is then scored with that variant and
   threshold: its out-of-fold scores.
3. Reported: pooled frame AUC over all out-of-fold scores, per-clip AUC (mean ± std), recall
   and false-alarm rate at each fold's chosen threshold (and at the label-free package
   threshold 1.0), and which variant each fold chose.

Scores are computed with the numpy reference of the runtime window graph
(``pipeline.calibration``) on cached runtime features, assembled per frame exactly as
``pipeline.runner.score_frames`` does; the chosen variant is then built as a package and
evaluated through the live runner.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from models.anomaly.cache import FeatureCache
from models.anomaly.fit import AnomalyConfig
from pipeline.calibration import (
    APPEARANCE_FRAMES,
    anomaly_weights_scale,
    appearance_map,
    fit_appearance_state,
    fit_motion_state,
    held_out_appearance,
    held_out_motion,
    last_frame_window_scores,
    motion_map,
    persist_maps,
    suffix_means,
    window_stack,
)
from pipeline.errors import VidwatchError
from pipeline.features.flow import borrow_first

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One design of the motion + appearance scorer; every field is a runtime/fitter setting."""

    pool: str = "cell"  # motion statistics per cell, or per image row (perspective-aware)
    flow_quantile: float = 0.9  # speed quantile inside a 16-px cell
    window: int = 1  # frames averaged into each frame's score (1: the frame's own peak)
    appearance_weight: float = 0.5
    motion: str = "all"  # which flow deviations count (pipeline.calibration.MOTION_MODES)
    appearance_pool: str = "cell"  # patch memory per cell, or per image row (pipeline.calibration.appearance_banks)
    # The flow feature (pipeline.features.flow): DIS preset, resolution scale, and a run's first frame
    # ("zero" flow, or "next": borrows the second frame's). Not grid axes: fixed per CV run (--flow, --first-flow).
    flow_preset: str = "medium"
    flow_scale: float = 1.0
    flow_first: str = "zero"
    flow_far_rows: int = 0  # top cell rows on a fine far-field DIS pass (perspective-aware flow; 0: none)
    flow_far_preset: str = "medium"
    bank_size: int = 64  # patches per memory (a row memory's axis, round 6: --bank-sizes; a cell memory keeps 64)
    # which frames' appearance a window reads: "all" (each frame its own), or "last" (every frame the window's
    # last frame's: the trunk runs only on window ends; round 7, --appearance-frames). Fixed per CV run.
    appearance_frames: str = "all"
    # each frame's map keeps only what a neighbouring frame of its window shows within one cell
    # (pipeline.calibration.persist_maps; round 8, --persist)
    persist: bool = False

    @property
    def name(self) -> str:
        suffix = "" if self.appearance_pool == "cell" else f"-m{self.appearance_pool}"
        if self.bank_size != 64:
            suffix += f"-k{self.bank_size}"
        if (self.flow_preset, self.flow_scale) != ("medium", 1.0):
            suffix += f"-{self.flow_preset}@{self.flow_scale:g}"
        if self.flow_far_rows:
            suffix += f"+{self.flow_far_preset}:{self.flow_far_rows}"
        if self.flow_first != "zero":
            suffix += f"-first{self.flow_first}"
        if self.appearance_frames != "all":
            suffix += f"-app{self.appearance_frames}"
        if self.persist:
            suffix += "-persist"
        return f"{self.motion}-{self.pool}-q{self.flow_quantile:g}-w{self.window}-a{self.appearance_weight:g}{suffix}"

    def config(self) -> AnomalyConfig:
        """The package settings that run this variant live."""
        base = AnomalyConfig()
        window = ALERT_WINDOW if self.window == 1 else self.window  # the alert score keeps its window
        return AnomalyConfig(window_frames=window, frame_score="window" if self.window > 1 else "peak",
                             flow_quantile=self.flow_quantile, flow_preset=self.flow_preset,
                             flow_scale=self.flow_scale, flow_first=self.flow_first,
                             flow_far_rows=self.flow_far_rows, flow_far_preset=self.flow_far_preset,
                             fit={**base.fit, "pool": self.pool, "appearance_weight": self.appearance_weight,
                                  "motion_mode": self.motion, "appearance_pool": self.appearance_pool,
                                  "bank_size": self.bank_size, "appearance_frames": self.appearance_frames,
                                  "persist": self.persist})


# Alert window (frames averaged into the alert score) of variants whose frame score is the frame's own
# peak; fixed, so a variant's calibration does not depend on which variant is the package default.
ALERT_WINDOW = 3

# The grid, fixed before any CV run from the failure modes described in issue 12 (far-field
# movers, scores rising with near-field crowds, flicker), not from scores on the test clips.
GRID: tuple[Variant, ...] = tuple(
    Variant(pool, q, window, aw, motion, memory)
    for memory, motion, pool, q, window, aw in itertools.product(
        ("cell", "row"), ("all", "faster", "speed"), ("cell", "row"), (0.9, 0.99), (1, 5, 9), (0.0, 0.5, 1.0)))
CURRENT = Variant()  # the design shipped before this protocol existed (round 1 chose it again)

# Design families the protocol selects within (``--family``). "perspective" was restricted a priori
# (models/anomaly/README.md, round 2): motion is normalised by statistics of its image row, i.e. of its
# depth under a ground-plane camera, because the failure modes of issue 12 on held-back clips are
# pixel-scale effects of depth (a small far-field mover under-scored, a near-field group over-scored);
# every other axis (speed quantile, smoothing window, appearance weight, motion mode, appearance memory
# pool) is left to the inner folds.
FAMILIES: dict[str, Callable[[Variant], bool]] = {
    "all": lambda v: True,
    "perspective": lambda v: v.pool == "row",
}


def family(name: str, variants: Sequence[Variant] = GRID) -> tuple[Variant, ...]:
    """The variants of ``variants`` that belong to the named design family."""
    if name not in FAMILIES:
        raise VidwatchError(f"unknown design family {name!r}; choose one of {', '.join(FAMILIES)}")
    return tuple(v for v in variants if FAMILIES[name](v))


# What nested CV choosing on the six shared Ped2 test clips and the far-field probe together selected (round 10,
# models/anomaly/README.md; rounds 2-9 shipped all-row-q0.9-w1-a1-mrow); `make models` ships AnomalyConfig(),
# which equals SHIPPED.config() (tested).
SHIPPED = Variant(pool="cell", flow_quantile=0.9, window=9, appearance_weight=0.0, motion="faster",
                  appearance_pool="cell", flow_first="next", appearance_frames="last")


def live_frame_scores(peaks: np.ndarray, window: int) -> np.ndarray:
    """Per-frame scores as ``score_frames`` assembles them for a package with stride 1.

    Frame i is read from the latest window covering it (the one starting at i, or the clip's last
    one) at its place in it; with ``window`` frames averaged that is the mean of its own and the following
    peaks of that window: ``peaks[i:min(i + window, F)]`` (README round 11).
    """
    if window <= 1:
        return peaks.astype(np.float32)
    f = len(peaks)
    csum = np.concatenate([[0.0], np.cumsum(peaks, dtype=np.float64)])
    starts = np.arange(f)
    ends = np.minimum(starts + window, f)
    return ((csum[ends] - csum[starts]) / (ends - starts)).astype(np.float32)


def last_appearance_scores(motion: np.ndarray, appearance: np.ndarray, window_frames: int,
                           frame_score: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame maps ``[F, h, w]`` and scores ``[F]`` as ``score_frames`` assembles them at stride 1 for a
    package whose windows read only their last frame's appearance (``appearance_frames="last"``).

    ``motion``/``appearance``: weighted, scaled per-frame parts. Frame i is read from the window starting
    at j = min(i, F - T) (the latest covering it), whose maps are ``motion[k] + appearance[j + T - 1]``;
    its score is its own peak there (``"peak"``) or the mean of its own and the following peaks of that
    window (``"window"``: the window's score for a frame that starts it)."""
    f = len(motion)
    t = min(window_frames, f)
    starts = np.minimum(np.arange(f), f - t)
    maps = motion + appearance[starts + t - 1]
    if frame_score == "peak":
        return maps, maps.reshape(f, -1).max(axis=1).astype(np.float32)
    scores = last_frame_window_scores(motion, appearance, t)[starts]  # each window's score, as the fitter's
    last_peaks = maps[f - t:].reshape(t, -1).max(axis=1).astype(np.float32)  # the clip's last window
    scores[f - t + 1:] = suffix_means(last_peaks)[1:]  # frames that start no window
    return maps, scores


def persistent_scores(motion: np.ndarray, appearance: np.ndarray, window_frames: int, frame_score: str,
                      appearance_frames: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame maps ``[F, h, w]`` and scores ``[F]`` as ``score_frames`` assembles them at stride 1 for a
    package whose window graph applies persistence (fit parameter ``persist``): frame i is read from the
    window starting at j = min(i, F - T), whose maps (with their appearance as ``appearance_frames`` says)
    pass ``pipeline.calibration.persist_maps``; its score is its own peak there or the mean of its own and the
    following peaks of that window."""
    f = len(motion)
    t = min(window_frames, f)
    starts = np.minimum(np.arange(f), f - t)
    windows = persist_maps(window_stack(motion, appearance, t, appearance_frames, np.arange(f - t + 1)))
    peaks = windows.reshape(*windows.shape[:2], -1).max(axis=-1)  # [W, T]
    maps = windows[starts, np.arange(f) - starts]
    if frame_score == "peak":
        return maps, peaks[starts, np.arange(f) - starts].astype(np.float32)
    scores = peaks.mean(axis=1)[starts].astype(np.float32)
    scores[f - t + 1:] = suffix_means(peaks[-1].astype(np.float32))[1:]  # frames that start no window
    return maps, scores


@dataclass
class VariantScores:
    """Out-of-sample scores of one variant: per-clip frame scores and per-frame heat maps."""

    variant: Variant
    scores: dict[str, np.ndarray]
    maps: dict[str, np.ndarray]  # [F, h, w] per-frame anomaly maps, in score units


def score_variants(cache: FeatureCache, normal: Sequence[Path], test: Mapping[str, Path],
                   variants: Sequence[Variant], params: Mapping[str, Any] | None = None,
                   keep_maps: bool = True) -> list[VariantScores]:
    """Fit every variant on ``normal`` clips (no labels) and score every ``test`` clip.

    The motion and appearance parts are fitted independently (``pipeline.calibration``), so each
    appearance memory (pool, bank size) is fitted and scored once and shared by the fits that differ
    only in motion settings: the same arithmetic as fitting each variant whole. ``keep_maps=False``
    drops each variant's per-frame maps once scored (a caller that reads only scores: hundreds of
    variants' maps of thousands of frames are gigabytes)."""
    base = {**AnomalyConfig().fit, **(params or {})}
    out: list[VariantScores] = []
    c4_normal = np.concatenate([cache.c4(c) for c in normal]).astype(np.float32)
    c4_test = {name: cache.c4(clip).astype(np.float32) for name, clip in test.items()}
    memories: dict[tuple[str, int], tuple[np.ndarray, dict[str, np.ndarray]]] = {}
    for key in sorted({_fit_key(v) for v in variants}):
        memory, bank_size, motion, pool, q, preset, scale, first, far_rows, far_preset = key
        config = AnomalyConfig(flow_quantile=q, flow_preset=preset, flow_scale=scale, flow_first=first,
                               flow_far_rows=far_rows, flow_far_preset=far_preset)

        # per clip: one run of consecutive frames, its first frame handled as live after a gap
        def flow(clip: Path, config: AnomalyConfig = config, first: str = first) -> np.ndarray:
            stats = cache.flow(clip, config.flow_spec)
            return borrow_first(stats) if first == "next" else stats

        flow_normal = np.concatenate([flow(c) for c in normal])
        fit_params = {**base, "pool": pool, "motion_mode": motion, "appearance_pool": memory, "bank_size": bank_size}
        started = time.perf_counter()
        if (memory, bank_size) not in memories:
            bank = fit_appearance_state(c4_normal, fit_params)
            memories[memory, bank_size] = (held_out_appearance(c4_normal, fit_params),
                                           {name: appearance_map(c4, bank) for name, c4 in c4_test.items()})
            logger.info("fitted and scored the %s memory of %d in %.0f s", memory, bank_size,
                        time.perf_counter() - started)
        appearance_ho, appearance = memories[memory, bank_size]
        motion_ho = held_out_motion(flow_normal, fit_params)
        motion_state = fit_motion_state(flow_normal, fit_params)
        parts = {name: (motion_map(flow(clip), motion_state), appearance[name]) for name, clip in test.items()}
        logger.info("fitted %s in %.0f s", key, time.perf_counter() - started)
        for v in variants:
            if _fit_key(v) != key:
                continue
            weights, scale = anomaly_weights_scale(motion_ho, appearance_ho, v.config().window_frames,
                                                   {**fit_params, "appearance_weight": v.appearance_weight,
                                                    "appearance_frames": v.appearance_frames,
                                                    "persist": v.persist})
            if v.persist or v.appearance_frames == "last":  # frames assembled per window, as the graph does
                assembled = {name: _window_assembled(v, weights[0] * scale[0] * m, weights[1] * scale[0] * a)
                             for name, (m, a) in parts.items()}
                maps = {name: mp for name, (mp, _) in assembled.items()}
                scores = {name: sc for name, (_, sc) in assembled.items()}
            else:
                maps = {name: (weights[0] * m + weights[1] * a) * scale[0] for name, (m, a) in parts.items()}
                scores = {name: live_frame_scores(mp.reshape(len(mp), -1).max(axis=1), v.window)
                          for name, mp in maps.items()}
            out.append(VariantScores(v, scores, maps if keep_maps else {}))
    order = {v: i for i, v in enumerate(variants)}
    return sorted(out, key=lambda s: order[s.variant])


def _window_assembled(v: Variant, motion: np.ndarray, appearance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame maps and scores of a variant whose window graph assembles its frames per window (persistence,
    or every frame with the window's last appearance); ``motion``/``appearance`` weighted and scaled."""
    config = v.config()
    if v.persist:
        return persistent_scores(motion, appearance, config.window_frames, config.frame_score, v.appearance_frames)
    return last_appearance_scores(motion, appearance, config.window_frames, config.frame_score)


def _fit_key(v: Variant) -> tuple[str, int, str, str, float, str, float, str, int, str]:
    """What a fit depends on (window and appearance weight are applied to its held-out parts)."""
    return (v.appearance_pool, v.bank_size, v.motion, v.pool, v.flow_quantile, v.flow_preset, v.flow_scale,
            v.flow_first, v.flow_far_rows, v.flow_far_preset)


def with_bank_sizes(variants: Sequence[Variant], sizes: Sequence[int]) -> tuple[Variant, ...]:
    """Every row-memory variant of ``variants`` once per bank size in ``sizes`` (ascending, so a tie in
    selection goes to the smaller memory); cell-memory variants stay as they are (a memory per cell
    of 4-16x the size would cost 4-16x the state, README round 6). Order: ``variants`` at the smallest
    size first, then the row-memory variants at each larger size."""
    sizes = sorted(set(sizes))
    if not sizes or sizes[0] < 1:
        raise VidwatchError(f"bank sizes {list(sizes)}: give one or more positive sizes, e.g. 64,256,1024")
    first = tuple(replace(v, bank_size=sizes[0]) if v.appearance_pool == "row" else v for v in variants)
    return first + tuple(replace(v, bank_size=k) for k in sizes[1:] for v in variants if v.appearance_pool == "row")


def with_appearance_frames(variants: Sequence[Variant], frames: str) -> tuple[Variant, ...]:
    """``variants`` reading the appearance of every window frame (``all``) or of its last only (``last``)."""
    if frames not in APPEARANCE_FRAMES:
        raise VidwatchError(f"appearance frames {frames!r}: use one of {', '.join(APPEARANCE_FRAMES)}")
    return tuple(replace(v, appearance_frames=frames) for v in variants)


PERSIST_OPTIONS = ("off", "on", "both")


def with_persist(variants: Sequence[Variant], persist: str) -> tuple[Variant, ...]:
    """``variants`` without persistence (``off``), with it (``on``), or each both ways (``both``: the ones
    without first, so a tie in selection goes to the simpler design)."""
    if persist not in PERSIST_OPTIONS:
        raise VidwatchError(f"persist {persist!r}: use one of {', '.join(PERSIST_OPTIONS)}")
    off = tuple(replace(v, persist=False) for v in variants)
    on = tuple(replace(v, persist=True) for v in variants)
    return {"off": off, "on": on, "both": off + on}[persist]


def with_flow(variants: Sequence[Variant], preset: str | None = None, scale: float | None = None,
              first: str | None = None, far_rows: int | None = None,
              far_preset: str | None = None) -> tuple[Variant, ...]:
    """``variants`` with the flow feature set (None keeps each variant's own)."""
    changes: dict[str, Any] = {k: v for k, v in (("flow_preset", preset), ("flow_scale", scale),
                                                 ("flow_first", first), ("flow_far_rows", far_rows),
                                                 ("flow_far_preset", far_preset)) if v is not None}
    return tuple(replace(v, **changes) for v in variants)


# -- the protocol ------------------------------------------------------------------------------
def pooled_auc(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], clips: Sequence[str]) -> float:
    y = np.concatenate([labels[c] for c in clips])
    s = np.concatenate([scores[c] for c in clips])
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def youden_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """The threshold maximizing recall - false-alarm rate (alarm when score > threshold)."""
    candidates = np.unique(scores)
    best, best_j = float(candidates[0]), -np.inf
    pos, neg = labels == 1, labels == 0
    for t in candidates:
        alarms = scores > t
        j = alarms[pos].mean() - alarms[neg].mean()
        if j > best_j:
            best, best_j = float(t), j
    return best


Selector = Callable[[Sequence[Mapping[str, np.ndarray]], Mapping[str, np.ndarray], Sequence[str]], int]


def select_variant(variant_scores: Sequence[Mapping[str, np.ndarray]], labels: Mapping[str, np.ndarray],
                   clips: Sequence[str]) -> int:
    """Index of the variant with the best pooled frame AUC on ``clips`` (first on ties)."""
    aucs = [pooled_auc(s, labels, clips) for s in variant_scores]
    return int(np.nanargmax(aucs))


def nested_cv(variant_scores: Sequence[Mapping[str, np.ndarray]], labels: Mapping[str, np.ndarray],
              select: Selector = select_variant, extra_scores: Sequence[Mapping[str, np.ndarray]] | None = None,
              extra_labels: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Leave-one-clip-out: per held-out clip, variant and threshold chosen on the others only.

    ``extra_scores``/``extra_labels``: labelled clips that are never held out and join every fold's
    selection set (the far-field probe, ``models.anomaly.probe``: synthetic movers in normal footage
    nothing was fitted on); their names must differ from ``labels``'."""
    clips = sorted(labels)
    extra_labels = dict(extra_labels or {})
    if set(extra_labels) & set(clips):
        raise VidwatchError(f"clip(s) {', '.join(sorted(set(extra_labels) & set(clips)))} are both held out and "
                            f"extra selection clips; give the extra clips other names")
    extras = list(extra_scores) if extra_scores is not None else [{} for _ in variant_scores]
    folds: list[dict[str, Any]] = []
    oof: dict[str, np.ndarray] = {}
    alarms: dict[str, np.ndarray] = {}
    for held in clips:
        inner = [c for c in clips if c != held]
        selection = inner + sorted(extra_labels)
        inner_labels = {**{c: labels[c] for c in inner}, **extra_labels}
        chosen = select([{**{c: s[c] for c in inner}, **{c: e[c] for c in extra_labels}}
                         for s, e in zip(variant_scores, extras, strict=True)], inner_labels, selection)
        chosen_scores = {**variant_scores[chosen], **extras[chosen]}
        threshold = youden_threshold(np.concatenate([chosen_scores[c] for c in selection]),
                                     np.concatenate([inner_labels[c] for c in selection]))
        oof[held] = variant_scores[chosen][held]
        alarms[held] = oof[held] > threshold
        folds.append({"held_out": held, "variant": chosen, "threshold": round(threshold, 4),
                      "inner_auc": round(pooled_auc(chosen_scores, inner_labels, selection), 4),
                      "held_out_auc": _clip_auc(oof[held], labels[held])})
    return {"folds": folds, "oof_scores": oof, **summary(oof, labels, alarms)}


def summary(scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
            alarms: Mapping[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Pooled AUC, per-clip AUC with mean ± std, and recall / false alarms of ``alarms``
    (default: score > 1.0, the label-free package threshold)."""
    clips = sorted(labels)
    per_clip = {c: _clip_auc(scores[c], labels[c]) for c in clips}
    both = [v for v in per_clip.values() if v is not None]
    y = np.concatenate([labels[c] for c in clips])
    a = np.concatenate([(alarms[c] if alarms is not None else scores[c] > 1.0) for c in clips])
    return {"pooled_auc": round(pooled_auc(scores, labels, clips), 4), "per_clip_auc": per_clip,
            "clip_auc_mean": round(float(np.mean(both)), 4), "clip_auc_std": round(float(np.std(both)), 4),
            "clip_auc_min": round(float(np.min(both)), 4),
            "recall": round(float(a[y == 1].mean()), 4), "false_alarm_rate": round(float(a[y == 0].mean()), 4),
            "n_normal": {c: int((labels[c] == 0).sum()) for c in clips}}


def _clip_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    return round(float(roc_auc_score(labels, scores)), 4) if 0 < labels.sum() < len(labels) else None


def variant_table(results: Sequence[VariantScores], labels: Mapping[str, np.ndarray],
                  chosen_counts: Mapping[int, int]) -> list[dict[str, Any]]:
    """Each fixed variant on all clips (no selection: an honest figure for that variant alone)."""
    rows = []
    for i, r in enumerate(results):
        s = summary(r.scores, labels)
        rows.append({"variant": r.variant.name, **asdict(r.variant), "pooled_auc": s["pooled_auc"],
                     "clip_auc_mean": s["clip_auc_mean"], "clip_auc_min": s["clip_auc_min"],
                     "recall_at_1": s["recall"], "false_alarm_at_1": s["false_alarm_rate"],
                     "chosen_in_folds": chosen_counts.get(i, 0)})
    return rows


# -- the command ---------------------------------------------------------------------------------
def cross_validate(normal: Path, data: Path, labels_path: Path, out: Path, trunk: Path,
                   cache_dir: Path, variants: Sequence[Variant] = GRID, gallery_count: int = 6,
                   family_name: str = "all", flow: Mapping[str, Any] | None = None,
                   bank_sizes: Sequence[int] = (64,), appearance_frames: str = "all",
                   persist: str = "off") -> dict[str, Any]:
    """Run the protocol within the design family ``family_name`` of ``variants`` (their flow feature
    set by ``flow``: ``preset``, ``scale``, ``first``, see :func:`with_flow`; each row memory at every
    size of ``bank_sizes``, see :func:`with_bank_sizes`; every window reading the appearance of
    ``appearance_frames``, see :func:`with_appearance_frames`; with, without or both ways persistence as
    ``persist`` says, see :func:`with_persist`); write ``cv.json``, ``cv.md``, out-of-fold
    plots and an error gallery to ``out``."""
    from models.anomaly.evaluate import read_labels
    from models.anomaly.footage import FootageError, find_clips
    from models.anomaly.gallery import error_gallery, plot_clip

    variants = with_persist(with_appearance_frames(
        with_bank_sizes(with_flow(family(family_name, variants), **(flow or {})), bank_sizes), appearance_frames),
        persist)
    if not variants:
        raise VidwatchError(f"design family {family_name!r} holds none of the {len(GRID)} grid variants given")
    labels = read_labels(labels_path)
    missing = [c for c in labels if not (data / c).is_dir()]
    if missing:
        raise FootageError(data, f"has no frame folder for labelled clip(s) {', '.join(missing)}")
    if len(labels) < 3:
        raise FootageError(data, f"holds {len(labels)} labelled clip(s); leave-one-clip-out needs at least 3")
    started = time.perf_counter()
    cache = FeatureCache(cache_dir, trunk)
    test = {c: data / c for c in sorted(labels)}
    results = score_variants(cache, find_clips(normal), test, variants)
    for name, clip_labels in labels.items():
        if len(results[0].scores[name]) != len(clip_labels):
            raise FootageError(data / name, f"has {len(results[0].scores[name])} frames but "
                                            f"{labels_path.name} labels {len(clip_labels)}")
    cv = nested_cv([r.scores for r in results], labels)
    counts: dict[int, int] = {}
    for fold in cv["folds"]:
        counts[fold["variant"]] = counts.get(fold["variant"], 0) + 1
        fold["variant"] = results[fold["variant"]].variant.name
    final = select_variant([r.scores for r in results], labels, sorted(labels))
    thresholds = {f["held_out"]: f["threshold"] for f in cv["folds"]}
    oof_maps = {f["held_out"]: next(r for r in results if r.variant.name == f["variant"]).maps[f["held_out"]]
                for f in cv["folds"]}
    out.mkdir(parents=True, exist_ok=True)
    plots = [str(plot_clip(out / f"{c}.png", c, cv["oof_scores"][c], labels[c], thresholds[c],
                           title=f"{c} (out of fold: {next(f['variant'] for f in cv['folds'] if f['held_out'] == c)})"))
             for c in sorted(labels)]
    frames_of: dict[str, list[np.ndarray]] = {}

    def frame(clip: str, i: int) -> np.ndarray:
        if clip not in frames_of:
            frames_of[clip] = cache.frames(test[clip])
        return frames_of[clip][i]

    gallery = error_gallery(out / "gallery", cv["oof_scores"], labels, lambda c, i: oof_maps[c][i], frame,
                            thresholds, gallery_count)
    current = next((r for r in results if r.variant == CURRENT), None)
    report = {
        "protocol": "nested leave-one-clip-out: variant (best pooled frame AUC) and threshold (max recall - "
                    "false-alarm rate) chosen on the other clips, reported on the held-out clip; fitting on "
                    f"unlabelled normal footage only ({normal}); design family '{family_name}' "
                    f"({len(variants)} variants; row-memory bank sizes {sorted(set(bank_sizes))}; "
                    f"appearance of {'each window frame' if appearance_frames == 'all' else 'the window last frame'}; "
                    f"persistence {persist})",
        "family": family_name, "n_variants": len(variants), "bank_sizes": sorted(set(bank_sizes)),
        "appearance_frames": appearance_frames, "persist": persist,
        "nested_cv": {k: v for k, v in cv.items() if k != "oof_scores"},
        "chosen_on_all_clips": results[final].variant.name,
        "chosen_config": asdict(results[final].variant),
        "shipped": SHIPPED.name,  # what `make models` builds; differs from the chosen one when the grid or data changed
        "current_design": summary(current.scores, labels) if current else None,
        "variants": variant_table(results, labels, counts),
        "first_frames": {c: {"label": int(labels[c][0]), "oof_score": round(float(cv["oof_scores"][c][0]), 4),
                             "threshold": thresholds[c], "alarm": bool(cv["oof_scores"][c][0] > thresholds[c])}
                         for c in sorted(labels)},  # a run's first frame has no previous one (flow `first`)
        "plots": plots, "gallery": gallery, "seconds": round(time.perf_counter() - started, 1),
    }
    import json

    (out / "cv.json").write_text(json.dumps(report, indent=1))
    (out / "cv.md").write_text(markdown(report))
    return report


def markdown(report: Mapping[str, Any]) -> str:
    cv = report["nested_cv"]
    lines = [f"Protocol: {report['protocol']}.", "",
             f"**Nested CV: pooled frame AUC {cv['pooled_auc']}, per-clip AUC {cv['clip_auc_mean']} ± "
             f"{cv['clip_auc_std']} (min {cv['clip_auc_min']}), recall {cv['recall']}, false alarms "
             f"{cv['false_alarm_rate']} at the fold thresholds.**", "",
             "| held-out clip | normal frames | chosen variant | threshold | inner AUC | held-out AUC |",
             "|---|---|---|---|---|---|"]
    for f in cv["folds"]:
        lines.append(f"| {f['held_out']} | {cv['n_normal'][f['held_out']]} | {f['variant']} | {f['threshold']} | "
                     f"{f['inner_auc']} | {f['held_out_auc']} |")
    first = report.get("first_frames", {})
    if first:
        lines += ["", "First frame of each clip (no previous frame), out of fold: " + "; ".join(
            f"{c} label {f['label']} score {f['oof_score']} {'alarm' if f['alarm'] else 'no alarm'} "
            f"(threshold {f['threshold']})" for c, f in first.items()) + "."]
    lines += ["", f"Chosen on all clips: `{report['chosen_on_all_clips']}`; `make models` ships `{report['shipped']}`.",
              "",
              "| variant | pooled AUC | clip AUC mean | clip AUC min | recall @1 | false alarms @1 | chosen in folds |",
              "|---|---|---|---|---|---|---|"]
    for r in sorted(report["variants"], key=lambda r: -r["pooled_auc"]):
        lines.append(f"| {r['variant']} | {r['pooled_auc']} | {r['clip_auc_mean']} | {r['clip_auc_min']} | "
                     f"{r['recall_at_1']} | {r['false_alarm_at_1']} | {r['chosen_in_folds']} |")
    return "\n".join(lines) + "\n"
