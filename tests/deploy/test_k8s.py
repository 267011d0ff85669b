"""The Kubernetes manifests (deploy/k8s): every resource validates against the current
Kubernetes schema (kubernetes-validate), and each StatefulSet pod ordinal owns the cameras that
`vidwatch run` would give that capture group / inference worker on one host."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import index_from_hostname
from pipeline.config import Config, parse_config
from pipeline.errors import VidwatchError
from pipeline.routing import assign_workers
from pipeline.transport import worker_endpoint
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
CRDS = {"monitoring.coreos.com/v1"}  # Prometheus Operator CRDs: not in the Kubernetes schemas


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def base_resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [doc for name in kustomization["resources"] for doc in documents(K8S / name)]


def by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(d for d in base_resources() if d["kind"] == kind and d["metadata"]["name"] == name)


def k8s_config() -> Config:
    return parse_config(by_kind("ConfigMap", "vidwatch-config")["data"]["vidwatch.yaml"], "configmap.yaml")


def validate(resource: dict[str, Any]) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate (the dev extra)")
    kv.validate(resource, kv.latest_version(), strict=True)


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for what the overlays use: maps merge, lists of
    named items merge by name, other values replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = merge(base[key], value) if key in base else value
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in patch):
        out = copy.deepcopy(base)
        for item in patch:
            match = next((i for i, b in enumerate(out) if b.get("name") == item["name"]), None)
            assert match is not None, f"patch names {item['name']!r}, which the base does not have"
            out[match] = merge(out[match], item)
        return out
    return patch


@pytest.mark.parametrize("resource", base_resources(), ids=lambda r: f"{r['kind']}/{r['metadata']['name']}")
def test_every_manifest_validates_against_the_kubernetes_schema(resource: dict[str, Any]) -> None:
    if resource["apiVersion"] in CRDS:
        pytest.skip(f"{resource['kind']} is a Prometheus Operator CRD; kubernetes-validate has no schema for it "
                    "(its structure is checked in test_podmonitor_scrapes_every_pod)")
    validate(resource)


def test_the_gpu_overlay_patches_a_real_container_and_still_validates() -> None:
    overlay = yaml.safe_load((K8S / "overlays" / "gpu" / "kustomization.yaml").read_text())
    assert overlay["resources"] == ["../.."]
    for entry in overlay["patches"]:
        patch = yaml.safe_load((K8S / "overlays" / "gpu" / entry["path"]).read_text())
        base = by_kind(patch["kind"], patch["metadata"]["name"])
        patched = merge(base, patch)
        validate(patched)
        limits = patched["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == 1


def test_podmonitor_scrapes_every_pod() -> None:
    monitor = by_kind("PodMonitor", "vidwatch")
    selector = monitor["spec"]["selector"]["matchLabels"]
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    workloads = [d for d in base_resources() if d["kind"] in ("StatefulSet", "Deployment")]
    assert {w["metadata"]["name"] for w in workloads} == {"vidwatch-capture", "vidwatch-infer", "vidwatch-sink"}
    for workload in workloads:
        template = workload["spec"]["template"]
        assert selector.items() <= template["metadata"]["labels"].items(), workload["metadata"]["name"]
        container = template["spec"]["containers"][0]
        assert port in {p["name"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()


def test_the_configmap_is_a_valid_config_served_where_the_probes_look() -> None:
    config = k8s_config()
    assert config.metrics.host == "0.0.0.0" and config.metrics.port == 9108
    for name in ("vidwatch-capture", "vidwatch-infer", "vidwatch-sink"):
        workload = next(d for d in base_resources() if d["metadata"]["name"] == name and "template" in d["spec"])
        ports = {p["name"]: p["containerPort"] for p in workload["spec"]["template"]["spec"]["containers"][0]["ports"]}
        assert ports["metrics"] == config.metrics.port


def pod_cameras(config: Config) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """What each capture / inference pod would own, derived the way the pod derives it: its
    hostname's ordinal (``--index-from-hostname``) is its capture group / worker index."""
    capture = by_kind("StatefulSet", "vidwatch-capture")
    infer = by_kind("StatefulSet", "vidwatch-infer")
    assert "--index-from-hostname" in capture["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--index-from-hostname" in infer["spec"]["template"]["spec"]["containers"][0]["args"]
    groups = config.groups()
    capture_pods = {}
    for ordinal in range(capture["spec"]["replicas"]):
        pod = f"{capture['metadata']['name']}-{ordinal}"
        capture_pods[pod] = [c.id for c in groups.get(index_from_hostname(pod), [])]
    routes = config.workers()  # what pipeline/inference.py's worker selects as "mine"
    infer_pods = {}
    for ordinal in range(infer["spec"]["replicas"]):
        pod = f"{infer['metadata']['name']}-{ordinal}"
        index = index_from_hostname(pod)
        infer_pods[pod] = [c.id for c in config.cameras if routes[c.id] == index]
    return capture_pods, infer_pods


def _assert_pod_serves(pod: str, service: dict[str, Any], service_ports: set[int], connect_to: str, bind: str) -> None:
    """Peers connect to ``pod`` by its stable DNS name under the headless ``service``, on the port the
    pod binds, and the service exposes that port."""
    connect = re.fullmatch(r"tcp://([^:]+):(\d+)", connect_to)
    bound = re.fullmatch(r"tcp://\*:(\d+)", bind)
    assert connect and bound, (connect_to, bind)
    assert connect.group(1) == f"{pod}.{service['metadata']['name']}"
    assert connect.group(2) == bound.group(1) and int(bound.group(1)) in service_ports


def test_each_pod_ordinal_owns_the_cameras_vidwatch_run_gives_it_on_one_host() -> None:
    config = k8s_config()
    capture_pods, infer_pods = pod_cameras(config)
    # Single host: `vidwatch run` starts one capture process per group and inference.workers
    # workers, and routes cameras with pipeline/routing.py.
    single_groups = {g: sorted(c.id for c in cams) for g, cams in config.groups().items()}
    single_workers = assign_workers([c.id for c in config.cameras], config.inference.workers,
                                    {c.id: c.worker for c in config.cameras if c.worker is not None})
    assert len(capture_pods) == len(single_groups), "capture replicas must equal the number of camera groups"
    assert {index_from_hostname(p): sorted(cams) for p, cams in capture_pods.items()} == single_groups
    assert len(infer_pods) == config.inference.workers, "inference replicas must equal inference.workers"
    for pod, cams in infer_pods.items():
        assert cams and sorted(cams) == sorted(c for c, w in single_workers.items() if w == index_from_hostname(pod))
    owned = [c for cams in infer_pods.values() for c in cams]
    assert sorted(owned) == sorted(c.id for c in config.cameras), "every camera on exactly one inference pod"


def test_frames_for_a_camera_reach_the_pod_that_owns_it() -> None:
    """A capture pod connects to worker_endpoint(endpoint, w) for worker w; that must be the
    headless-Service DNS name of pod w, on the port pod w binds."""
    config = k8s_config()
    _, infer_pods = pod_cameras(config)
    service = by_kind("Service", "vidwatch-infer")
    assert service["spec"]["clusterIP"] == "None"
    infer = by_kind("StatefulSet", "vidwatch-infer")
    assert infer["spec"]["serviceName"] == service["metadata"]["name"]
    service_ports = {p["port"] for p in service["spec"]["ports"]}
    for pod, cams in infer_pods.items():
        index = index_from_hostname(pod)
        _assert_pod_serves(pod, service, service_ports, worker_endpoint(config.inference.endpoint, index),
                           worker_endpoint(config.inference.bind or "", index))
        assert all(config.workers()[c] == index for c in cams)
    sink = re.fullmatch(r"tcp://([^:]+):(\d+)", config.sink.endpoint)
    assert sink and sink.group(1) == by_kind("Service", "vidwatch-sink")["metadata"]["name"]


def test_index_from_hostname() -> None:
    assert index_from_hostname("vidwatch-infer-3") == 3
    assert index_from_hostname("vidwatch-capture-12.vidwatch-capture.vidwatch.svc.cluster.local") == 12
    with pytest.raises(VidwatchError, match="does not end in -N"):
        index_from_hostname("laptop")


@pytest.mark.slow
def test_a_pod_named_vidwatch_infer_1_runs_worker_1_with_its_cameras(models_dir: Path, tmp_path: Path) -> None:
    """The real command of the inference StatefulSet, in a UTS namespace whose hostname is the
    pod name: /readyz lists the cameras the routing gives worker 1. (Container paths and DNS
    names in the ConfigMap are swapped for this checkout's models and loopback ports.)"""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    from tests.conftest import free_port

    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare(1) to give the process a pod's hostname")
    data = yaml.safe_load(by_kind("ConfigMap", "vidwatch-config")["data"]["vidwatch.yaml"])
    for model in data["models"].values():
        model["path"] = str(models_dir / Path(model["path"]).name)
    base = free_port()
    data["inference"].update(endpoint=f"tcp://127.0.0.1:{base}", bind=f"tcp://127.0.0.1:{base}")
    data["sink"].update(endpoint=f"tcp://127.0.0.1:{free_port()}", bind=None)
    data["state_dir"] = str(tmp_path / "state")
    config = tmp_path / "vidwatch.yaml"
    config.write_text(yaml.safe_dump(data))
    expected = pod_cameras(k8s_config())[1]["vidwatch-infer-1"]
    port = free_port()
    script = (f"hostname vidwatch-infer-1 && exec {sys.executable} -m pipeline.cli infer {config} "
              f"--index-from-hostname --metrics-port {port}")
    proc = subprocess.Popen([unshare, "--uts", "sh", "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    body: dict[str, Any] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as resp:
                    body = json.loads(resp.read())
                    break
            except (urllib.error.HTTPError, OSError):
                time.sleep(0.5)
        assert body, proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "never ready"
        assert list(body["stages"]) == ["infer-1"]
        assert sorted(body["stages"]["infer-1"]["detail"]["cameras"]) == sorted(expected)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_sink_reaches_each_capture_pod_for_snapshots_and_clips() -> None:
    """The sink connects to group_endpoint(evidence.endpoint, g) for capture group g: the DNS
    name of capture pod g, on the port that pod binds."""
    from pipeline.evidence_ring import group_endpoint

    config = k8s_config()
    capture_pods, _ = pod_cameras(config)
    service = by_kind("Service", "vidwatch-capture")
    assert service["spec"]["clusterIP"] == "None"
    assert by_kind("StatefulSet", "vidwatch-capture")["spec"]["serviceName"] == service["metadata"]["name"]
    service_ports = {p["port"] for p in service["spec"]["ports"]}
    for pod in capture_pods:
        group = index_from_hostname(pod)
        _assert_pod_serves(pod, service, service_ports, group_endpoint(config.evidence.endpoint, group),
                           group_endpoint(config.evidence.bind or "", group))
