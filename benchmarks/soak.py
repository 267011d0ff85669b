"""Soak: N live-paced streams through `vidwatch run` for M minutes with the shipped models (fight
on the fight demo clip, scene-anomaly on the people clip, alternating), sampling every
``--interval`` seconds:

- RSS and open file descriptors of every process (supervisor, each stage; from /proc),
- frames sampled / dropped by reason, windows scored, alerts (the pipeline's own /metrics),
- end-to-end latency p50/p99 over each interval (histogram deltas),
- ZeroMQ queue depths are not observable from outside libzmq: the bounded queues show as drops
  (``queue_full`` = the per-camera deque, ``inference_busy`` = the PUSH high-water mark).

Verdict: memory is flat when every process's RSS grows < 5% between minute 2 (median of the
samples in [2, 2.5) min) and the end (median of the last 30 s). Writes
``benchmarks/results/soak-<date>-<host>.{json,png}``.

    make soak                                    # 4 streams, 9 min (+ start-up): ~10 min
    python -m benchmarks.soak --streams 8 --minutes 60
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import machine_info
from benchmarks.streams import _process_tree, _quantile, _role, _rss_mib, _sum, scrape

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ROOT / "build" / "models"
CLIPS = {"fight": ROOT / "deploy" / "samples" / "fight-demo.mp4",
         "scene-anomaly": ROOT / "deploy" / "samples" / "people.mp4"}
MAX_RSS_GROWTH = 0.05
BASELINE_S = (120.0, 150.0)  # "minute 2"
END_WINDOW_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(tmp: Path, streams: int, metrics_port: int) -> Path:
    cameras = []
    for i in range(streams):
        model = "fight" if i % 2 else "scene-anomaly"
        calib = ", calibrate_seconds: 5" if model == "scene-anomaly" else ""
        cameras.append(f"  - {{id: cam{i:02d}, source: {CLIPS[model]}, fps: 10, loop: true, "
                       f"models: [{{model: {model}{calib}}}]}}")
    path = tmp / "soak.yaml"
    path.write_text(f"""state_dir: {tmp}/state
models:
  fight: {{path: {MODELS / 'fight'}}}
  scene-anomaly: {{path: {MODELS / 'scene-anomaly'}}}
inference: {{workers: 2, endpoint: "tcp://127.0.0.1:{free_port()}"}}
sink: {{endpoint: "tcp://127.0.0.1:{free_port()}", snapshots_dir: {tmp}/snapshots, status_interval_s: 60}}
cameras:
{chr(10).join(cameras)}
rules:
  - {{name: fight, model: fight, label: fight, threshold: 0.7, clear_threshold: 0.5, min_duration_s: 1, cooldown_s: 5}}
  - {{name: scene, model: scene-anomaly, threshold: 1.5, clear_threshold: 1.0, min_duration_s: 1, cooldown_s: 10}}
outputs:
  - {{type: jsonl, path: {tmp}/alerts.jsonl}}
metrics: {{port: {metrics_port}}}
""")
    return path


def _fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def sample_processes(root: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for pid in [root, *_process_tree(root)]:
        try:
            role = _role(pid, root)
            if role == "helper":
                continue
            out[role] = {"pid": pid, "rss_mib": round(_rss_mib(pid), 1), "fds": _fds(pid)}
        except OSError:
            continue  # exited between listing and reading
    return out


def run(streams: int, minutes: float, interval: float) -> dict[str, Any]:
    metrics_port = free_port()
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="vidwatch-soak-") as tmp_name:
        tmp = Path(tmp_name)
        config = write_config(tmp, streams, metrics_port)
        log = (tmp / "run.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "--log-level", "warning", "run", str(config)],
                                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        previous: dict[str, float] = {}
        try:
            while time.monotonic() - t0 < minutes * 60 and proc.poll() is None:
                time.sleep(interval)
                try:
                    metrics = scrape(metrics_port)
                except OSError:
                    continue
                now = time.monotonic() - t0
                row = sample_row(now, metrics, previous, sample_processes(proc.pid))
                samples.append(row)
                previous = {**metrics, "__t": now}
                print(f"[soak] t={row['t']:.0f}s rss={row['rss_total_mib']:.0f} MiB fds={row['fds_total']} "
                      f"windows/s={row['windows_per_s']:.1f} drops={row['dropped']} p99={row['e2e_p99_s']}",
                      flush=True)
        finally:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        tail = (tmp / "run.log").read_text()[-4000:]
        alerts = (tmp / "alerts.jsonl").read_text().splitlines() if (tmp / "alerts.jsonl").exists() else []
    return {"streams": streams, "minutes": minutes, "interval_s": interval, "samples": samples,
            "alert_records": len(alerts), "exit_code": proc.returncode, "log_tail": tail,
            **verdict(samples)}


def sample_row(t: float, metrics: dict[str, float], previous: dict[str, float],
               processes: dict[str, dict[str, float]]) -> dict[str, Any]:
    dropped: dict[str, float] = {}
    for key, value in metrics.items():
        if key.startswith("vidwatch_frames_dropped_total{"):
            reason = key.split('reason="')[1].split('"')[0]
            dropped[reason] = dropped.get(reason, 0.0) + value
    dt_s = max(1e-9, t - previous.get("__t", 0.0))
    windows = _sum(metrics, "vidwatch_windows_scored_total")
    return {
        "t": round(t, 1),
        "processes": processes,
        "rss_total_mib": round(sum(p["rss_mib"] for p in processes.values()), 1),
        "fds_total": int(sum(p["fds"] for p in processes.values())),
        "sampled": _sum(metrics, "vidwatch_frames_sampled_total"),
        "dropped": {k: int(v) for k, v in sorted(dropped.items())},
        "windows_scored": windows,
        "windows_per_s": round((windows - _sum(previous, "vidwatch_windows_scored_total")) / dt_s, 2)
        if previous else 0.0,
        "alerts": _sum(metrics, "vidwatch_alerts_total"),
        "e2e_p50_s": _round(_quantile(previous, metrics, "vidwatch_end_to_end_latency_seconds", 0.5)),
        "e2e_p99_s": _round(_quantile(previous, metrics, "vidwatch_end_to_end_latency_seconds", 0.99)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def verdict(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS growth per process between minute 2 and the end; flat when all are < 5%."""
    if not samples:
        return {"rss_growth": {}, "flat": False, "why": "no samples"}
    end_t = samples[-1]["t"]
    base = [s for s in samples if BASELINE_S[0] <= s["t"] < BASELINE_S[1]]
    last = [s for s in samples if s["t"] >= end_t - END_WINDOW_S]
    if not base or end_t - BASELINE_S[1] < 60:
        return {"rss_growth": {}, "flat": False, "why": "run too short for a minute-2 baseline"}
    growth: dict[str, dict[str, float]] = {}
    roles = sorted({r for s in samples for r in s["processes"]})
    for role in roles:
        b = [s["processes"][role]["rss_mib"] for s in base if role in s["processes"]]
        e = [s["processes"][role]["rss_mib"] for s in last if role in s["processes"]]
        pids = {s["processes"][role]["pid"] for s in samples if role in s["processes"] and s["t"] >= BASELINE_S[0]}
        if b and e:
            mb, me = statistics.median(b), statistics.median(e)
            growth[role] = {"minute2_mib": mb, "end_mib": me, "growth": round(me / mb - 1, 4),
                            "restarted": len(pids) > 1}
    tb = statistics.median(s["rss_total_mib"] for s in base)
    te = statistics.median(s["rss_total_mib"] for s in last)
    total = round(te / tb - 1, 4)
    fds = [s["fds_total"] for s in samples if s["t"] >= BASELINE_S[0]]
    flat = all(g["growth"] < MAX_RSS_GROWTH for g in growth.values()) and total < MAX_RSS_GROWTH
    return {"rss_growth": growth, "rss_total_growth": total, "flat": flat,
            "fds_min_max_after_minute2": [min(fds), max(fds)] if fds else None}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = report["samples"]
    t = [s["t"] / 60 for s in samples]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for role in sorted({r for s in samples for r in s["processes"]}):
        ax1.plot([s["t"] / 60 for s in samples if role in s["processes"]],
                 [s["processes"][role]["rss_mib"] for s in samples if role in s["processes"]], label=role)
    ax1.axvspan(BASELINE_S[0] / 60, BASELINE_S[1] / 60, color="grey", alpha=0.15, label="minute-2 baseline")
    ax1.set_ylabel("RSS (MiB)")
    ax1.set_title(f"vidwatch soak: {report['streams']} streams, {report['minutes']:g} min, "
                  f"RSS growth {report.get('rss_total_growth', float('nan')):+.1%} (limit +5%/process)")
    ax1.legend(fontsize=8, ncol=3)
    ax2.plot(t, [s["e2e_p50_s"] for s in samples], label="e2e p50")
    ax2.plot(t, [s["e2e_p99_s"] for s in samples], label="e2e p99")
    ax2.set_ylabel("end-to-end latency (s)")
    ax2.set_xlabel("minutes")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=9.0)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    report = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine_info(),
              **run(args.streams, args.minutes, args.interval)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"soak-{dt.date.today().isoformat()}-{socket.gethostname()}"
    stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    plot(report, stem.with_suffix(".png"))
    print(json.dumps({k: report[k] for k in ("rss_growth", "rss_total_growth", "flat") if k in report}, indent=1))
    print(f"wrote {stem}.json and {stem}.png")
    sys.exit(0 if report.get("flat") else 1)


if __name__ == "__main__":
    main()
