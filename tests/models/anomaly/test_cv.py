"""The cross-validation protocol: selection never sees the held-out clip; scores as the runner assembles them."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from models.anomaly.cv import (
    CURRENT,
    GRID,
    SHIPPED,
    Variant,
    cross_validate,
    family,
    last_appearance_scores,
    live_frame_scores,
    nested_cv,
    persistent_scores,
    select_variant,
    with_bank_sizes,
    with_flow,
    with_persist,
    youden_threshold,
)
from models.anomaly.evaluate import read_labels
from pipeline.errors import VidwatchError


def _clip(rng: np.random.Generator, separation: float, n: int = 200) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat([0, 1], n // 2)
    return rng.normal(0, 1, n) + separation * labels, labels


def _two_variants() -> tuple[list[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Variant 0 is perfect on clip A and weak on B, C; variant 1 is inverted on A and decent on B, C.
    Pooled over all clips variant 0 wins; without A, variant 1 does."""
    rng = np.random.default_rng(0)
    scores: list[dict[str, np.ndarray]] = [{}, {}]
    labels: dict[str, np.ndarray] = {}
    for clip, (sep0, sep1) in {"A": (8.0, -8.0), "B": (0.2, 1.5), "C": (0.2, 1.5)}.items():
        scores[0][clip], labels[clip] = _clip(rng, sep0)
        scores[1][clip], _ = _clip(rng, sep1)
    return scores, labels


def test_selection_on_all_clips_would_pick_the_other_variant() -> None:
    scores, labels = _two_variants()
    assert select_variant(scores, labels, ["A", "B", "C"]) == 0
    assert select_variant(scores, labels, ["B", "C"]) == 1


def test_the_held_out_clip_never_takes_part_in_selection() -> None:
    scores, labels = _two_variants()
    cv = nested_cv(scores, labels)
    fold_a = next(f for f in cv["folds"] if f["held_out"] == "A")
    # Honest: chosen on B and C -> variant 1, which is inverted on A. A leak would give AUC 1.0 here.
    assert fold_a["variant"] == 1
    assert cv["per_clip_auc"]["A"] < 0.1
    np.testing.assert_array_equal(cv["oof_scores"]["A"], scores[1]["A"])


def test_selector_only_receives_inner_clips() -> None:
    scores, labels = _two_variants()
    seen: list[tuple[str, set[str], set[str]]] = []

    def spy(variant_scores, inner_labels, clips):  # type: ignore[no-untyped-def]
        seen.append((",".join(clips), {c for s in variant_scores for c in s}, set(inner_labels)))
        return select_variant(variant_scores, inner_labels, clips)

    cv = nested_cv(scores, labels, select=spy)
    for fold, (clips, score_clips, label_clips) in zip(cv["folds"], seen, strict=True):
        assert fold["held_out"] not in clips.split(",")
        assert fold["held_out"] not in score_clips | label_clips


def test_extra_selection_clips_join_every_fold_but_are_never_held_out() -> None:
    scores, labels = _two_variants()
    rng = np.random.default_rng(1)
    extra_labels = {"probe": _clip(rng, 0.0, 2000)[1]}
    # variant 0 separates the larger probe clip perfectly, variant 1 not at all: it outweighs B and C
    extras = [{"probe": extra_labels["probe"] * 10.0 + rng.normal(0, 0.1, 2000)}, {"probe": rng.normal(0, 1, 2000)}]
    seen: list[list[str]] = []

    def spy(variant_scores, inner_labels, clips):  # type: ignore[no-untyped-def]
        seen.append(list(clips))
        return select_variant(variant_scores, inner_labels, clips)

    cv = nested_cv(scores, labels, select=spy, extra_scores=extras, extra_labels=extra_labels)
    assert [f["held_out"] for f in cv["folds"]] == ["A", "B", "C"]
    for clips, fold in zip(seen, cv["folds"], strict=True):
        assert "probe" in clips and fold["held_out"] not in clips
    fold_a = next(f for f in cv["folds"] if f["held_out"] == "A")
    assert fold_a["variant"] == 0  # without the probe, B and C alone choose variant 1 (see above)
    np.testing.assert_array_equal(cv["oof_scores"]["A"], scores[0]["A"])
    with pytest.raises(VidwatchError, match="both held out and extra"):
        nested_cv(scores, labels, extra_scores=[{"A": s["A"]} for s in scores], extra_labels={"A": labels["A"]})


def test_threshold_comes_from_inner_clips() -> None:
    scores, labels = _two_variants()
    cv = nested_cv(scores, labels)
    for fold in cv["folds"]:
        inner = [c for c in labels if c != fold["held_out"]]
        chosen = scores[0] if fold["variant"] == 0 else scores[1]
        want = youden_threshold(np.concatenate([chosen[c] for c in inner]), np.concatenate([labels[c] for c in inner]))
        assert fold["threshold"] == pytest.approx(want, abs=1e-4)


def test_live_frame_scores_match_the_runner_assembly() -> None:
    peaks = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(live_frame_scores(peaks, 1), peaks)
    got = live_frame_scores(peaks, 3)
    # frame i reads the window starting at i; the last two frames start no window and read their own and the
    # following peaks of the clip's last window (never earlier frames': README round 11)
    np.testing.assert_allclose(got, [1, 2, 3, 4, 5, 6, 7, 8, 8.5, 9])


def test_last_appearance_scores_assemble_frames_as_the_runner() -> None:
    """Frame i is read from the window starting at min(i, F - T); its maps add that window's last frame's
    appearance to each frame's motion."""
    rng = np.random.default_rng(1)
    motion, appearance = rng.random((7, 2, 3), np.float32), rng.random((7, 2, 3), np.float32)
    maps, peak = last_appearance_scores(motion, appearance, 3, "peak")
    ends = [2, 3, 4, 5, 6, 6, 6]
    np.testing.assert_allclose(maps, motion + appearance[ends])
    np.testing.assert_allclose(peak, [(motion[i] + appearance[e]).max() for i, e in enumerate(ends)], rtol=1e-6)
    _, window = last_appearance_scores(motion, appearance, 3, "window")
    starts = [0, 1, 2, 3, 4, 4, 4]
    want = [np.mean([(motion[k] + appearance[j + 2]).max() for k in range(i, j + 3)]) for i, j in enumerate(starts)]
    np.testing.assert_allclose(window, want, rtol=1e-6)
    # an appearance that never changes scores as every frame's own
    still = np.repeat(appearance[:1], 7, axis=0)
    _, same = last_appearance_scores(motion, still, 3, "peak")
    np.testing.assert_allclose(same, live_frame_scores((motion + still).reshape(7, -1).max(axis=1), 1), rtol=1e-6)


def test_persistent_scores_assemble_frames_as_the_runner() -> None:
    """Frame i is read from the window starting at min(i, F - T); persistence runs on that window's maps, so
    frame i is checked against frame i + 1 (the clip's last frame against the one before it)."""
    rng = np.random.default_rng(2)
    motion, appearance = rng.random((7, 3, 3), np.float32), rng.random((7, 3, 3), np.float32)
    maps, peak = persistent_scores(motion, appearance, 3, "peak", "all")
    every = motion + appearance

    def pooled(m: np.ndarray) -> np.ndarray:
        padded = np.pad(m, 1, constant_values=-np.inf)
        return np.max([padded[i:i + 3, j:j + 3] for i in range(3) for j in range(3)], axis=0)

    neighbours = [1, 2, 3, 4, 5, 6, 5]
    want = np.stack([np.minimum(every[i], pooled(every[n])) for i, n in enumerate(neighbours)])
    np.testing.assert_allclose(maps, want, rtol=1e-6)
    np.testing.assert_allclose(peak, want.reshape(7, -1).max(axis=1), rtol=1e-6)
    _, window = persistent_scores(motion, appearance, 3, "window", "all")
    starts = [0, 1, 2, 3, 4, 4, 4]
    windows = [[np.minimum(every[k], pooled(every[k + 1 if k < j + 2 else k - 1])).max() for k in range(i, j + 3)]
               for i, j in enumerate(starts)]  # a frame's own and the following peaks of its window
    np.testing.assert_allclose(window, [np.mean(w) for w in windows], rtol=1e-6)
    # with the window's last appearance: frame 0's window ends at frame 2
    last, _ = persistent_scores(motion, appearance, 3, "peak", "last")
    np.testing.assert_allclose(last[0], np.minimum(motion[0] + appearance[2], pooled(motion[1] + appearance[2])))


def test_persistence_axis_doubles_the_grid_without_first() -> None:
    members = family("perspective")
    both = with_persist(members, "both")
    assert len(both) == 2 * len(members) and both[:len(members)] == members  # a tie goes to the simpler design
    assert all(v.persist for v in both[len(members):]) and with_persist(members, "off") == members
    on = replace(SHIPPED, persist=True)
    assert on.name.endswith("-persist") and on.config().fit["persist"] is True
    assert SHIPPED.config().fit["persist"] is False
    with pytest.raises(VidwatchError, match="persist 'yes'"):
        with_persist(members, "yes")


def test_grid_holds_the_current_design_and_runs_live() -> None:
    assert CURRENT in GRID and len(set(GRID)) == len(GRID)
    config = Variant(pool="row", flow_quantile=0.99, window=5, appearance_weight=0.0).config()
    assert config.fit["pool"] == "row" and config.flow_spec["quantile"] == 0.99
    assert config.window_frames == 5 and config.frame_score == "window"
    assert CURRENT.config().frame_score == "peak"


def test_perspective_family_fixes_row_motion_statistics_and_leaves_the_rest_to_the_inner_folds() -> None:
    members = family("perspective")
    assert len(members) == len(GRID) // 2 and all(v.pool == "row" for v in members)
    # every other axis keeps all its grid values, for the inner folds to choose
    for axis in ("flow_quantile", "window", "appearance_weight", "motion", "appearance_pool"):
        assert {getattr(v, axis) for v in members} == {getattr(v, axis) for v in GRID}
    assert family("all") == GRID
    with pytest.raises(VidwatchError, match="unknown design family 'rows'"):
        family("rows")


def test_bank_size_axis_multiplies_only_the_row_memory_variants() -> None:
    members = family("perspective")
    grid = with_bank_sizes(members, (1024, 64, 256))
    rows = [v for v in members if v.appearance_pool == "row"]
    assert len(grid) == len(members) + 2 * len(rows) and len(set(grid)) == len(grid)
    assert grid[:len(members)] == members  # size 64 first: rounds 1-5's grid, ties go to the smaller memory
    assert {v.bank_size for v in grid if v.appearance_pool == "cell"} == {64}
    assert {v.bank_size for v in grid if v.appearance_pool == "row"} == {64, 256, 1024}
    big = Variant(pool="row", appearance_weight=1.0, appearance_pool="row", bank_size=1024)  # rounds 2-9's design
    assert big in grid and big.name == "all-row-q0.9-w1-a1-mrow-k1024" and big.config().fit["bank_size"] == 1024
    assert with_bank_sizes(members, (64,)) == members
    with pytest.raises(VidwatchError, match="positive sizes"):
        with_bank_sizes(members, (0,))


def test_cross_validate_refuses_a_family_with_none_of_the_variants(tmp_path: Path) -> None:
    with pytest.raises(VidwatchError, match="design family 'perspective' holds none"):
        cross_validate(tmp_path, tmp_path, tmp_path / "labels.csv", tmp_path / "out", tmp_path / "trunk.onnx",
                       tmp_path / "cache", (CURRENT,), family_name="perspective")


def test_cross_validate_writes_report_plots_and_gallery(labelled_cuts, shared_data: Path, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         trunk_240: Path) -> None:
    data, labels_csv = labelled_cuts
    clips = sorted(read_labels(labels_csv))
    normal = tmp_path / "normal" / "Train001"
    normal.mkdir(parents=True)
    for frame in sorted((shared_data / "ucsd_ped2" / "train" / "Train001").glob("*.jpg"))[:24]:
        (normal / frame.name).symlink_to(frame)
    variants = (CURRENT, Variant(pool="row", window=5, appearance_weight=1.0))
    out = tmp_path / "cv"
    report = cross_validate(tmp_path / "normal", data, labels_csv, out, trunk_240, tmp_path / "cache", variants,
                            gallery_count=2)
    cv = report["nested_cv"]
    assert [f["held_out"] for f in cv["folds"]] == clips
    assert {f["variant"] for f in cv["folds"]} <= {v.name for v in variants}
    assert 0.0 <= cv["pooled_auc"] <= 1.0 and set(cv["per_clip_auc"]) == set(clips)
    assert json.loads((out / "cv.json").read_text())["chosen_on_all_clips"] in {v.name for v in variants}
    assert "Nested CV: pooled frame AUC" in (out / "cv.md").read_text()
    first = report["first_frames"]
    assert set(first) == set(clips)
    clip_labels = read_labels(labels_csv)
    assert all(f["label"] == clip_labels[c][0] and f["alarm"] == (f["oof_score"] > f["threshold"])
               for c, f in first.items())
    for clip in clips:
        image = cv2.imread(str(out / f"{clip}.png"))
        assert image is not None and image.shape[0] > 100 and image.std() > 5
    drawn = report["gallery"]
    assert len(drawn["false_alarms"]) == 2 and len(drawn["misses"]) == 2
    assert all(d["score"] >= e["score"] for d, e in zip(drawn["false_alarms"], drawn["false_alarms"][1:], strict=False))
    for item in drawn["false_alarms"] + drawn["misses"]:
        tile = cv2.imread(str(out / "gallery" / item["file"]))
        assert tile is not None and tile.shape == (240 + 18, 360, 3)
    sheet = cv2.imread(str(out / "gallery" / "gallery.png"))
    assert sheet.shape == (2 * (240 + 18), 2 * 360, 3)
    # cached features are reused: a second run computes nothing new and gives the same figures
    again = cross_validate(tmp_path / "normal", data, labels_csv, tmp_path / "cv2", trunk_240, tmp_path / "cache",
                           variants, gallery_count=2)
    assert again["nested_cv"] == cv


def test_flow_settings_reach_every_variant_and_its_package() -> None:
    variants = with_flow(family("perspective"), preset="ultrafast-fine", first="next")
    assert len(variants) == len(family("perspective")) and len({v.name for v in variants}) == len(variants)
    assert all(v.name.endswith("-ultrafast-fine@1-firstnext") for v in variants)
    spec = variants[0].config().flow_spec
    assert (spec["preset"], spec["first"], "scale" in spec) == ("ultrafast-fine", "next", False)
    assert with_flow(variants, scale=0.5)[0].config().flow_spec["scale"] == 0.5
    assert with_flow(variants) == variants  # None keeps each variant's own
    banded = with_flow(variants, preset="ultrafast", far_rows=5, far_preset="medium")
    assert banded[0].name.endswith("-ultrafast@1+medium:5-firstnext") and len({v.name for v in banded}) == len(banded)
    spec = banded[0].config().flow_spec
    assert (spec["preset"], spec["far_rows"], spec["far_preset"]) == ("ultrafast", 5, "medium")
    assert "far_rows" not in variants[0].config().flow_spec  # no band: cache keys of earlier runs stay valid


def test_the_cv_cache_computes_the_banded_flow_as_the_runtime_feature(labelled_cuts: tuple[Path, Path],
                                                                      trunk_240: Path, tmp_path: Path) -> None:
    from models.anomaly.cache import FeatureCache
    from models.anomaly.footage import read_clip
    from pipeline.features import create_feature

    clip = labelled_cuts[0] / "Test002"
    spec = replace(SHIPPED, flow_preset="ultrafast", flow_scale=0.5, flow_far_rows=6).config().flow_spec
    cache = FeatureCache(tmp_path, trunk_240)
    plain = {**spec, "quantile": 0.99}
    plain.pop("far_rows"), plain.pop("far_preset")
    got, got_q99, got_plain = cache.flows(clip, [spec, {**spec, "quantile": 0.99}, plain])
    feature = create_feature(spec)
    want = np.stack([feature(f) for f in read_clip(clip, 240, 360, 10.0)])
    # DIS is deterministic up to float rounding (OpenCV threads): ~1e-8 px/frame
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.shape == (16, 4, 15, 23)  # the 16-frame cut
    np.testing.assert_allclose(got_q99[:, :, 6:], got_plain[:, :, 6:], rtol=1e-5, atol=1e-6)  # the cheap flow
    assert np.abs(got_q99[:, :, :6] - got_plain[:, :, :6]).max() > 0.05  # the band: the fine flow


def test_the_shipped_config_is_the_variant_cv_chose() -> None:
    """`make models` builds AnomalyConfig(); nested CV choosing on the six shared clips and the far-field
    probe together chose this variant (models/anomaly/README.md, round 10). Changing either without the
    other fails here."""
    from models.anomaly.fit import AnomalyConfig
    from models.anomaly.probe import probe_variants

    assert SHIPPED.config() == AnomalyConfig()
    # round 10: one of the probe's variants (the whole grid), chosen there; motion only, a 9-frame mean
    assert SHIPPED in probe_variants() and SHIPPED != CURRENT
    assert (SHIPPED.window, SHIPPED.appearance_weight, AnomalyConfig().frame_score) == (9, 0.0, "window")
    # round 3: the flow kept (medium@1), the first frame borrowing the second's flow
    assert (SHIPPED.flow_preset, SHIPPED.flow_scale, SHIPPED.flow_first) == ("medium", 1.0, "next")
    # round 7: windows read their last frame's appearance (the rule met under nested CV)
    assert SHIPPED.appearance_frames == "last" and AnomalyConfig().fit["appearance_frames"] == "last"
    assert AnomalyConfig().flow_spec["first"] == "next" and "scale" not in AnomalyConfig().flow_spec
    # round 8: temporal persistence did not meet its rule, so it stays off
    assert not SHIPPED.persist and AnomalyConfig().fit["persist"] is False
