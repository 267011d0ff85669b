"""The container image (deploy/Dockerfile, `make image`): built with podman, then run with
buildah (podman run cannot set rlimits on these machines) on the shipped clips, the output
folder mounted from the host: alerts land on the host side and /readyz answers 200 meanwhile."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, free_port
from tests.support.servers import require

IMAGE = "localhost/vidwatch:latest"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def image(models_dir: Path) -> str:
    require("podman")
    require("buildah")
    require("mmdebstrap")
    if os.geteuid() != 0:
        pytest.skip("building the image here needs root (mmdebstrap, podman's storage); run as root like CI")
    build = subprocess.run(["bash", str(ROOT / "deploy" / "image" / "build.sh")], cwd=ROOT, capture_output=True,
                           text=True, timeout=1800, env={**os.environ, "IMAGE": IMAGE})
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return IMAGE


@pytest.fixture()
def container(image: str) -> Iterator[str]:
    name = subprocess.run(["buildah", "from", image], capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield name
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True)


def in_image(container: str, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["buildah", "run", "--isolation", "chroot", container, "--", *cmd],
                          capture_output=True, text=True, timeout=120)


def test_image_runs_as_a_non_root_daemon_with_a_readyz_healthcheck(image: str, container: str) -> None:
    inspect = json.loads(subprocess.run(["podman", "image", "inspect", image], capture_output=True, text=True,
                                        check=True).stdout)[0]
    config = inspect["Config"]
    assert config["Entrypoint"] == ["vidwatch"]
    assert config["User"] == "vidwatch"
    assert "/var/lib/vidwatch" in config["Volumes"]
    assert "/readyz" in " ".join(inspect["Healthcheck"]["Test"]) + " ".join(config["Env"])
    assert in_image(container, "id", "-u").stdout.strip() != "0"
    no_torch = in_image(container, "python3", "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('torch') "
                        "is not None or u.find_spec('models') is not None)")
    assert no_torch.returncode == 0, "the runtime image must carry neither torch nor the training code"
    for config_path in ("deploy/examples/demo.yaml", "/etc/vidwatch/vidwatch.yaml"):
        check = in_image(container, "vidwatch", "check", config_path)
        assert check.returncode == 0, check.stdout + check.stderr


def test_demo_in_the_image_writes_alerts_to_the_mounted_folder_and_is_ready(image: str, container: str,
                                                                           tmp_path: Path) -> None:
    out = tmp_path / "var"
    out.mkdir()
    out.chmod(0o777)  # the image's user (uid 10001) writes here
    port = free_port()
    config = yaml.safe_load((ROOT / "deploy" / "examples" / "container.yaml").read_text())
    config["metrics"] = {"host": "127.0.0.1", "port": port}  # buildah run shares the host's network
    (out / "test.yaml").write_text(yaml.safe_dump(config))
    # 40 s: model loading, the lobby's 5 s calibration and the first fight in the yard clip fit with room
    # to spare on a loaded 2-core machine (one 25 s run failed at a load average of 16).
    run = subprocess.Popen(["buildah", "run", "--isolation", "chroot", "-v", f"{out}:/var/lib/vidwatch", container,
                            "--", "vidwatch", "run", "/var/lib/vidwatch/test.yaml", "--duration", "40"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    codes: list[int] = []
    healthcheck = None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and run.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as resp:
                    codes.append(resp.status)
            except urllib.error.HTTPError as exc:
                codes.append(exc.code)
            except OSError:
                pass
            if codes and codes[-1] == 200 and healthcheck is None:
                # The image's own HEALTHCHECK command, run inside it, must pass while it runs.
                test = json.loads(subprocess.run(["podman", "image", "inspect", image], capture_output=True,
                                                 text=True, check=True).stdout)[0]["Healthcheck"]["Test"]
                subprocess.run(["buildah", "config", "--env", f"VIDWATCH_HEALTH_URL=http://127.0.0.1:{port}/readyz",
                                container], check=True, capture_output=True)
                healthcheck = in_image(container, *test[1:])
            time.sleep(0.5)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, output[-3000:]
    assert 200 in codes, f"/readyz never answered 200 while the image ran: {codes}\n{output[-2000:]}"
    assert healthcheck is not None and healthcheck.returncode == 0, healthcheck
    alerts = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    starts = [a for a in alerts if a["state"] == "start"]
    assert starts, f"no alert in {out / 'alerts.jsonl'}:\n{output[-2000:]}"
    snapshots = [Path(str(a["snapshot"]).replace("/var/lib/vidwatch", str(out))) for a in starts if a["snapshot"]]
    assert snapshots and all(p.exists() for p in snapshots), snapshots
    # The image's FFmpeg recorded each camera's segment ring (what event clips are cut from).
    for camera in ("lobby", "yard"):
        segments = [p for p in (out / "state" / "evidence" / "ring" / camera).glob("seg-*.mp4") if p.stat().st_size]
        assert segments, f"no clip segments recorded for {camera} inside the image:\n{output[-2000:]}"
