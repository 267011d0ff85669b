"""The model set the stream benchmark runs: the shipped fight model and the anomaly model at
224x224 so both share one trunk, with that trunk in INT8 (``build/bench-models``).

Built once (a few minutes: the anomaly model is fitted on UCSD Ped2 train with the INT8 trunk, so
its statistics match what it will see); accuracy of each is measured and reported with the
speed figures, because a faster model that detects less is no win.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from models.anomaly.fit import AnomalyConfig, fit_package
from models.build import ROOT, trunk_path

OUT = ROOT / "build" / "bench-models"
PED2 = ROOT.parent / "shared" / "data" / "ucsd_ped2"
FIGHT_DATA = ROOT.parent / "shared" / "data" / "fight" / "train"
ANOMALY = AnomalyConfig(height=224, width=224)  # shares the 224x224 trunk with the fight model

logger = logging.getLogger(__name__)


def build(int8: bool = True) -> dict[str, Path]:
    """``fight`` and ``anomaly-224`` packages on one (INT8) trunk; skips what exists."""
    from models.action.cli import build_shipped

    out = OUT if int8 else OUT.with_name("bench-models-fp32")
    trunk = trunk_path(out, int8=int8)
    packages = {"fight": out / "fight", "anomaly-224": out / "anomaly-224"}
    if not (packages["fight"] / "manifest.json").exists():
        build_shipped(out, trunk)
    if not (packages["anomaly-224"] / "manifest.json").exists():
        fit_package(PED2 / "train", packages["anomaly-224"], seed=0, trunk=trunk, name="anomaly-224", config=ANOMALY)
    return packages


def accuracy(packages: dict[str, Path]) -> dict[str, Any]:
    """Ped2 frame AUC of the anomaly model; fight accuracy/AUC on the 200 shared clips (the head
    was trained on them: compare FP32 vs INT8 with it, not against the cross-validated figure)."""
    results: dict[str, Any] = {}
    if (PED2 / "test").is_dir():
        results["anomaly-224"] = _last_json(["eval", "anomaly", "--model", str(packages["anomaly-224"]), "--data",
                                             str(PED2 / "test"), "--labels", str(PED2 / "test" / "labels.csv"),
                                             "--json"], keep=("frame_auc", "n_frames"))
    if FIGHT_DATA.is_dir():
        results["fight"] = _last_json(["eval", "action", "--model", str(packages["fight"]), "--data",
                                       str(FIGHT_DATA), "--json"], keep=("accuracy", "auc", "f1", "n"))
    return results


def _last_json(args: list[str], keep: tuple[str, ...]) -> dict[str, Any]:
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "--log-level", "warning", *args], cwd=ROOT,
                         capture_output=True, text=True)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode != 0 or not lines:
        return {"error": (run.stderr or run.stdout)[-500:]}
    data = json.loads(lines[-1])
    return {k: data.get(k) for k in keep}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    int8_packages = build(int8=True)
    print(json.dumps({"int8": accuracy(int8_packages), "fp32": accuracy(build(int8=False))}, indent=2))
