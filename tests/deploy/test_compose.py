"""deploy/compose: the compose file against the compose-spec schema and ``podman-compose config``,
and its pieces against each other: stage commands the CLI accepts, a vidwatch config whose paths
the mounts provide, Prometheus targets on the stages' ports, Grafana provisioning that finds the
dashboard. Containers are not started here (``podman run`` cannot run on these machines; see
deploy/Dockerfile's test); the stage commands are run on loopback exactly as the compose runs them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import _parser
from pipeline.config import load_config, parse_config
from tests.conftest import ROOT, free_port, scrape_metrics
from tests.support.servers import require

COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yml"
STAGES = ("sink", "infer", "capture")
BIN = Path(sys.executable).parent


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed; pip install -e '.[dev]'")
    return str(path)


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path of a service's bind mounts (named volumes left out)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = (COMPOSE_DIR / source).resolve()
    return out


def _host_config(tmp: Path, service: dict[str, Any], text: str | None = None) -> Path:
    """deploy/compose/vidwatch.yaml with container paths mapped to the host paths the mounts give."""
    text = text if text is not None else (COMPOSE_DIR / "vidwatch.yaml").read_text()
    for target, source in sorted(_mounts(service).items(), key=lambda kv: -len(kv[0])):
        if source.is_dir():
            text = text.replace(f"{target}/", f"{source}/")
    text = text.replace("/var/lib/vidwatch", str(tmp / "data"))
    path = tmp / "vidwatch.yaml"
    path.write_text(text)
    return path


def test_compose_file_validates_against_the_compose_spec_schema() -> None:
    """The compose-spec JSON schema as vendored by check-jsonschema (``vendor.compose-spec``)."""
    check = subprocess.run([_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_podman_compose_accepts_and_resolves_it(tmp_path: Path) -> None:
    result = subprocess.run([_tool("podman-compose"), "-f", str(COMPOSE), "config"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) == {*STAGES, "prometheus", "grafana", "mosquitto"}
    for stage in STAGES:
        assert resolved["services"][stage]["image"] == "vidwatch:latest"
        assert resolved["services"][stage]["build"]["dockerfile"] == "deploy/Dockerfile"
    env = resolved["services"]["grafana"]["environment"]
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "change-me"  # ${VAR:-default} interpolated


def test_references_between_services_and_files_resolve() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dep in service.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown service {dep}"
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.split(":", 1)[1] in services
        for target, source in _mounts(service).items():
            if "build/models" not in str(source):  # built by `make models`, checked below
                assert source.exists(), f"{name}: mount {source} -> {target} does not exist"
    assert (COMPOSE_DIR / "../Dockerfile").resolve().parent == ROOT / "deploy"


def test_stage_commands_are_ones_the_cli_accepts_with_distinct_ports(models_dir: Path, tmp_path: Path) -> None:
    services = _compose()["services"]
    ports = []
    for stage in STAGES:
        args = _parser().parse_args(services[stage]["command"])
        assert args.command == stage and args.config == Path("/etc/vidwatch/vidwatch.yaml")
        ports.append(args.metrics_port)
    assert len(set(ports)) == 3
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == [f"sink:{p}" for p in ports]
    for stage in ("infer", "capture"):  # one network namespace: loopback endpoints work
        assert services[stage]["network_mode"] == "service:sink"
    config = parse_config((COMPOSE_DIR / "vidwatch.yaml").read_text())
    assert config.inference.endpoint.startswith("tcp://127.0.0.1:") and config.sink.endpoint.startswith(
        "tcp://127.0.0.1:")
    assert {o.type for o in config.outputs} >= {"jsonl", "mqtt"}
    assert next(o for o in config.outputs if o.type == "mqtt").host == "mosquitto"  # type: ignore[union-attr]
    for name in config.models:
        if not (models_dir / name / "manifest.json").exists():
            pytest.skip(f"model package {name} is not built; run 'make models'")
    host = _host_config(tmp_path, services["capture"])
    check = subprocess.run([sys.executable, "-m", "pipeline.cli", "check", str(host)], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr  # models and clips are where the mounts put them
    assert all(Path(c.source).exists() for c in load_config(host).cameras)


def test_prometheus_config_and_rules_load_with_promtool(tmp_path: Path) -> None:
    promtool = require("promtool")
    mounts = _mounts(_compose()["services"]["prometheus"])
    for target, source in mounts.items():  # lay the files out as the container sees them
        shutil.copy(source, tmp_path / Path(target).name)
    check = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True,
                           text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 rule files found" in check.stdout + check.stderr


def test_grafana_provisioning_finds_the_datasource_and_the_dashboard() -> None:
    grafana = _compose()["services"]["grafana"]
    mounts = _mounts(grafana)
    provisioning = {t: s for t, s in mounts.items() if t.startswith("/etc/grafana/provisioning/")}
    datasources = yaml.safe_load((provisioning["/etc/grafana/provisioning/datasources"] / "vidwatch.yml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090" and source["isDefault"]
    providers = yaml.safe_load((provisioning["/etc/grafana/provisioning/dashboards"] / "vidwatch.yml").read_text())
    folder = providers["providers"][0]["options"]["path"]
    dashboards = [t for t, s in mounts.items() if s == ROOT / "deploy" / "grafana" / "vidwatch.json"]
    assert dashboards and all(Path(t).parent == Path(folder) for t in dashboards)
    assert grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"] == dashboards[0]


@pytest.mark.slow
def test_the_three_stage_commands_run_together_on_loopback(models_dir: Path, tmp_path: Path) -> None:
    """The compose's stage commands, as three processes sharing loopback (as they share the sink's
    network namespace there), with free ports instead of the fixed ones and MQTT left out."""
    services = _compose()["services"]
    config = parse_config((COMPOSE_DIR / "vidwatch.yaml").read_text())
    for name in config.models:
        if not (models_dir / name / "manifest.json").exists():
            pytest.skip(f"model package {name} is not built; run 'make models'")
    text = (COMPOSE_DIR / "vidwatch.yaml").read_text()
    text = text.replace(config.inference.endpoint, f"tcp://127.0.0.1:{free_port()}")
    text = text.replace(config.sink.endpoint, f"tcp://127.0.0.1:{free_port()}")
    text = text.replace('  - {type: mqtt, host: mosquitto, topic: "vidwatch/alerts/{camera}"}\n', "")
    host = _host_config(tmp_path, services["capture"], text)
    ports = {stage: free_port() for stage in STAGES}
    procs = []
    try:
        for stage in STAGES:
            command = list(services[stage]["command"])
            command[1] = str(host)
            command[command.index("--metrics-port") + 1] = str(ports[stage])
            log = (tmp_path / f"{stage}.log").open("wb")
            procs.append(subprocess.Popen([sys.executable, "-m", "pipeline.cli", *command], cwd=ROOT, stdout=log,
                                          stderr=subprocess.STDOUT))
        deadline, scored = time.monotonic() + 90, False
        while time.monotonic() < deadline and not scored:
            time.sleep(1)
            scored = ("vidwatch_end_to_end_latency_seconds_count" in scrape_metrics(ports["sink"])
                      and 'model="fight"' in scrape_metrics(ports["infer"]))
        texts = {stage: scrape_metrics(port) for stage, port in ports.items()}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    logs = {stage: (tmp_path / f"{stage}.log").read_text()[-1500:] for stage in STAGES}
    assert scored, logs
    assert 'vidwatch_camera_up{camera="yard"} 1.0' in texts["capture"], logs["capture"]
    assert "vidwatch_windows_scored_total" in texts["infer"]
    assert "vidwatch_end_to_end_latency_seconds_count" in texts["sink"]
