"""The phases of the prepared GPU check (``benchmarks/gpu_check.sh`` runs each under its own time cap):

    python -m benchmarks.gpu_bench engines --models DIR --device cuda --out engines.json
    python -m benchmarks.gpu_bench gate    --models DIR --data DIR --device cuda --out gate.json
    python -m benchmarks.gpu_bench streams --models DIR --device cuda --out streams.json
    python -m benchmarks.gpu_bench report  --parts DIR --out DIR      (one JSON + Markdown named after the GPU)

Only ``pipeline`` engines, numpy, OpenCV, scikit-learn and the model packages are used (no
training code, no ``../shared/data``): the check runs on a machine that has only the carried
wheels, packages (``--models``) and clips (``--data``, see ``benchmarks/gpu_data.sh``).

``--device cpu`` runs every phase with the same engine class on the CPU (smaller sizes): that is
how the plumbing is proven on a machine without a GPU; its figures are not GPU figures.

engines: per graph (the shared trunk 240x360, fight motion 160x160, the ped2 anomaly
scorer with its shipped state) and batch, median/p90 latency and frames (or windows)/s of
ONNX Runtime CPU (reference, a few batches), torch-cuda fp32/fp16, eager and with CUDA graphs.

gate: FP16 (torch-cuda autocast) against the FP32 ONNX graphs on ONNX Runtime CPU, on real clips:
max abs diff of outputs, top-1 agreement of fight windows, fight clip accuracy change, Ped2
frame AUC change (points). A loss over 1 point is marked refused; ``--record`` writes the
result into each package's ``precision_gate.json`` (read by the engines at load).

streams: ``vidwatch run`` (the supervisor, separate processes) with N looping 640x360 25 fps
cameras, each scored by fight + ped2-anomaly; N grows until drops >= 1% or p99 >= 1.5 s.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GATE_LOSS_POINTS = 1.0
logger = logging.getLogger("gpu_bench")


# -- shared ----------------------------------------------------------------------------------
def gpu_info() -> dict[str, Any]:
    """Name, memory, driver and library versions (torch is imported here: benchmarks may)."""
    from importlib import metadata

    info: dict[str, Any] = {"cores": os.cpu_count()}
    for dist in ("torch", "onnxruntime", "onnxruntime-gpu", "onnx", "onnx2torch", "numpy", "opencv-python-headless",
                 "pydantic", "pyzmq", "tensorrt"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    try:
        import torch

        info["torch_cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                        capability=f"{props.major}.{props.minor}")
    except ImportError:
        pass
    return info


def engine_options(device: str, fp16: bool = False, graphs: bool = True,
                   batch_sizes: tuple[int, ...] = (1, 8, 32, 128)) -> dict[str, Any]:
    return {"device": device, "fp16": fp16, "cuda_graphs": graphs, "batch_sizes": list(batch_sizes),
            "allow_precision_loss": True, "fallback": "error"}


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def time_calls(fn: Callable[[], object], device: str, budget_s: float, max_calls: int = 50) -> dict[str, float]:
    """Median/p90 ms of ``fn`` after 3 warm-up calls, as many calls as fit ``budget_s`` (>= 3)."""
    for _ in range(3):
        fn()
    _sync(device)
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < max_calls and (len(times) < 3 or time.perf_counter() - started < budget_s):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return {"median_ms": round(statistics.median(times), 3), "p90_ms": round(times[int(0.9 * (len(times) - 1))], 3),
            "calls": len(times)}


# -- engines ---------------------------------------------------------------------------------
def graph_inputs(models: Path, graph: str, batch: int, rng: np.random.Generator) -> tuple[Path, dict[str, np.ndarray]]:
    """The graph file and a batch of inputs of its real shapes (state from the package)."""
    if graph == "trunk":  # the shared 240x360 trunk (round 10's ped2-anomaly is motion only and runs none)
        return models / "_trunk" / "trunk-240x360.onnx", {
            "frames": rng.integers(0, 256, (batch, 240, 360, 3), dtype=np.uint8)}
    if graph == "fight-motion":
        return models / "fight" / "motion.onnx", {"delta": rng.integers(0, 256, (batch, 160, 160, 3), dtype=np.uint8)}
    if graph == "anomaly-scorer":
        state = dict(np.load(models / "ped2-anomaly" / "state.npz"))
        window = int(json.loads((models / "ped2-anomaly" / "manifest.json").read_text())["window"]["frames"])
        inputs = {"flow": rng.standard_normal((batch, window, 4, 15, 23)).astype(np.float32), **state}
        if "bank" in state:  # a design with an appearance part also reads the trunk's c4
            inputs["c4"] = rng.standard_normal((batch, window, 112, 15, 23)).astype(np.float32)
        return models / "ped2-anomaly" / "anomaly.onnx", inputs
    raise ValueError(graph)


ENGINE_GRAPHS = ("trunk", "fight-motion", "anomaly-scorer")


def run_engines(models: Path, device: str, batches: list[int], ort_batches: list[int], budget_s: float,
                ort_threads: int, save: Callable[[dict[str, Any]], None], graphs: tuple[str, ...] = ENGINE_GRAPHS,
                only: tuple[str, ...] = ()) -> dict[str, Any]:
    from pipeline.engines import create_engine

    rng = np.random.default_rng(0)
    variants = {"torch-fp32-eager": (False, False), "torch-fp32-graphs": (False, True),
                "torch-fp16-eager": (True, False), "torch-fp16-graphs": (True, True)}
    if device == "cpu":  # no CUDA graphs, and fp16 autocast on CPU is not what a GPU does
        variants = {"torch-fp32-eager": (False, False)}
    if only:  # --variants: a shorter run (the prepared check)
        variants = {name: v for name, v in variants.items() if name in only}
    result: dict[str, Any] = {"device": device, "batches": batches, "ort_batches": ort_batches,
                              "note": "torch fp32 = the engine default, TF32 convs/matmuls; graphs = CUDA graphs "
                                      "captured per batch size; inputs from host numpy, outputs back to host numpy",
                              "ort_threads": ort_threads, "graphs": {}}
    for graph in graphs:
        path, _ = graph_inputs(models, graph, 1, rng)
        rows: dict[str, Any] = {}
        engines: dict[str, Any] = {}
        try:
            engines["ort-cpu"] = create_engine("onnxruntime", path, {"intra_op_threads": ort_threads})
            for name, (fp16, graphs) in variants.items():
                engines[name] = create_engine("torch-cuda", path, engine_options(device, fp16, graphs, tuple(batches)))
        except Exception as exc:  # report and go on with the next graph
            rows["error"] = f"{type(exc).__name__}: {exc}"
        for name, engine in engines.items():
            for batch in ort_batches if name == "ort-cpu" else batches:
                _, inputs = graph_inputs(models, graph, batch, rng)
                try:
                    stats = time_calls(lambda e=engine, x=inputs: e.run(x), device, budget_s)
                except Exception as exc:
                    rows[f"{name}/b{batch}"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                    continue
                stats["per_s"] = round(batch / stats["median_ms"] * 1e3, 1)
                rows[f"{name}/b{batch}"] = stats
                print(f"engines {graph} {name} batch {batch}: {stats}", flush=True)
        result["graphs"][graph] = {"file": str(path.relative_to(models)), "unit": "windows" if graph ==
                                   "anomaly-scorer" else "frames", "cells": rows}
        save(result)  # a time cap keeps what was measured
        del engines
    return result


# -- accuracy gate ---------------------------------------------------------------------------
def ped2_clips(data: Path) -> tuple[list[Path], dict[str, np.ndarray]]:
    root = data / "ucsd_ped2"
    labels: dict[str, dict[int, int]] = {}
    with (root / "test" / "labels.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            labels.setdefault(row["clip"], {})[int(row["frame"])] = int(row["label"])
    clips = sorted(p for p in (root / "test").iterdir() if p.is_dir() and p.name in labels)
    return clips, {c: np.array([f[i] for i in sorted(f)]) for c, f in labels.items()}


def folder_frames(folder: Path, height: int, width: int) -> Iterator[np.ndarray]:
    for path in sorted(folder.glob("*.jpg")):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr.shape[:2] != (height, width):
            bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
        yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def video_frames(path: Path, fps: float, height: int, width: int, min_frames: int) -> np.ndarray:
    """Frames sampled by timestamp at ``fps`` (as capture does), looped to at least one window."""
    from pipeline.sampling import RateSampler

    cap = cv2.VideoCapture(str(path))
    sampler, frames, native = RateSampler(fps), [], cap.get(cv2.CAP_PROP_FPS) or 30.0
    index = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if sampler.keep(index / native):
            rgb = cv2.cvtColor(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
            frames.append(rgb)
        index += 1
    cap.release()
    if not frames:
        raise ValueError(f"{path}: no frame decoded")
    while len(frames) < min_frames:
        frames += frames[: min_frames - len(frames)]
    return np.stack(frames)


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, scores))


def run_gate(models: Path, data: Path, device: str, record: bool, max_frames: int, max_clips: int,
             save: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    from pipeline.engines.precision import GATE_FILE, graph_sha256
    from pipeline.modelpkg import load_package
    from pipeline.runner import PackageRunner, score_frames

    precisions = {"fp32": engine_options(device, False), "fp16": engine_options(device, True)}
    result: dict[str, Any] = {"device": device, "reference": "FP32 ONNX graphs on ONNX Runtime CPU",
                              "torch_fp32": "torch-cuda defaults: TF32 convs/matmuls (tf32: true)",
                              "gate_points": GATE_LOSS_POINTS}
    # Ped2: frame-level AUC over the carried test clips (every frame scored, as in evaluation).
    pkg = load_package(models / "ped2-anomaly")
    m = pkg.manifest
    clips, labels = ped2_clips(data)
    runners = {"ort": PackageRunner([pkg], "onnxruntime", {"intra_op_threads": 4}),
               **{p: PackageRunner([pkg], "torch-cuda", o) for p, o in precisions.items()}}
    scores: dict[str, list[np.ndarray]] = {k: [] for k in runners}
    truth = []
    for clip in clips:
        frames = list(folder_frames(clip, m.input.height, m.input.width))
        clip_labels = labels[clip.name][: len(frames)]
        if len(frames) > max_frames:  # a contiguous segment around the anomaly onset: both classes in it
            change = int(np.argmax(clip_labels != clip_labels[0]))
            start = max(0, min(change - max_frames // 2, len(frames) - max_frames))
            frames, clip_labels = frames[start:start + max_frames], clip_labels[start:start + max_frames]
        truth.append(clip_labels)
        for name, runner in runners.items():
            scores[name].append(score_frames(pkg, frames, stride=1, runner=runner).frame_scores)
    y = np.concatenate(truth)
    auc_ref = _auc(y, np.concatenate(scores["ort"]))
    ped2: dict[str, Any] = {"clips": [c.name for c in clips], "frames": int(len(y)), "auc_fp32_onnx": round(auc_ref, 4)}
    for p in precisions:
        s, ref = np.concatenate(scores[p]), np.concatenate(scores["ort"])
        auc = _auc(y, s)
        ped2[p] = {"auc": round(auc, 4), "auc_change_points": round(100 * (auc - auc_ref), 3),
                   "max_abs_diff_frame_scores": float(np.abs(s - ref).max()),
                   "max_rel_diff": float(np.abs(s - ref).max() / max(np.abs(ref).max(), 1e-9))}
    result["ped2"] = ped2
    save(result)  # a time cap keeps the Ped2 half
    # Fight: clip accuracy (mean window probability >= threshold) and window top-1 agreement.
    fpkg = load_package(models / "fight")
    fm = fpkg.manifest
    fclips = [c for cls in ("fight", "nofight") for c in sorted((data / "fight" / cls).glob("*.mp4"))[:max_clips]]
    fruns = {"ort": PackageRunner([fpkg], "onnxruntime", {"intra_op_threads": 4}),
             **{p: PackageRunner([fpkg], "torch-cuda", o) for p, o in precisions.items()}}
    probs: dict[str, list[float]] = {k: [] for k in fruns}
    windows: dict[str, list[np.ndarray]] = {k: [] for k in fruns}
    truth_f = []
    alert = fm.labels.index(fm.alert_label)
    for clip in fclips:
        frames = video_frames(clip, fm.window.fps or 10.0, fm.input.height, fm.input.width, fm.window.frames)
        truth_f.append(int(clip.parent.name == fm.alert_label))
        for name, runner in fruns.items():
            w = score_frames(fpkg, list(frames), stride=1, runner=runner).window_scores
            windows[name].append(w)
            probs[name].append(float(w[:, alert].mean()))
    threshold = fm.threshold if fm.threshold is not None else 0.5
    yf = np.array(truth_f)
    acc_ref = float(((np.array(probs["ort"]) >= threshold) == yf).mean()) if len(yf) else float("nan")
    fight: dict[str, Any] = {"clips": len(fclips), "windows": int(sum(len(w) for w in windows["ort"])),
                             "accuracy_fp32_onnx": round(acc_ref, 4),
                             "note": "clips the shipped model was trained on: absolute accuracy is optimistic, "
                                     "the change FP16 vs FP32 is what the gate reads"}
    for p in precisions:
        if not fclips:
            break
        w, ref = np.concatenate(windows[p]), np.concatenate(windows["ort"])
        acc = float(((np.array(probs[p]) >= threshold) == yf).mean())
        fight[p] = {"accuracy": round(acc, 4), "accuracy_change_points": round(100 * (acc - acc_ref), 3),
                    "top1_agreement": float((w.argmax(1) == ref.argmax(1)).mean()),
                    "max_abs_diff_window_probs": float(np.abs(w - ref).max())}
    result["fight"] = fight
    # The gate: loss in points of the task metric, per package and precision.
    losses = {"ped2-anomaly": {p: max(0.0, -ped2[p]["auc_change_points"]) for p in precisions}}
    if fclips:
        losses["fight"] = {p: max(0.0, -fight[p]["accuracy_change_points"]) for p in precisions}
    result["gate"] = {pkg_name: {p: {"loss_points": round(v, 3), "refused": v > GATE_LOSS_POINTS}
                                 for p, v in per.items()} for pkg_name, per in losses.items()}
    if record:
        metric = {"ped2-anomaly": "Ped2 frame AUC", "fight": "fight clip accuracy"}
        for pkg_name, per in losses.items():
            folder = models / pkg_name
            gate_path = folder / GATE_FILE
            existing = json.loads(gate_path.read_text()) if gate_path.exists() else {}
            for graph_file in sorted(folder.glob("*.onnx")):
                entry = existing.setdefault(graph_sha256(graph_file), {})
                entry["fp16"] = {"loss_points": round(per["fp16"], 3), "metric": metric[pkg_name],
                                 "measured": f"torch-cuda fp16 on {device}, {time.strftime('%Y-%m-%d')}"}
            gate_path.write_text(json.dumps(existing, indent=1))
        result["recorded"] = True
    return result


# -- streams ---------------------------------------------------------------------------------
def write_streams_config(tmp: Path, clip: Path, n: int, models: Path, port: int, engine: str,
                         workers: int, groups: int, tag: str = "") -> Path:
    cameras = "\n".join(f"  - {{id: cam{i:03d}, source: {clip}, fps: 10, loop: true, group: {i % groups}, "
                        f"models: [{{model: fight, stride: 4}}, {{model: ped2, stride: 4}}]}}" for i in range(n))
    path = tmp / f"streams-{n}{tag}.yaml"
    path.write_text(f"""state_dir: {tmp}/state
models:
  fight: {{path: {models / 'fight'}}}
  ped2: {{path: {models / 'ped2-anomaly'}}}
engine: {engine}
inference: {{workers: {workers}, endpoint: "tcp://127.0.0.1:{port + 1}", max_batch: 64, max_wait_ms: 50}}
sink: {{endpoint: "tcp://127.0.0.1:{port + 90}", snapshots_dir: {tmp}/snapshots, status_interval_s: 30}}
cameras:
{cameras}
metrics: {{port: {port}}}
""")
    return path


CUDA_ENGINE = "{name: torch-cuda, fp16: true, batch_sizes: [1, 8, 16, 32, 64], allow_precision_loss: true}"
ORT_ENGINE = "{name: onnxruntime}"


def run_streams_phase(models: Path, device: str, counts: list[int], seconds: float, warmup: float,
                      workers: int, groups: int, deadline_s: float, save: Callable[[dict[str, Any]], None],
                      engine: str | None = None, control: int = 0) -> dict[str, Any]:
    """N grows (then bisects) until a run fails; ``control`` > 0 first runs ONNX Runtime CPU at that
    N with the same workers (the control: is a failure the engine's or the harness's/machine's?)."""
    from benchmarks import streams

    engine = engine or (CUDA_ENGINE if device == "cuda" else ORT_ENGINE)
    tmp = Path(tempfile.mkdtemp(prefix="vidwatch-gpu-streams-"))
    clip = streams.make_clip(tmp / "bench-640x360-25fps.mp4", seconds=20)
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    control_run: dict[str, Any] | None = None
    if control > 0:
        port = 20000 + (control * 89) % 20000
        config = write_streams_config(tmp, clip, control, models, port, ORT_ENGINE, workers, groups, "control")
        control_run = _run_one(config, port, control, warmup, seconds)
        control_run.update(engine=ORT_ENGINE, passed=streams.passes(control_run))
        print("streams control", json.dumps(control_run), flush=True)
        save(_streams_result(device, engine, workers, groups, runs, best, control_run))
    queue, failed_at = list(counts), None
    while queue:
        n = queue.pop(0)
        if time.monotonic() - started + min(warmup, 30) + seconds + 15 > deadline_s:
            runs.append({"streams": n, "skipped": "phase time cap"})
            break
        port = 20000 + (n * 97) % 20000
        config = write_streams_config(tmp, clip, n, models, port, engine, workers, groups)
        result = _run_one(config, port, n, warmup, seconds)
        result["passed"] = streams.passes(result)
        runs.append(result)
        print("streams", json.dumps(result), flush=True)
        if result["passed"]:
            best = result if best is None or n > best["streams"] else best
        else:
            failed_at = n if failed_at is None else min(failed_at, n)
        save(_streams_result(device, engine, workers, groups, runs, best, control_run))
        if failed_at is not None:  # past the knee: bisect between the best pass and the first failure
            low = best["streams"] if best else 0
            mid = (low + failed_at) // 2
            queue = [mid] if low < mid < failed_at and failed_at - low > max(2, low // 8) else []
    return _streams_result(device, engine, workers, groups, runs, best, control_run)


def _streams_result(device: str, engine: str, workers: int, groups: int, runs: list[dict[str, Any]],
                    best: dict[str, Any] | None, control: dict[str, Any] | None = None) -> dict[str, Any]:
    from benchmarks import streams

    return {"device": device, "engine": engine, "inference_workers": workers, "capture_processes": groups,
            "workload": "N cameras looping people.mp4 re-encoded 640x360 25 fps, decoded at real rate, sampled at "
                        "10 fps; each scored by fight (motion per frame, window 8, stride 4) and ped2-anomaly "
                        "(DIS flow per frame on the CPU; the trunk 240x360 only for a design with an appearance part; "
                        "its own window, stride 4)",
            "criteria": f"drop_rate < {streams.MAX_DROP_RATE}, p99 < {streams.MAX_P99_S} s",
            "control": control, "runs": runs, "max_streams": best["streams"] if best else 0, "at_max": best}


READY_SETTLE_S = 5.0  # after the first scored window: the start-up backlog drains


def _run_one(config: Path, port: int, n: int, warmup: float, seconds: float) -> dict[str, Any]:
    """streams.run_streams with our own config (same scrape / CPU accounting), plus what shows where a
    worker's time goes: per-call inference latency, batch sizes, and the engines' log (CUDA graph
    captures, fallbacks) with the time each line came, relative to the measured interval.

    Measuring starts ``READY_SETTLE_S`` after the first window is scored (engines loaded, graphs
    captured), or at ``warmup`` seconds at the latest."""
    import subprocess

    from benchmarks import streams

    log_path = config.with_suffix(".log")
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "--log-level", "info", "run", str(config),
                                 "--duration", str(warmup + seconds + 30)], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=log, text=True)
    launched = time.monotonic()
    try:
        deadline, ready_at = launched + warmup, None
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
            if ready_at is None:
                try:
                    if streams._sum(streams.scrape(port), "vidwatch_windows_scored_total") > 0:
                        ready_at = time.monotonic()
                        deadline = min(deadline, ready_at + READY_SETTLE_S)
                except OSError:
                    pass  # metrics server not up yet
        if proc.poll() is not None:
            return {"streams": n, "passed": False, "drop_rate": 1.0, "p99_latency_s": None,
                    "errors": log_path.read_text(errors="replace")[-2000:].splitlines()[-8:]}
        pids = [proc.pid, *streams._process_tree(proc.pid)]
        cpu0, t0, before = {p: streams._cpu_seconds(p) for p in pids}, time.monotonic(), streams.scrape(port)
        time.sleep(seconds)
        after, wall = streams.scrape(port), time.monotonic() - t0
        cpu = {p: streams._cpu_seconds(p) - cpu0[p] for p in pids if Path(f"/proc/{p}").exists()}
        rss = {p: streams._rss_mib(p) for p in cpu}
        roles = {p: streams._role(p, proc.pid) for p in cpu}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    text = log_path.read_text(errors="replace")
    result = streams.summarize_run(n, before, after, wall, cpu, rss, roles, text)
    result["engine_info"] = [k for k in after if k.startswith("vidwatch_engine_info")]
    result["ready_after_s"] = None if ready_at is None else round(ready_at - launched, 1)
    result["measured_from_s"] = round(t0 - launched, 1)
    result.update(worker_calls(before, after))
    result["engine_log"] = engine_log(text)
    return result


def worker_calls(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Inference calls in the measured interval: how many, frames per call, seconds per call (p50/p99,
    max bucket), and seconds per frame: a worker that stalls shows calls of seconds here."""
    from benchmarks import streams

    def delta(name: str) -> float:
        return streams._sum(after, name) - streams._sum(before, name)

    calls = delta("vidwatch_inference_latency_seconds_count")
    frames = delta("vidwatch_inference_batch_size_sum")
    seconds = delta("vidwatch_inference_latency_seconds_sum")
    return {"infer_calls": int(calls), "infer_frames_per_call": round(frames / calls, 2) if calls else None,
            "infer_call_p50_s": streams._round(streams._quantile(before, after,
                                                                 "vidwatch_inference_latency_seconds", 0.5)),
            "infer_call_p99_s": streams._round(streams._quantile(before, after,
                                                                 "vidwatch_inference_latency_seconds", 0.99)),
            "infer_ms_per_frame": round(seconds / frames * 1e3, 2) if frames else None}


ENGINE_LOG_MARKS = ("torch-cuda:", "capture", "ERROR", "Traceback", "falling back", "instead")


def engine_log(text: str, limit: int = 40) -> list[str]:
    """The inference workers' engine lines (loads, CUDA graph captures and failures, fallbacks, errors)."""
    lines = [line[:300] for line in text.splitlines()
             if (" infer-" in line or "Error" in line) and any(mark in line for mark in ENGINE_LOG_MARKS)]
    return lines[:limit // 2] + lines[-(limit // 2):] if len(lines) > limit else lines


# -- report ----------------------------------------------------------------------------------
def write_report(parts: Path, out: Path) -> Path:
    report: dict[str, Any] = {}
    for name in ("machine", "pytest", "engines", "gate", "streams"):
        path = parts / f"{name}.json"
        if path.exists():
            try:
                report[name] = json.loads(path.read_text())
            except ValueError as exc:
                report[name] = {"error": f"unreadable: {exc}"}
        else:
            report[name] = {"error": "phase wrote nothing (failed or timed out: see its log)"}
    for log in sorted(parts.glob("*.log")):
        report.setdefault("log_tails", {})[log.stem] = log.read_text(errors="replace")[-1500:]
    gpu = report["machine"].get("gpu") or f"no-gpu-{report['machine'].get('device', 'cpu')}"
    slug = "".join(c if c.isalnum() else "-" for c in str(gpu)).strip("-").lower()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"gpu-{slug}-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=1, default=str))
    (out / f"gpu-{slug}-{stamp}.md").write_text(markdown(report))
    return json_path


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [f"# GPU check: {m.get('gpu', 'no GPU')} ({m.get('device', '?')})", "",
             f"torch {m.get('torch')} (CUDA {m.get('torch_cuda')}), onnxruntime {m.get('onnxruntime')}, "
             f"onnx2torch {m.get('onnx2torch')}, {m.get('cores')} cores", ""]
    p = r["pytest"]
    lines += ["## gpu-marked tests", "", f"`{p.get('summary', p.get('error', '?'))}`", ""]
    e = r["engines"]
    if "graphs" in e:
        lines += ["## Engines (median ms / per s)", ""]
        for graph, g in e["graphs"].items():
            lines += [f"### {graph} ({g['file']}, {g['unit']}/s)", "",
                      "| engine | batch | median ms | p90 ms | per s |", "|---|---|---|---|---|"]
            for cell, v in g["cells"].items():
                if cell == "error":
                    lines.append(f"| error | | {v} | | |")
                    continue
                name, _, batch = cell.rpartition("/b")
                lines.append(f"| {name} | {batch} | {v.get('median_ms', v.get('error', ''))} | {v.get('p90_ms', '')} "
                             f"| {v.get('per_s', '')} |")
            lines.append("")
    else:
        lines += ["## Engines", "", f"{e.get('error')}", ""]
    gate = r["gate"]
    lines += ["## Accuracy gate (FP16 vs FP32 ONNX)", "", "```", json.dumps(
        {k: gate.get(k) for k in ("ped2", "fight", "gate", "error") if k in gate}, indent=1, default=str), "```", ""]
    s = r["streams"]
    lines += ["## Streams", "", f"{s.get('workload', s.get('error', ''))}; engine `{s.get('engine')}`, "
              f"{s.get('inference_workers')} inference workers; {s.get('criteria', '')}", "",
              f"**max streams: {s.get('max_streams')}**", "",
              "| engine | N | drop rate | p50 s | p99 s | frames/s | windows/s | cores used | call p50 s | "
              "call p99 s | frames/call | ms/frame |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    runs = ([{**s["control"], "label": "control: onnxruntime"}] if s.get("control") else []) + s.get("runs", [])
    for run in runs:
        lines.append(f"| {run.get('label', 'tested')} | {run.get('streams')} | {run.get('drop_rate')} | "
                     f"{run.get('p50_latency_s')} | {run.get('p99_latency_s')} | {run.get('frames_sampled_per_s')} | "
                     f"{run.get('windows_per_s')} | {run.get('cpu_cores_used')} | {run.get('infer_call_p50_s')} | "
                     f"{run.get('infer_call_p99_s')} | {run.get('infer_frames_per_call')} | "
                     f"{run.get('infer_ms_per_frame')} |")
    logs = [line for run in runs for line in run.get("engine_log", [])]
    if logs:
        lines += ["", "Engine log of the stream runs (loads, CUDA graph captures, fallbacks):", "", "```",
                  *logs[:40], "```"]
    return "\n".join(lines) + "\n"


# -- entry -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_bench")
    parser.add_argument("phase", choices=["machine", "engines", "gate", "streams", "report"])
    parser.add_argument("--models", type=Path, default=ROOT / "build" / "models")
    parser.add_argument("--data", type=Path, default=ROOT / ".gpudata")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--parts", type=Path)
    parser.add_argument("--batches", default="1,8,32,128")
    parser.add_argument("--ort-batches", default="1,8,32")
    parser.add_argument("--budget-s", type=float, default=1.0, help="timing seconds per engine and batch")
    parser.add_argument("--graphs", default=",".join(ENGINE_GRAPHS), help="engines: which graphs")
    parser.add_argument("--variants", default="", help="engines: torch variants to time (default all)")
    parser.add_argument("--counts", default="8,16,32,48,64")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=4, help="streams: inference processes")
    parser.add_argument("--groups", type=int, default=4, help="streams: capture processes")
    parser.add_argument("--deadline-s", type=float, default=170.0)
    parser.add_argument("--engine", help="streams: engine YAML (default: torch-cuda fp16 on cuda, onnxruntime on cpu)")
    parser.add_argument("--control", type=int, default=0, help="streams: first run ONNX Runtime CPU at this N")
    parser.add_argument("--max-frames", type=int, default=10_000, help="gate: Ped2 frames per clip at most")
    parser.add_argument("--max-clips", type=int, default=1_000, help="gate: fight clips per class at most")
    parser.add_argument("--record", action="store_true", help="gate: write precision_gate.json into the packages")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731

    def save(result: dict[str, Any]) -> None:  # atomic: a time cap never leaves half a file
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1, default=str))
        os.replace(tmp, args.out)

    if args.phase == "report":
        print(write_report(args.parts, args.out))
        return 0
    if args.phase == "machine":
        result: dict[str, Any] = {**gpu_info(), "device": args.device}
        from pipeline.engines import choose_auto

        result["auto_engine"], result["auto_skipped"] = choose_auto()
    elif args.phase == "engines":
        cpus = os.cpu_count() or 1
        result = run_engines(args.models, args.device, ints(args.batches), ints(args.ort_batches), args.budget_s,
                             min(8, cpus), save, tuple(g for g in args.graphs.split(",") if g),
                             tuple(v for v in args.variants.split(",") if v))
    elif args.phase == "gate":
        result = run_gate(args.models, args.data, args.device, args.record, args.max_frames, args.max_clips, save)
    else:
        result = run_streams_phase(args.models, args.device, ints(args.counts), args.seconds, args.warmup,
                                   args.workers, args.groups, args.deadline_s, save, args.engine, args.control)
    save(result)
    print(f"{args.phase}: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
