"""The model set the stream benchmark runs, built into ``build/bench-models`` (INT8) and
``build/bench-models-fp32``: the shipped ``fight`` model and the anomaly model at 224x224.

The two share no graph. ``fight`` runs its own per-frame motion graph (EfficientNet-Lite0 on the
runtime's 160x160 frame differences, ``runtime.delta``) and a small window head; with ``int8`` the
motion graph is INT8 (ONNX Runtime static quantization, calibrated on the shipped demo clip).
``anomaly-224`` is the shipped anomaly design at 224x224, fitted on UCSD Ped2 train: since round 10
of models/anomaly/README.md motion only (optical flow, no trunk); a design with an appearance part
runs the 224x224 backbone trunk (INT8 with ``int8``) and is fitted through that very trunk, so its
statistics match what it will see.

Built once (a few minutes, mostly the anomaly fit); ``fight`` is rebuilt when the committed
weights change. Accuracy of each is measured and reported with the speed figures, because a
faster model that detects less is no win.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from models.anomaly.fit import AnomalyConfig, fit_package
from models.build import ROOT, trunk_path

OUT = ROOT / "build" / "bench-models"
PED2 = ROOT.parent / "shared" / "data" / "ucsd_ped2"
FIGHT_DATA = ROOT.parent / "shared" / "data" / "fight" / "train"
ANOMALY = AnomalyConfig(height=224, width=224)  # capture sends one 224x224 frame to both models

logger = logging.getLogger(__name__)


def build(int8: bool = True) -> dict[str, Path]:
    """``fight`` and ``anomaly-224`` packages (INT8 with ``int8``); skips what is up to date."""
    out = out_dir(int8)
    packages = {"fight": build_fight(int8), "anomaly-224": out / "anomaly-224"}
    if not _fitted_with(packages["anomaly-224"], ANOMALY):
        fit_package(PED2 / "train", packages["anomaly-224"], seed=0, trunk=trunk_path(out, int8=int8),
                    name="anomaly-224", config=ANOMALY)
    return packages


def _fitted_with(package: Path, config: AnomalyConfig) -> bool:
    """Was ``package`` fitted with ``config`` (its manifest records it)? A package of another design, e.g.
    from before a change of ``AnomalyConfig``'s defaults, is refitted rather than benched as if current."""
    manifest = package / "manifest.json"
    if not manifest.exists():
        return False
    recorded = json.loads(manifest.read_text()).get("metrics", {}).get("fit", {}).get("config")
    return bool(recorded == json.loads(json.dumps(asdict(config))))


def out_dir(int8: bool) -> Path:
    return OUT if int8 else OUT.with_name("bench-models-fp32")


def build_fight(int8: bool = True) -> Path:
    """The shipped ``fight`` package from the committed weights, unless it was built from these very weights
    (a stamp beside the package holds their sha256; an older package, e.g. of the trunk design, has none)."""
    from models.action.cli import build_shipped
    from models.action.shipped import WEIGHTS

    out = out_dir(int8)
    stamp = out / "fight.weights-sha256"
    digest = hashlib.sha256(WEIGHTS.read_bytes()).hexdigest() if WEIGHTS.exists() else ""
    if not ((out / "fight" / "manifest.json").exists() and stamp.exists() and stamp.read_text() == digest):
        build_shipped(out, int8)
        stamp.write_text(digest)
    return out / "fight"


def accuracy(packages: dict[str, Path]) -> dict[str, Any]:
    """Ped2 frame AUC of the anomaly model; fight accuracy/AUC on the 200 shared clips (the shipped model
    was trained on all of them: compare FP32 vs INT8 with it, not against the cross-validated figure)."""
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
