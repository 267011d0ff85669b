"""End to end: N real H.264 streams (640x360, 25 fps, decoded at their real rate) through the
whole pipeline (`vidwatch run`, separate processes), each scored by the action and the anomaly
model on sliding windows. Finds the largest N sustained with < 1% drops and p99
capture->decision latency < 1.5 s, and says where the CPU goes at that N.

Cameras are sampled at the rate the models were trained at: the fight package's manifest
``window.fps`` (10 fps; the anomaly-224 package says 10 fps too, and any model that disagrees is
named in the workload). The window stride is chosen so each camera still gets
``WINDOWS_PER_S`` = 2.5 windows/s per model, as in the earlier 5 fps / stride 2 runs: stride 4
at 10 fps, a decision every 0.4 s. The doubled frame rate then shows as what it costs (twice the
per-frame work), not mixed with twice the window work; the fight package's own default stride
(2 at 10 fps) would score 5 windows/s. Stride 4 is longer than anomaly-224's 3-frame window: one
frame in four is in none of its windows, and the runner computes nothing of that package for it (no
optical flow, no trunk; ``pipeline.camera_state.frame_is_read``); the fight package's 8-frame
windows read every frame. The report says so per model (``per_frame_work``).

Two workloads:

- **all active** (``run``): every camera plays the people clip (someone in view most of the time)
  with the motion gate off, as before: what a box sustains when every camera is busy;
- **mixed** (``run_mixed``): ``ACTIVE_SHARE`` of the cameras play footage with activity (the
  fight demo clip, the UCSD Ped2 test clips, the people clip from the moment someone walks in,
  in turn) and the rest a quiet scene (the empty-room start of the people clip, 0-5.5 s, looped:
  real footage, not black frames), every camera behind the motion gate (its defaults). Drops
  count the frames the gate let through; latency is every decision's (active cameras make almost
  all of them).

Figures come from the pipeline's own Prometheus metrics (a real HTTP scrape) and from /proc.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import cv2

from benchmarks.common import machine_info
from pipeline.camera_state import frame_is_read

ROOT = Path(__file__).resolve().parents[1]
SOURCE_CLIP = ROOT / "deploy" / "samples" / "people.mp4"
WIDTH, HEIGHT, STREAM_FPS = 640, 360, 25
RATE_MODEL = "fight"  # cameras sample at the rate this model was trained at (its manifest window.fps)
WINDOWS_PER_S = 2.5  # per camera and model: the stride follows from the sampling rate
MAX_DROP_RATE, MAX_P99_S = 0.01, 1.5
# A maximum found at saturation is a lucky run on a shared box: the count that also leaves this share of the
# machine's cores unused is reported beside it (issue 16: <= 1.8 of 2 cores).
HEADROOM_SHARE = 0.9
WORKERS = 2  # inference processes: one ORT thread each, cameras routed between them
# Frames per inference run (the pipeline's default). ORT's CPU time per frame is flat from batch 8
# to 32 (INT8 trunk + motion graph, one thread: 8.2-8.6 ms), but its memory arena grows with the
# largest batch seen: ~190 MiB at 16, ~300 MiB at 32 per worker, and a loaded worker reaches it.
MAX_BATCH = 16
WARMUP_S = 20.0  # model loading, calibration, first windows
ACTIVE_SHARE = 0.25  # mixed workload: cameras with activity; the rest show a quiet scene
DATA = ROOT.parent / "shared" / "data"
QUIET_S = (0.0, 5.5)  # people.mp4: the empty room before anyone walks in (the motion gate stays closed)
ACTIVE_FROM_S = 6.0  # people.mp4: someone walks in


def make_clip(out: Path, seconds: float = 40, source: Path = SOURCE_CLIP, start: float = 0.0) -> Path:
    """A 640x360 25 fps H.264 clip (ffmpeg/libx264) from ``source``; mp4v if no ffmpeg."""
    if out.exists():
        return out
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-ss", str(start), "-i", str(source), "-t", str(seconds),
                        "-vf", f"scale={WIDTH}:{HEIGHT},fps={STREAM_FPS}", "-c:v", "libx264", "-preset", "veryfast",
                        "-g", str(2 * STREAM_FPS), "-pix_fmt", "yuv420p", "-an", str(out)], check=True)
        return out
    cap = cv2.VideoCapture(str(source))
    cap.set(cv2.CAP_PROP_POS_MSEC, start * 1000)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), STREAM_FPS, (WIDTH, HEIGHT))
    for _ in range(int(seconds * STREAM_FPS)):
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, (WIDTH, HEIGHT)))
    writer.release()
    return out


def make_ped2_clip(out: Path) -> Path | None:
    """The six UCSD Ped2 test clips (10 fps JPEG frames) one after the other as a 640x360 25 fps clip."""
    test = DATA / "ucsd_ped2" / "test"
    if out.exists() or not test.is_dir():
        return out if out.exists() else None
    tmp = out.with_suffix(".tmp.avi")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), 10, (WIDTH, HEIGHT))
    for clip in sorted(p for p in test.iterdir() if p.is_dir()):
        for jpg in sorted(clip.glob("*.jpg")):
            writer.write(cv2.resize(cv2.imread(str(jpg)), (WIDTH, HEIGHT)))
    writer.release()
    make_clip(out, 1e6, tmp)
    tmp.unlink()
    return out


def mixed_sources() -> dict[str, Any]:
    """Clips of the mixed workload (built once under build/) and where each comes from."""
    build = ROOT / "build"
    active = [make_clip(build / "bench-active-fight.mp4", 1e6, ROOT / "deploy" / "samples" / "fight-demo.mp4"),
              make_ped2_clip(build / "bench-active-ped2.mp4"),
              make_clip(build / "bench-active-people.mp4", 60, SOURCE_CLIP, ACTIVE_FROM_S)]
    quiet = make_clip(build / "bench-quiet-people.mp4", QUIET_S[1] - QUIET_S[0], SOURCE_CLIP, QUIET_S[0])
    return {"active": [p for p in active if p is not None], "quiet": quiet,
            "described": {"active": "in turn: deploy/samples/fight-demo.mp4 (stitched fight clips), UCSD Ped2 "
                                    "Test001-006 back to back, deploy/samples/people.mp4 from 6 s (someone in view)",
                          "quiet": f"deploy/samples/people.mp4 {QUIET_S[0]:g}-{QUIET_S[1]:g} s (the empty room), "
                                   "looped", "encoding": f"H.264 {WIDTH}x{HEIGHT} {STREAM_FPS} fps, looped"}}


def models_under_test(int8: bool = True) -> dict[str, dict[str, Any]]:
    """The action and the anomaly model of the bar (see benchmarks/profile.py), each with the rate
    it was trained at (manifest ``window.fps``)."""
    from benchmarks.profile import build
    from pipeline.modelpkg import load_package

    packages = build(int8=int8)
    tasks = {"fight": "action", "anomaly-224": "anomaly"}
    manifests = {name: load_package(packages[name]).manifest for name in tasks}
    return {name: {"path": str(packages[name]), "task": task, "fps": manifests[name].window.fps,
                   "package_stride": manifests[name].window.stride, "window_frames": manifests[name].window.frames,
                   "window_end_graphs": sorted(manifests[name].window_end_graphs()),
                   "frame_graphs": [g.name for g in manifests[name].frame_graphs()]}
            for name, task in tasks.items()}


def sampling(models: dict[str, dict[str, Any]]) -> tuple[float, int]:
    """Camera fps (the rate ``RATE_MODEL`` was trained at) and the window stride giving ``WINDOWS_PER_S``."""
    fps = models[RATE_MODEL]["fps"]
    if fps is None:
        raise ValueError(f"{models[RATE_MODEL]['path']}: manifest has no window.fps to sample cameras at")
    return float(fps), max(1, round(fps / WINDOWS_PER_S))


def write_config(tmp: Path, clip: Path | list[Path], n: int, models: dict[str, dict[str, Any]], port: int,
                 gate: bool = False) -> Path:
    """``clip``: one clip for every camera, or one per camera."""
    sample_fps, stride = sampling(models)
    refs = ", ".join(f"{{model: {name}, stride: {stride}}}" for name in models)
    clips = clip if isinstance(clip, list) else [clip] * n
    cameras = "\n".join(f"  - {{id: cam{i:02d}, source: {clips[i]}, fps: {sample_fps:g}, loop: true, models: [{refs}]}}"
                        for i in range(n))
    model_lines = "\n".join(f"  {name}: {{path: {m['path']}}}" for name, m in models.items())
    path = tmp / f"streams-{n}.yaml"
    path.write_text(f"""state_dir: {tmp}/state
models:
{model_lines}
inference: {{workers: {WORKERS}, endpoint: "tcp://127.0.0.1:{port + 1}", max_batch: {MAX_BATCH}, max_wait_ms: 50}}
sink: {{endpoint: "tcp://127.0.0.1:{port + 20}", snapshots_dir: {tmp}/snapshots, status_interval_s: 30}}
cameras:
{cameras}
metrics: {{port: {port}}}
motion_gate: {{enabled: {str(gate).lower()}}}
evidence: {{clips: false, endpoint: "tcp://127.0.0.1:{port + 30}"}}
""")
    return path


def scrape(port: int) -> dict[str, float]:
    """Every sample of /metrics as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def _sum(samples: dict[str, float], prefix: str, contains: str = "") -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix) and contains in k)


def _quantile(before: dict[str, float], after: dict[str, float], name: str, q: float) -> float | None:
    """Quantile of a histogram over the interval between two scrapes (linear inside a bucket)."""
    buckets = sorted((float(k.split('le="')[1].split('"')[0]), after[k] - before.get(k, 0.0))
                     for k in after if k.startswith(name + "_bucket"))
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return None
    target, prev_le, prev_count = q * total, 0.0, 0.0
    for le, count in buckets:
        if count >= target:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (target - prev_count) / max(count - prev_count, 1e-9)
        prev_le, prev_count = le, count
    return None


def _process_tree(pid: int) -> list[int]:
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split() if (task / "children").exists() else []
        for kid in kids:
            children += [int(kid), *_process_tree(int(kid))]
    return children


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _role(pid: int, root: int) -> str:
    """The stage a process runs (the supervisor sets VIDWATCH_STAGE before spawning it)."""
    if pid == root:
        return "supervisor"
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    if b"resource_tracker" in cmdline:
        return "helper"
    if b"ffmpeg" in cmdline.split(b"\0")[0]:
        return "ffmpeg"  # evidence recorders (a stage's children inherit its VIDWATCH_STAGE)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    stage = [e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"VIDWATCH_STAGE=")]
    return stage[0] if stage else "helper"


def run_streams(n: int, clip: Path | list[Path], models: dict[str, dict[str, Any]], seconds: float, tmp: Path,
                gate: bool = False) -> dict[str, Any]:
    port = 19100 + n * 40 + (17 if gate else 0)
    config = write_config(tmp, clip, n, models, port, gate)
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "--log-level", "warning", "run", str(config),
                             "--duration", str(WARMUP_S + seconds + 30)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(WARMUP_S)
        pids = [proc.pid, *_process_tree(proc.pid)]
        cpu0, t0, before = {p: _cpu_seconds(p) for p in pids}, time.monotonic(), scrape(port)
        time.sleep(seconds)
        after, wall = scrape(port), time.monotonic() - t0
        cpu = {p: _cpu_seconds(p) - cpu0[p] for p in pids if Path(f"/proc/{p}").exists()}
        rss = {p: _rss_mib(p) for p in cpu}
        roles = {p: _role(p, proc.pid) for p in cpu}
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            err = ""
    return summarize_run(n, before, after, wall, cpu, rss, roles, err)


def summarize_run(n: int, before: dict[str, float], after: dict[str, float], wall: float, cpu: dict[int, float],
                  rss: dict[int, float], roles: dict[int, str], stderr: str) -> dict[str, Any]:
    def delta(prefix: str, contains: str = "") -> float:
        return _sum(after, prefix, contains) - _sum(before, prefix, contains)

    sampled = delta("vidwatch_frames_sampled_total")  # sent on: with the gate, the frames it let through
    dropped = delta("vidwatch_frames_dropped_total")
    gated = delta("vidwatch_frames_gated_total")
    stages = {k.split('stage="')[1].rstrip('"}'): after[k] - before.get(k, 0.0)
              for k in after if k.startswith("vidwatch_stage_seconds_total")}
    total_cpu = sum(cpu.values())
    return {
        "streams": n,
        "seconds": round(wall, 1),
        "frames_decoded_per_s": round(delta("vidwatch_frames_captured_total") / wall, 1),
        "frames_sampled_per_s": round(sampled / wall, 1),
        "frames_gated_per_s": round(gated / wall, 1),
        "gated_share": round(gated / max(gated + sampled, 1.0), 3),
        "windows_per_s": round(delta("vidwatch_windows_scored_total") / wall, 1),
        "drop_rate": round(dropped / max(sampled, 1.0), 4),
        "p50_latency_s": _round(_quantile(before, after, "vidwatch_end_to_end_latency_seconds", 0.5)),
        "p99_latency_s": _round(_quantile(before, after, "vidwatch_end_to_end_latency_seconds", 0.99)),
        "cpu_cores_used": round(total_cpu / wall, 2),
        "cpu_per_stream": round(total_cpu / wall / n, 3),
        "cpu_by_process": _by_role({p: c / wall for p, c in cpu.items()}, roles, 2),
        "rss_mib": round(sum(rss.values()), 1),
        "rss_mib_by_process": _by_role(rss, roles),
        # what capture's evidence frame rings hold at the end (native frames sent, I420), of capture's RSS
        "frame_ring_mib": round(_sum(after, "vidwatch_evidence_frame_ring_bytes") / 2**20, 1),
        "stage_cpu_share": {k: round(v / wall, 3) for k, v in sorted(stages.items(), key=lambda x: -x[1])},
        "errors": [line for line in stderr.splitlines() if "ERROR" in line][:5],
    }


def _by_role(values: dict[int, float], roles: dict[int, str], digits: int = 1) -> dict[str, float]:
    """Summed per role (several processes share one: an inference stage's ffmpeg children, say)."""
    out: dict[str, float] = {}
    for pid, value in values.items():
        out[roles[pid]] = out.get(roles[pid], 0.0) + value
    return {k: round(v, digits) for k, v in sorted(out.items(), key=lambda x: -x[1])}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def passes(result: dict[str, Any]) -> bool:
    p99 = result["p99_latency_s"]
    return result["drop_rate"] < MAX_DROP_RATE and p99 is not None and p99 < MAX_P99_S


def run(quick: bool = False, counts: tuple[int, ...] | None = None, int8: bool = True) -> dict[str, Any]:
    models = models_under_test(int8)
    tmp = Path(tempfile.mkdtemp(prefix="vidwatch-bench-"))
    clip = make_clip(ROOT / "build" / "bench-640x360-25fps.mp4")
    counts = counts or ((4, 8, 16) if quick else (8, 12, 16, 20, 24, 32))
    seconds = 20.0 if quick else 30.0
    results, best = search(counts, lambda n: run_streams(n, clip, models, seconds, tmp))
    shutil.rmtree(tmp, ignore_errors=True)
    limit = round(HEADROOM_SHARE * (os.cpu_count() or 1), 2)
    roomy = [r for r in results if r["passed"] and r["cpu_cores_used"] <= limit]
    return {
        "workload": workload(models, int8),
        "runs": results,
        "max_streams": best["streams"] if best else 0,
        "at_max": best,
        "headroom_cores": limit,
        "max_streams_headroom": roomy[-1]["streams"] if roomy else 0,  # passing and <= headroom_cores
        "at_max_headroom": roomy[-1] if roomy else None,
        "rss_mib_per_stream": rss_per_stream(results),
        "machine": machine_info(),
    }


def search(counts: tuple[int, ...], run_n: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Run stream counts upwards until one fails after a pass; if the first fails, try half of it
    (once), so a slower machine still reports a maximum."""
    results: list[dict[str, Any]] = []
    best = None
    queue = list(counts)
    while queue:
        n = queue.pop(0)
        result = run_n(n)
        result["passed"] = passes(result)
        results.append(result)
        print(json.dumps(result), flush=True)
        if result["passed"]:
            best = result
        elif best is None and len(results) == 1 and n >= 4:
            queue = [n // 2]
        else:
            break  # past the knee: more streams only fail harder
    return sorted(results, key=lambda r: r["streams"]), best


def rss_per_stream(runs: list[dict[str, Any]]) -> float | None:
    """What each added camera costs in memory: the RSS slope between the two largest passing runs
    (the first and the last run when fewer than two pass)."""
    passed = [r for r in runs if r["passed"]] or runs
    if len(passed) < 2:
        passed = runs
    if len(passed) < 2:
        return None
    a, b = passed[-2], passed[-1]
    return round((b["rss_mib"] - a["rss_mib"]) / (b["streams"] - a["streams"]), 1)


def run_mixed(quick: bool = False, counts: tuple[int, ...] | None = None, int8: bool = True,
              share: float = ACTIVE_SHARE) -> dict[str, Any]:
    """The mixed workload: ``share`` of the cameras active, the rest quiet, all behind the motion gate."""
    models = models_under_test(int8)
    sources = mixed_sources()
    tmp = Path(tempfile.mkdtemp(prefix="vidwatch-bench-mixed-"))
    counts = counts or ((8, 16, 32) if quick else (16, 24, 32, 40, 48, 64))
    seconds = 20.0 if quick else 30.0

    def mixed(n: int) -> dict[str, Any]:
        active = max(1, round(share * n))
        clips = [sources["active"][i % len(sources["active"])] for i in range(active)]
        clips += [sources["quiet"]] * (n - active)
        return {**run_streams(n, clips, models, seconds, tmp, gate=True), "active_cameras": active}

    results, best = search(counts, mixed)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"workload": {**workload(models, int8), "active_share": share, "sources": sources["described"],
                         "motion_gate": "enabled on every camera, defaults (pipeline/motion_gate.py)"},
            "runs": results, "max_streams_mixed": best["streams"] if best else 0, "at_max": best,
            "active_share": share, "rss_mib_per_stream": rss_per_stream(results)}


def per_frame_work(models: dict[str, dict[str, Any]], stride: int) -> str:
    """Which sampled frames each model computes: with a stride longer than its window, the frames
    between windows are in none, and the runner skips them."""
    parts = []
    for name, m in models.items():
        frames = m["window_frames"]
        # the runner's own rule, over one stride cycle once the ring has filled
        unread = sum(not frame_is_read(p, frames, stride) for p in range(frames + 1, frames + 1 + stride))
        if unread:
            parts.append(f"{name}: stride {stride} > its {frames}-frame window, so {unread} frame(s) in "
                         f"{stride} are in no window and not computed (no runtime features, no frame graphs)")
        else:
            parts.append(f"{name}: its {frames}-frame window >= stride {stride}, so every frame is computed")
        if m.get("window_end_graphs"):  # read by windows for their last frame only (manifest last_frame_only)
            parts[-1] += (f"; its {', '.join(m['window_end_graphs'])} graph runs only on the frame ending each "
                          f"window (1 in {stride})")
    return "; ".join(parts)


def workload(models: dict[str, dict[str, Any]], int8: bool) -> dict[str, Any]:
    """What the stream figures were measured on, in words and numbers."""
    sample_fps, stride = sampling(models)
    precision = "INT8" if int8 else "FP32"
    other_rates = {name: m["fps"] for name, m in models.items() if m["fps"] != sample_fps}
    own_strides = {name: m["package_stride"] for name, m in models.items()}
    return {"resolution": f"{WIDTH}x{HEIGHT}", "stream_fps": STREAM_FPS, "sample_fps": sample_fps,
            "sample_fps_source": f"window.fps of the {RATE_MODEL} package (the rate it was trained at)"
                                 + (f"; trained at other rates: {other_rates}" if other_rates else
                                    "; every model was trained at this rate"),
            "window_stride_frames": stride, "windows_per_s_per_model": sample_fps / stride,
            "stride_choice": f"stride {stride} keeps {WINDOWS_PER_S} windows/s per camera and model, as the "
                             f"earlier 5 fps / stride 2 runs (the packages' own strides: {own_strides})",
            "per_frame_work": per_frame_work(models, stride),
            "models": {name: m["task"] for name, m in models.items()},
            "engine": f"onnxruntime CPU (INT8 input fold), {precision} fight motion graph (on runtime frame "
                      "deltas) and " + (f"{precision} anomaly-224 trunk, no graph shared"
                                        if "trunk" in models["anomaly-224"].get("frame_graphs", ["trunk"]) else
                                        "anomaly-224 motion only (DIS flow, no trunk)"),
            "clip": "people.mp4 re-encoded H.264 640x360 25 fps, decoded at real rate, looped",
            "evidence": "snapshot frame ring on (defaults); clip recording off: the bench plays files, which "
                        "FFmpeg would re-encode per camera (~2% of a core each), where RTSP cameras are "
                        "recorded by stream copy",
            "max_batch": MAX_BATCH, "inference_workers": WORKERS,
            "criteria": f"drop_rate < {MAX_DROP_RATE}, p99 < {MAX_P99_S} s"}


if __name__ == "__main__":
    quick = "--quick" in sys.argv
    counts = tuple(int(a) for a in sys.argv[1:] if a.isdigit()) or None
    print(json.dumps(run_mixed(quick, counts) if "--mixed" in sys.argv else run(quick, counts), indent=2))
