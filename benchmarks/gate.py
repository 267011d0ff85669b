"""Does the motion gate lose events? Alerts and Ped2 AUC with the gate on vs off.

Each source is played as a live camera would be: sampled by stream time at the camera's fps, each
sampled (decoded, full-size) frame offered to the camera's ``CameraGate`` exactly as capture does,
the frames it lets through resized to the model input and scored by ``PackageRunner`` (frame seq
numbers with the gaps the gate leaves, so windows/deltas/flow restart after each gap), the window
results fed to the sink's ``Rule`` objects on stream time. Only the processes and sockets of the
live path are left out, so the figures do not depend on the machine's load.

- the shipped demo (``deploy/examples/demo.yaml``: its cameras, models and rules, each file once;
  ``--quick``: the first 60 s, as long as ``make demo`` runs);
- UCSD Ped2 test clips (``ped2-anomaly``; rule: the package threshold held 0.5 s): alerts, and the
  pooled frame AUC (each frame scored by the latest window covering it, as ``vidwatch eval
  anomaly``; a frame the gate held back takes the camera's last score, as the sink would show);
- the fight clips (``fight``, the demo's fight rule), each clip a camera.

Alerts match when the same rule on the same camera starts within one window stride (in seconds).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.config import RuleConfig, load_config
from pipeline.modelpkg import ModelPackage, load_package
from pipeline.motion_gate import CameraGate, MotionGateConfig, full_rate_seconds
from pipeline.rules import Rule
from pipeline.runner import FrameMeta, PackageRunner, Subscription, WindowResult
from pipeline.sampling import RateSampler

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEMO = ROOT / "deploy" / "examples" / "demo.yaml"
DEMO_SECONDS = {True: 60.0, False: float("inf")}  # quick: as long as `make demo` runs; else the whole files
GATE = MotionGateConfig(enabled=True)  # the defaults, as a user turns the gate on
BATCH = 16

Sampled = list[tuple[float, np.ndarray]]  # (stream time, decoded BGR frame)


def sample_file(path: Path, fps: float, seconds: float = float("inf")) -> Sampled:
    cap = cv2.VideoCapture(str(path))
    native = cap.get(cv2.CAP_PROP_FPS) or fps
    sampler, out, i = RateSampler(fps), [], 0
    while cap.grab():
        t, i = i / native, i + 1
        if t >= seconds:
            break
        if sampler.keep(t):
            out.append((t, cap.retrieve()[1]))
    cap.release()
    return out


def sample_folder(path: Path, fps: float = 10.0) -> Sampled:
    return [(i / fps, cv2.imread(str(p))) for i, p in enumerate(sorted(path.glob("*.jpg")))]


def gated(frames: Sampled, gate: CameraGate[int]) -> list[int]:
    """The frames (by seq) ``gate`` lets through, in the order capture would send them."""
    return [s for seq, (t, bgr) in enumerate(frames) for s in gate.offer(t, bgr, seq)]


def replay(runner: PackageRunner, camera: str, subs: list[Subscription], frames: Sampled,
           sent: list[int]) -> list[WindowResult]:
    """Window results of ``camera`` when capture sends the frames ``sent`` (seq numbers, gaps and all)."""
    package = runner.packages[subs[0].package]
    size = (package.manifest.input.width, package.manifest.input.height)
    runner.add_camera(camera, subs)
    results: list[WindowResult] = []
    pending: list[int] = []

    def flush() -> None:
        rgb = np.stack([cv2.cvtColor(cv2.resize(frames[s][1], size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
                        for s in pending])
        results.extend(runner.process(rgb, [FrameMeta(camera, s, frames[s][0], frames[s][0]) for s in pending]))
        for state in runner.camera_states(camera).values():
            state.wait_fitted(300)  # live, frames go on during a fit; here the fit takes no stream time
        pending.clear()

    for s in sent:
        pending.append(s)
        if len(pending) == BATCH:
            flush()
    if pending:
        flush()
    return results


def alerts(results: list[WindowResult], rules: list[RuleConfig], camera_model: dict[str, str]) -> list[dict[str, Any]]:
    """What the sink raises from these results (alert starts and ends on stream time)."""
    live = [Rule(r) for r in rules]
    opened: dict[str, dict[str, Any]] = {}
    out: list[dict[str, Any]] = []
    for result in results:
        for rule in live:
            if not rule.applies_to(result.camera, camera_model[result.package]):
                continue
            label = rule.config.label or result.alert_label
            tr = rule.update(result.camera, float(result.scores[result.labels.index(label)]), result.last.t_stream)
            if tr is not None and tr.kind == "start":
                opened[tr.alert_id] = {"rule": rule.config.name, "camera": result.camera, "start": round(tr.start, 2)}
                out.append(opened[tr.alert_id])
            elif tr is not None:
                opened.pop(tr.alert_id, {})["end"] = round(tr.end or 0.0, 2)
    return out


def match(off: list[dict[str, Any]], on: list[dict[str, Any]], tolerance_s: float) -> dict[str, Any]:
    """Pair alerts of the same rule and camera whose starts lie within ``tolerance_s``."""
    unmatched = list(on)
    shifts, missed = [], []
    for a in off:
        near = [b for b in unmatched if (b["rule"], b["camera"]) == (a["rule"], a["camera"])
                and abs(b["start"] - a["start"]) <= tolerance_s + 1e-6]
        if near:
            best = min(near, key=lambda b: abs(b["start"] - a["start"]))
            unmatched.remove(best)
            shifts.append(abs(best["start"] - a["start"]))
        else:
            missed.append(a)
    return {"alerts_gate_off": len(off), "alerts_gate_on": len(on), "matched": len(shifts),
            "missed_with_gate": missed[:10], "extra_with_gate": unmatched[:10],
            "max_start_shift_s": round(max(shifts, default=0.0), 3), "tolerance_s": tolerance_s,
            "same_events": not missed and not unmatched}


def _stride_s(package: ModelPackage, stride: int | None, fps: float) -> float:
    return (stride or package.manifest.window.stride) / fps


def _both(runner_of: Any, cameras: Iterator[tuple[str, list[Subscription], Sampled, float]]) -> dict[str, Any]:
    """Replay every camera with the gate off and on; collect results and frame counts.

    Where the gate let every frame of a camera through, the gate-on results are the gate-off ones
    (same frames, same seq numbers, same batches, same code), so they are not computed twice."""
    out: dict[str, Any] = {"off": [], "on": [], "frames": 0, "sent_on": 0, "sent": {}, "replayed_on": 0}
    runners = {"off": runner_of(), "on": runner_of()}
    for camera, subs, frames, full_rate_s in cameras:
        every = list(range(len(frames)))
        sent = gated(frames, CameraGate(camera, GATE, None, full_rate_s))
        off = replay(runners["off"], camera, subs, frames, every)
        out["off"] += off
        if sent == every:
            out["on"] += off
        else:
            out["on"] += replay(runners["on"], camera, subs, frames, sent)
            out["replayed_on"] += 1
        out["frames"] += len(frames)
        out["sent_on"] += len(sent)
        out["sent"][camera] = (sent, len(frames))
    return out


def demo(quick: bool = False) -> dict[str, Any]:
    config = load_config(DEMO)
    packages = {name: load_package(ROOT / pkg.path if not pkg.path.is_absolute() else pkg.path)
                for name, pkg in config.models.items()}
    names = {p.name: n for n, p in packages.items()}

    def cameras() -> Iterator[tuple[str, list[Subscription], Sampled, float]]:
        for cam in config.cameras:
            subs = [Subscription(packages[r.model].name, r.stride, r.calibrate_seconds) for r in cam.models]
            full = full_rate_seconds([r.calibrate_seconds for r in cam.models], [packages[r.model] for r in cam.models])
            yield cam.id, subs, sample_file(ROOT / str(cam.source), cam.fps, DEMO_SECONDS[quick]), full

    both = _both(lambda: PackageRunner(list(packages.values())), cameras())
    tolerance = max(_stride_s(packages[r.model], r.stride, c.fps) for c in config.cameras for r in c.models)
    return {**match(alerts(both["off"], list(config.rules), names), alerts(both["on"], list(config.rules), names),
                    tolerance), "frames_sent_share": round(both["sent_on"] / both["frames"], 3),
            "cameras_gate_closed_sometime": both["replayed_on"],
            "frames_sent_share_by_camera": {cam: round(len(sent) / total, 3)
                                            for cam, (sent, total) in both["sent"].items()}}


def ped2(quick: bool) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score

    from models.anomaly.evaluate import read_labels
    from pipeline.runner import _assemble

    test = DATA / "ucsd_ped2" / "test"
    package = load_package(ROOT / "build" / "models" / "ped2-anomaly")
    labels = read_labels(test / "labels.csv")
    clips = sorted(labels)[:3] if quick else sorted(labels)
    rule = RuleConfig(name="ped2", model=package.name, threshold=package.manifest.threshold or 1.0,
                      clear_threshold=0.8 * (package.manifest.threshold or 1.0), min_duration_s=0.5, cooldown_s=5)
    cams = ((clip, [Subscription(package.name, 1)], sample_folder(test / clip), 0.0) for clip in clips)
    both = _both(lambda: PackageRunner([package]), cams)
    aucs = {}
    for mode in ("off", "on"):
        scores = []
        for clip in clips:
            clip_results = [r for r in both[mode] if r.camera == clip]
            s = _assemble(clip_results, len(labels[clip]), package).frame_scores
            scores.append(np.where(np.isnan(s), np.nanmin(s), s))  # held back before any window: calm
        aucs[mode] = float(roc_auc_score(np.concatenate([labels[c] for c in clips]), np.concatenate(scores)))
    names = {package.name: package.name}
    return {**match(alerts(both["off"], [rule], names), alerts(both["on"], [rule], names), 0.1),
            "auc_gate_off": round(aucs["off"], 4), "auc_gate_on": round(aucs["on"], 4),
            "auc_change_points": round(100 * (aucs["on"] - aucs["off"]), 2), "clips": clips,
            "frames_sent_share": round(both["sent_on"] / both["frames"], 3),
            "cameras_gate_closed_sometime": both["replayed_on"],
            "protocol": "pooled frame AUC on the Ped2 test clips listed, shipped ped2-anomaly (fitted on Ped2 train), "
                        "stride 1, scored through the gate + runner as live"}


def fight(quick: bool) -> dict[str, Any]:
    config = load_config(DEMO)
    rule = next(r for r in config.rules if r.model == "fight")
    package = load_package(ROOT / "build" / "models" / "fight")
    fps = package.manifest.window.fps or 10.0
    root = DATA / "fight" / "train"
    clips = [p for kind in ("fight", "nofight") for p in sorted((root / kind).glob("*.mp4"))[:10 if quick else 50]]
    rule = rule.model_copy(update={"model": package.name, "cameras": []})
    cams = ((clip.stem, [Subscription(package.name)], sample_file(clip, fps), 0.0) for clip in clips)
    both = _both(lambda: PackageRunner([package]), cams)
    names = {package.name: package.name}
    return {**match(alerts(both["off"], [rule], names), alerts(both["on"], [rule], names),
                    _stride_s(package, None, fps)),
            "clips": len(clips), "frames_sent_share": round(both["sent_on"] / both["frames"], 3),
            "cameras_gate_closed_sometime": both["replayed_on"]}


def run(quick: bool = False) -> dict[str, Any]:
    started = time.monotonic()
    report: dict[str, Any] = {"gate": GATE.model_dump(), "method": __doc__.split("\n\n")[1].replace("\n", " ")}
    for name, fn in (("demo", lambda: demo(quick)), ("ped2", lambda: ped2(quick)), ("fight", lambda: fight(quick))):
        t0 = time.monotonic()
        report[name] = fn()
        report[name]["seconds"] = round(time.monotonic() - t0, 1)
        print(name, json.dumps(report[name])[:400], flush=True)
    report["alerts_same"] = all(report[k]["same_events"] for k in ("demo", "ped2", "fight"))
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
