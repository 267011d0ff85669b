"""The Grafana dashboard: generated from code (no drift), every metric name it and the alerting
rules use is one vidwatch exports, and every panel's query, variables filled in, runs on a real
Prometheus scraping a real ``vidwatch run`` of the demo clips and returns data."""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, free_port, scrape_metrics
from tests.support.servers import prometheus

GRAFANA = ROOT / "deploy" / "grafana"
RULES = ROOT / "deploy" / "prometheus" / "vidwatch-rules.yml"
METRIC = re.compile(r"\bvidwatch_[a-z0-9_]+")
DECLARATION = re.compile(r"\b(Counter|Gauge|Histogram|Summary|CounterMetricFamily|GaugeMetricFamily)\(\s*"
                         r"\"(vidwatch_[a-z0-9_]+)\"")
# Panels whose series only exist after something goes wrong; in a healthy run they must be empty.
NO_DATA_WHEN_HEALTHY = {"Messages rejected": "vidwatch_messages_rejected_total appears with the first bad message"}
LAZY_METRICS = {"vidwatch_messages_rejected_total"}
CAMERAS = ("lobby", "yard")
MODELS = ("scene-anomaly", "fight")
# How Grafana fills the variables: a multi-value $camera becomes a regex alternation.
VARIABLES = {"$camera": "(" + "|".join(CAMERAS) + ")", "$__rate_interval": "15s", "$__range": "5m"}


@functools.cache
def _builder() -> ModuleType:
    """deploy/grafana/dashboard.py, loaded from its path (deploy/ is not a Python package)."""
    spec = importlib.util.spec_from_file_location("vidwatch_dashboard", GRAFANA / "dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expression) for every target of every panel."""
    return [(p["title"], t["expr"]) for p in dashboard["panels"] if p["type"] != "row" for t in p["targets"]]


def fill(expr: str) -> str:
    for name in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, VARIABLES[name])
    assert "$" not in expr, f"unfilled variable in {expr}"
    return expr


def declared_metrics() -> dict[str, str]:
    """Metric families declared in pipeline/ (name as exposed -> type), read from the source."""
    found: dict[str, str] = {}
    for path in (ROOT / "pipeline").rglob("*.py"):
        for kind, name in DECLARATION.findall(path.read_text()):
            kind = kind.removesuffix("MetricFamily").lower()
            found[name if kind != "counter" or name.endswith("_total") else name + "_total"] = kind
    return found


def exported_samples(families: dict[str, str]) -> set[str]:
    """Every sample name those families expose (histograms: _bucket, _sum, _count)."""
    out = set(families)
    for name, kind in families.items():
        if kind in ("histogram", "summary"):
            out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return out


def unknown_names(exprs: list[str], known: set[str]) -> list[str]:
    return sorted({name for expr in exprs for name in METRIC.findall(expr) if name not in known})


def used_exprs() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return ([expr for _, expr in panel_queries(_builder().build())]
            + [rule["expr"] for group in rules["groups"] for rule in group["rules"]])


def test_checked_in_dashboard_is_what_the_code_builds() -> None:
    builder = _builder()
    assert (GRAFANA / "vidwatch.json").read_text() == builder.render(), \
        "deploy/grafana/vidwatch.json is stale: run python deploy/grafana/dashboard.py"
    dashboard = json.loads(builder.render())
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names == ["datasource", "camera"]
    per_camera = [expr for _, expr in panel_queries(dashboard) if "camera" in expr]
    assert per_camera and all('camera=~"$camera"' in expr for expr in per_camera)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_dashboard_and_rules_use_only_metrics_the_code_declares() -> None:
    known = exported_samples(declared_metrics())
    assert unknown_names(used_exprs(), known) == []
    # The check does catch a misspelling:
    assert unknown_names(["max(vidwatch_camera_upp)", "rate(vidwatch_frames_dropped[1m])"], known) == [
        "vidwatch_camera_upp", "vidwatch_frames_dropped"]


def test_metrics_table_in_architecture_matches_the_code() -> None:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text().split("## Metrics", 1)[1]
    table = dict(re.findall(r"^\| `(vidwatch_[a-z0-9_]+)` \| (\w+) \|", text, flags=re.M))
    assert table == declared_metrics()


# -- a real vidwatch run scraped by a real Prometheus ------------------------------------------
@dataclass
class LiveRun:
    prometheus: str
    scrape: str  # the text of vidwatch's /metrics while it ran


def _run_config(tmp: Path, models_dir: Path, metrics_port: int) -> Path:
    for name in ("scene-anomaly", "fight"):
        if not (models_dir / name / "manifest.json").exists():
            pytest.skip(f"model package {name} is not built; run 'make models'")
    path = tmp / "grafana-run.yaml"
    path.write_text(f"""
state_dir: {tmp}/state
models:
  scene-anomaly: {{path: {models_dir}/scene-anomaly}}
  fight: {{path: {models_dir}/fight}}
inference: {{endpoint: "tcp://127.0.0.1:{free_port()}"}}
sink: {{endpoint: "tcp://127.0.0.1:{free_port()}", snapshots_dir: {tmp}/snapshots, status_interval_s: 5}}
cameras:
  - {{id: lobby, source: {ROOT}/deploy/samples/people.mp4, fps: 10, loop: true,
     models: [{{model: scene-anomaly, calibrate_seconds: 3}}]}}
  - {{id: yard, source: {ROOT}/deploy/samples/fight-demo.mp4, fps: 10, loop: true, models: [{{model: fight}}]}}
rules:
  - {{name: lobby-anomaly, model: scene-anomaly, threshold: 1.5, clear_threshold: 1.0, min_duration_s: 1}}
  - {{name: yard-fight, model: fight, label: fight, threshold: 0.7, clear_threshold: 0.5, min_duration_s: 1}}
outputs:
  - {{type: jsonl, path: {tmp}/alerts.jsonl}}
metrics: {{host: 127.0.0.1, port: {metrics_port}}}
""")
    return path


def prom_query(base: str, expr: str) -> dict[str, Any]:
    """Prometheus's answer to an instant query, errors included (a bad query is HTTP 400 + JSON)."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return dict(json.load(resp))
    except urllib.error.HTTPError as exc:
        return dict(json.loads(exc.read() or b"{}"))


def _missing_data(base: str) -> dict[str, str]:
    """Queries that should return data (per camera / model: for each of them) but do not yet."""
    missing = {}
    for title, expr in panel_queries(_builder().build()):
        if title in NO_DATA_WHEN_HEALTHY:
            continue
        answer = prom_query(base, fill(expr)).get("data", {}).get("result", [])
        result = [r for r in answer if r["value"][1] != "NaN"]  # e.g. a quantile of no observations
        cameras = {r["metric"].get("camera") for r in result}
        models = {r["metric"].get("model") for r in result}
        if (not result or ("by (camera" in expr and not set(CAMERAS) <= cameras)
                or ("by (model" in expr and not set(MODELS) <= models)):
            missing[expr] = f"{title}: {len(result)} series, cameras {cameras}, models {models}"
    return missing


@pytest.fixture(scope="module")
def live(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRun]:
    tmp = tmp_path_factory.mktemp("grafana")
    metrics_port = free_port()
    config = _run_config(tmp, models_dir, metrics_port)
    log = (tmp / "vidwatch.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config), "--duration", "150"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        with prometheus(tmp, free_port(), [f"127.0.0.1:{metrics_port}"]) as url:
            deadline = time.monotonic() + 100
            while time.monotonic() < deadline and _missing_data(url):
                time.sleep(2)
            yield LiveRun(url, scrape_metrics(metrics_port))
    finally:
        proc.terminate()  # the supervisor stops its stages in flow order
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.mark.slow
def test_every_panel_query_runs_on_prometheus_and_returns_data(live: LiveRun) -> None:
    queries = panel_queries(_builder().build())
    for title, expr in queries:
        answer = prom_query(live.prometheus, fill(expr))
        assert answer.get("status") == "success", f"{title}: {fill(expr)} -> {answer}"
    assert _missing_data(live.prometheus) == {}, "panels without data in a healthy run"
    for title in NO_DATA_WHEN_HEALTHY:  # the exceptions are listed because they really are empty
        exprs = [expr for t, expr in queries if t == title]
        assert exprs and all(prom_query(live.prometheus, fill(e))["data"]["result"] == [] for e in exprs), title


@pytest.mark.slow
def test_the_names_used_are_exported_by_a_real_run(live: LiveRun) -> None:
    scraped = {s.name for family in text_string_to_metric_families(live.scrape) for s in family.samples}
    eager = {name for name in declared_metrics() if name not in LAZY_METRICS}
    assert not {n for n in eager if not any(s == n or s.startswith(n + "_") for s in scraped)}, \
        "declared metrics missing from a real scrape"
    assert LAZY_METRICS <= set(declared_metrics())
    assert unknown_names(used_exprs(), scraped | LAZY_METRICS) == []
