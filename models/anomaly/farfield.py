"""Label-free far-field guard for a cheaper flow: how much of ``medium@1``'s far-field motion it keeps.

    .venv/bin/python -m models.anomaly.farfield ../shared/data/ucsd_ped2/train fast@1 medium@0.5 ...
    .venv/bin/python -m models.anomaly.farfield ../shared/data/ucsd_ped2/train ultrafast@1 --per-row

On unlabelled normal clips: the mean cell speed (``speed_q``) over the far-field cell rows (the top
``rows`` of the grid) in cells where the reference flow sees motion (``moving_frac`` > 0.1), relative
to the reference's own mean there. A coarser flow that smooths small far-field movers away keeps
less (models/anomaly/README.md, round 3). Features come from the CV's feature cache.

``--per-row``: the same ratio for every cell row, over the cells where the reference's ``speed_q``
exceeds ``--min-speed`` px/frame (on Ped2 the reference's ``moving_frac`` is almost never > 0.1 in
the top rows: far-field walkers move under 1 px/frame); round 4 chose its far-field band from it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from models.anomaly.cache import DEFAULT_CACHE, FeatureCache
from models.anomaly.fit import AnomalyConfig
from models.anomaly.footage import find_clips
from pipeline.features.flow import parse_flow

SPEED, MOVING = 2, 3  # pipeline.features.flow.CHANNELS


def flow_config(flow: str) -> AnomalyConfig:
    """The default package settings on the flow ``PRESET[@SCALE][+FAR_PRESET:FAR_ROWS]``."""
    spec = parse_flow(flow)
    return AnomalyConfig(flow_preset=spec["preset"], flow_scale=spec["scale"], flow_far_rows=spec["far_rows"],
                         flow_far_preset=spec["far_preset"])


def far_field_ratio(cache: FeatureCache, clips: Sequence[Path], flow: str, rows: int = 5,
                    reference: str = "medium@1") -> float:
    """Mean far-field ``speed_q`` of ``flow`` over the reference's moving cells, divided by the reference's."""
    ref = np.concatenate([cache.flow(c, flow_config(reference).flow_spec)[:, :, :rows] for c in clips])
    cand = np.concatenate([cache.flow(c, flow_config(flow).flow_spec)[:, :, :rows] for c in clips])
    moving = ref[:, MOVING] > 0.1
    return float(cand[:, SPEED][moving].mean() / ref[:, SPEED][moving].mean())


def row_ratios(cache: FeatureCache, clips: Sequence[Path], flow: str, min_speed: float = 0.25,
               reference: str = "medium@1") -> list[float | None]:
    """Per cell row: mean ``speed_q`` of ``flow`` over the cells where the reference's exceeds
    ``min_speed``, divided by the reference's there (None: no such cell in the row)."""
    ref = np.concatenate([cache.flow(c, flow_config(reference).flow_spec) for c in clips])[:, SPEED]
    cand = np.concatenate([cache.flow(c, flow_config(flow).flow_spec) for c in clips])[:, SPEED]
    out: list[float | None] = []
    for r in range(ref.shape[1]):
        seen = ref[:, r] > min_speed
        out.append(float(cand[:, r][seen].mean() / ref[:, r][seen].mean()) if seen.any() else None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("normal", type=Path)
    parser.add_argument("flows", nargs="+", help="PRESET[@SCALE][+FAR_PRESET:FAR_ROWS]")
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--per-row", action="store_true", help="the ratio of every cell row instead")
    parser.add_argument("--min-speed", type=float, default=0.25, help="with --per-row: px/frame")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    from models.build import trunk_path

    config = AnomalyConfig()
    cache = FeatureCache(args.cache, trunk_path(Path("build/models"), config.height, config.width))
    clips = find_clips(args.normal)
    out = {}
    for flow in args.flows:
        if args.per_row:
            out[flow] = [None if r is None else round(r, 2) for r in row_ratios(cache, clips, flow, args.min_speed)]
        else:
            out[flow] = round(far_field_ratio(cache, clips, flow, args.rows), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
