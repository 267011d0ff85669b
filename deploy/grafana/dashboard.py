"""The vidwatch Grafana dashboard, generated from code so it never drifts from the metrics.

    python deploy/grafana/dashboard.py            # writes deploy/grafana/vidwatch.json
    python deploy/grafana/dashboard.py --check    # exits 1 if the checked-in JSON is stale

Standard library only (a small builder of Grafana's dashboard JSON model, schema version 39:
Grafana 10 and later import it). Two template variables: ``datasource`` (any Prometheus) and
``camera`` (multi-select, "All" by default). ``tests/deploy/test_grafana.py`` sends every query,
variables filled in, to a real Prometheus scraping a real ``vidwatch run``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("vidwatch.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
CAM = 'camera=~"$camera"'
RATE = "[$__rate_interval]"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    queries: list[Query]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat", "bargauge"
    stacked: bool = False
    mappings: list[dict[str, Any]] = field(default_factory=list)


def _quantiles(metric: str, what: str) -> list[Query]:
    return [Query(f"histogram_quantile({q}, sum by (le) (rate({metric}_bucket{RATE})))", f"{what} p{p}")
            for q, p in ((0.5, 50), (0.99, 99))]


_UP_DOWN = [{"type": "value", "options": {"0": {"text": "DOWN", "color": "red", "index": 0},
                                          "1": {"text": "UP", "color": "green", "index": 1}}}]

ROWS: list[tuple[str, list[Panel]]] = [
    ("Cameras", [
        Panel("Frames per second in / out", "Decoded from the camera (in) and kept by fps sampling (out).", [
            Query(f"sum by (camera) (rate(vidwatch_frames_captured_total{{{CAM}}}{RATE}))", "{{camera}} in"),
            Query(f"sum by (camera) (rate(vidwatch_frames_sampled_total{{{CAM}}}{RATE}))", "{{camera}} out"),
        ], unit="suffix: fps"),
        Panel("Frames dropped by reason", "queue_full: inference fell behind; inference_busy: the worker's "
              "socket was full.", [
            Query(f"sum by (camera, reason) (rate(vidwatch_frames_dropped_total{{{CAM}}}{RATE}))",
                  "{{camera}} {{reason}}"),
        ], unit="suffix: fps", stacked=True),
        Panel("Camera up", "1 while the camera delivers frames.", [
            Query(f"max by (camera) (vidwatch_camera_up{{{CAM}}})", "{{camera}}"),
        ], kind="stat", mappings=_UP_DOWN),
        Panel("Reconnects", "Camera (re)open attempts after a failure.", [
            Query(f"sum by (camera) (increase(vidwatch_camera_reconnects_total{{{CAM}}}{RATE}))", "{{camera}}"),
        ]),
        Panel("Motion gate", "open: 1 while a camera's frames go to the models at full rate (also 1 with the gate "
              "off); gated: frames per second held back as still (keep-alive bursts still go out).", [
            Query(f"max by (camera) (vidwatch_motion_gate_open{{{CAM}}})", "{{camera}} open"),
            Query(f"sum by (camera) (rate(vidwatch_frames_gated_total{{{CAM}}}{RATE}))", "{{camera}} gated fps"),
        ]),
        Panel("Age of the last frame", "Seconds since the camera's latest frame was decoded.", [
            Query(f"time() - max by (camera) (vidwatch_last_frame_timestamp_seconds{{{CAM}}})", "{{camera}}"),
        ], unit="s"),
        Panel("Clip recorder: age of the last segment", "Seconds since the camera's FFmpeg segment ring listed "
              "a finished segment: about segment_s while it records.", [
            Query(f"time() - max by (camera) (vidwatch_segment_ring_last_segment_timestamp_seconds{{{CAM}}})",
                  "{{camera}}"),
        ], unit="s"),
        Panel("Clip recorder restarts", "FFmpeg segment-ring restarts by reason (exited; stalled: no segment listed "
              "in time; spawn); alert VidwatchClipRecorderFailing fires at 3 in 15 min.", [
            Query(f"sum by (camera, reason) (increase(vidwatch_segment_ring_restarts_total{{{CAM}}}{RATE}))",
                  "{{camera}} {{reason}}"),
        ]),
    ]),
    ("Inference", [
        Panel("Inference latency", "Time to run every model on one batch.",
              _quantiles("vidwatch_inference_latency_seconds", "batch"), unit="s"),
        Panel("Batch size", "Frames per inference batch (across cameras).", [
            Query("sum(rate(vidwatch_inference_batch_size_sum[$__rate_interval])) / "
                  "sum(rate(vidwatch_inference_batch_size_count[$__rate_interval]))", "mean"),
            *_quantiles("vidwatch_inference_batch_size", "batch size")[1:],
        ]),
        Panel("End-to-end latency", "Capture of a window's last frame to the sink's decision.",
              _quantiles("vidwatch_end_to_end_latency_seconds", "capture to decision"), unit="s"),
        Panel("Windows scored per model", "Windows scored per second, by model, for the selected cameras.", [
            Query(f"sum by (model) (rate(vidwatch_windows_scored_total{{{CAM}}}{RATE}))", "{{model}}"),
        ], unit="ops"),
        Panel("Frames not computed per model", "Frames per second a model skips because none of its windows "
              "reads them (window stride longer than the window): no features, no frame graphs.", [
            Query(f"sum by (model) (rate(vidwatch_frames_skipped_total{RATE}))", "{{model}}"),
        ], unit="suffix: fps"),
        Panel("Last score per camera and model", "Latest alert-label score each rule saw.", [
            Query(f"max by (camera, model) (vidwatch_last_score{{{CAM}}})", "{{camera}} {{model}}"),
        ]),
    ]),
    ("Alerts", [
        Panel("Alerts in the time range", "Alerts raised, by camera and kind (action, anomaly).", [
            Query(f"sum by (camera, kind) (increase(vidwatch_alerts_total{{{CAM}}}[$__range]))",
                  "{{camera}} {{kind}}"),
        ], kind="bargauge"),
        Panel("Alerts pending delivery", "Alert deliveries an output has not taken yet (retried with backoff).", [
            Query("sum(vidwatch_alerts_pending)", "pending"),
        ]),
        Panel("Output errors", "Failed deliveries per second, by output type (each is retried).", [
            Query(f"sum by (output) (rate(vidwatch_output_errors_total{RATE}))", "{{output}}"),
        ], unit="ops"),
    ]),
    ("Stages", [
        Panel("CPU by stage", "Busy seconds per second (cores) per pipeline step.", [
            Query(f"sum by (stage) (rate(vidwatch_stage_seconds_total{RATE}))", "{{stage}}"),
        ], unit="suffix: cores", stacked=True),
        Panel("Stage restarts", "Stage processes restarted after a crash (vidwatch run's supervisor).", [
            Query(f"sum by (stage) (increase(vidwatch_stage_restarts_total{RATE}))", "{{stage}}"),
        ]),
        Panel("Messages rejected", "Messages that failed to decode, by stage and reason (dropped, counted).", [
            Query(f"sum by (stage, reason) (rate(vidwatch_messages_rejected_total{RATE}))", "{{stage}} {{reason}}"),
        ], unit="ops"),
    ]),
]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit, "mappings": panel.mappings}
    options: dict[str, Any] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                               "tooltip": {"mode": "multi", "sort": "desc"}}
    if panel.kind == "timeseries":
        defaults["custom"] = {"fillOpacity": 20 if panel.stacked else 0, "lineWidth": 1, "showPoints": "never",
                              "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"}}
    else:
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "orientation": "horizontal"}
    targets = [{"datasource": DATASOURCE, "expr": q.expr, "legendFormat": q.legend or "__auto",
                "refId": chr(ord("A") + i), "range": True} for i, q in enumerate(panel.queries)]
    return {"id": panel_id, "type": panel.kind, "title": panel.title, "description": panel.description,
            "datasource": DATASOURCE, "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": []}, "options": options, "targets": targets}


def _templating() -> dict[str, Any]:
    camera_query = "label_values(vidwatch_camera_up, camera)"
    return {"list": [
        {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": []},
        {"name": "camera", "label": "Camera", "type": "query", "datasource": DATASOURCE,
         "definition": camera_query, "query": {"query": camera_query, "refId": "cameras"},
         "multi": True, "includeAll": True, "allValue": ".*",
         "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
         "refresh": 2, "sort": 1, "hide": 0, "regex": "", "options": []},
    ]}


def build() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model."""
    panels: list[dict[str, Any]] = []
    y, next_id = 0, 1
    for title, row in ROWS:
        panels.append({"id": next_id, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id, y = next_id + 1, y + 1
        for i, panel in enumerate(row):
            panels.append(_panel_json(panel, next_id, (i % 3) * 8, y + (i // 3) * 8))
            next_id += 1
        y += ((len(row) + 2) // 3) * 8
    return {"uid": "vidwatch", "title": "vidwatch", "description": "vidwatch: cameras, inference, alerts, stages "
            "(generated by deploy/grafana/dashboard.py; edit that, not this file)",
            "tags": ["vidwatch"], "editable": True, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
            "refresh": "10s", "time": {"from": "now-1h", "to": "now"}, "timezone": "browser",
            "annotations": {"list": []}, "links": [], "templating": _templating(), "panels": panels}


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="exit 1 if --out differs from what the code builds")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(f"{args.out} is stale: run python deploy/grafana/dashboard.py", file=sys.stderr)
            return 1
        print(f"{args.out}: up to date")
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(build()['panels'])} panels and rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
