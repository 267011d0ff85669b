"""Label-free far-field guard for a cheaper flow: how much of ``medium@1``'s far-field motion it keeps.

    .venv/bin/python -m models.anomaly.farfield ../shared/data/ucsd_ped2/train fast@1 medium@0.5 ...

On unlabelled normal clips: the mean cell speed (``speed_q``) over the far-field cell rows (the top
``rows`` of the grid) in cells where the reference flow sees motion (``moving_frac`` > 0.1), relative
to the reference's own mean there. A coarser flow that smooths small far-field movers away keeps
less (models/anomaly/README.md, round 3). Features come from the CV's feature cache.
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

SPEED, MOVING = 2, 3  # pipeline.features.flow.CHANNELS


def far_field_ratio(cache: FeatureCache, clips: Sequence[Path], preset: str, scale: float, rows: int = 5,
                    reference: tuple[str, float] = ("medium", 1.0)) -> float:
    """Mean far-field ``speed_q`` of the flow ``preset@scale`` over the reference's moving cells,
    divided by the reference's."""
    ref_spec = AnomalyConfig(flow_preset=reference[0], flow_scale=reference[1]).flow_spec
    spec = AnomalyConfig(flow_preset=preset, flow_scale=scale).flow_spec
    ref = np.concatenate([cache.flow(c, ref_spec)[:, :, :rows] for c in clips])
    cand = np.concatenate([cache.flow(c, spec)[:, :, :rows] for c in clips])
    moving = ref[:, MOVING] > 0.1
    return float(cand[:, SPEED][moving].mean() / ref[:, SPEED][moving].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("normal", type=Path)
    parser.add_argument("flows", nargs="+", help="PRESET@SCALE")
    parser.add_argument("--rows", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args()
    from models.build import trunk_path

    config = AnomalyConfig()
    cache = FeatureCache(args.cache, trunk_path(Path("build/models"), config.height, config.width))
    clips = find_clips(args.normal)
    out = {}
    for flow in args.flows:
        preset, _, scale = flow.partition("@")
        out[flow] = round(far_field_ratio(cache, clips, preset, float(scale or 1.0), args.rows), 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
