"""What a change of the anomaly model's design does to events at the bench's stride: the six shared Ped2
test clips replayed through the live runner at stride 4 and the Ped2 rule (as ``benchmarks.gate``), for
packages fitted identically but for one fit parameter (round 7: ``appearance_frames`` all vs last).

In-sample (the design was chosen on these clips): only the difference between the two packages means
anything. ``python -m benchmarks.anomaly_events [OUT]`` writes ``OUT/events.json`` (default runs/r7).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from benchmarks import gate
from benchmarks.profile import ANOMALY
from models.anomaly.evaluate import read_labels
from models.anomaly.fit import AnomalyConfig, fit_package
from models.build import ROOT, trunk_path
from pipeline.config import RuleConfig
from pipeline.modelpkg import load_package
from pipeline.runner import PackageRunner, Subscription, _assemble

PED2 = ROOT.parent / "shared" / "data" / "ucsd_ped2"
STRIDE = 4  # the bench's window stride (benchmarks.streams)


def replay_clips(root: Path, labels: dict[str, np.ndarray]) -> dict[str, Any]:
    """Pooled frame AUC and the Ped2 rule's alerts of the package at ``root`` on every labelled clip."""
    package = load_package(root)
    threshold = package.manifest.threshold or 1.0
    rule = RuleConfig(name="ped2", model=package.name, threshold=threshold, clear_threshold=0.8 * threshold,
                      min_duration_s=0.5, cooldown_s=5)
    runner = PackageRunner([package])
    results, scores = [], []
    for clip in sorted(labels):
        frames = gate.sample_folder(PED2 / "test" / clip)
        clip_results = gate.replay(runner, clip, [Subscription(package.name, STRIDE)], frames, list(range(len(frames))))
        results += clip_results
        scores.append(_assemble(clip_results, len(frames), package).frame_scores)
    y = np.concatenate([labels[c] for c in sorted(labels)])
    return {"auc": round(float(roc_auc_score(y, np.concatenate(scores))), 4),
            "alerts": gate.alerts(results, [rule], {package.name: package.name})}


def main(out: Path) -> dict[str, Any]:
    labels = read_labels(PED2 / "test" / "labels.csv")
    configs = {"ped2-anomaly": (AnomalyConfig(), trunk_path(ROOT / "build" / "models", 240, 360)),
               "anomaly-224": (ANOMALY, trunk_path(ROOT / "build" / "bench-models", 224, 224, int8=True))}
    report: dict[str, Any] = {"stride": STRIDE, "clips": sorted(labels)}
    for name, (config, trunk) in configs.items():
        runs = {}
        for frames in ("all", "last"):
            root = out / f"{name}-{frames}"
            if not (root / "manifest.json").exists():
                fit_package(PED2 / "train", root, seed=0, trunk=trunk, name=name,
                            config=replace(config, fit={**config.fit, "appearance_frames": frames}))
            runs[frames] = replay_clips(root, labels)
        m = gate.match(runs["all"]["alerts"], runs["last"]["alerts"], 0.4)
        report[name] = {"auc_all": runs["all"]["auc"], "auc_last": runs["last"]["auc"],
                        "alerts_all": runs["all"]["alerts"], "alerts_last": runs["last"]["alerts"],
                        "same_events": m["same_events"], "only_all": m["missed_with_gate"],
                        "only_last": m["extra_with_gate"]}
        print(name, json.dumps({k: v for k, v in report[name].items() if not k.startswith("alerts")}), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "events.json").write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "runs" / "r7")
