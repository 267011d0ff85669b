"""Stage processes never outlive their supervisor, even when it is killed outright."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, free_port
from tests.pipeline.stage_helpers import write_run_config


def _children(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_stages_stop_when_the_supervisor_is_killed(models_dir: Path, tmp_path: Path) -> None:
    config = write_run_config(models_dir, tmp_path, metrics_port=free_port())
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    stages: list[int] = []
    while time.monotonic() < deadline and len(stages) < 3:
        time.sleep(0.5)
        stages = [k for k in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
    assert len(stages) == 3, "sink, inference and capture should be running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in stages):
        time.sleep(0.5)
    survivors = [p for p in stages if _alive(p)]
    for p in survivors:
        os.kill(p, signal.SIGKILL)
    assert not survivors, f"stage processes {survivors} outlived the supervisor"


def test_a_crashed_stage_is_counted_in_stage_restarts(models_dir: Path, tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from pipeline.supervisor import RestartsCollector, Supervisor
    from tests.pipeline.stage_helpers import make_config

    config = make_config(models_dir, tmp_path, "  - {id: c, source: x.mp4, models: [{model: demo-anomaly}]}")
    supervisor = Supervisor(config)
    registry = CollectorRegistry()
    registry.register(RestartsCollector(supervisor.stages))
    restarts = {s.name: registry.get_sample_value("vidwatch_stage_restarts_total", {"stage": s.name})
                for s in supervisor.stages}
    assert restarts == {"sink-0": 0, "infer-0": 0, "capture-0": 0}  # every series exists from the start
    infer = next(s for s in supervisor.stages if s.kind == "infer")
    infer.process = supervisor.ctx.Process(target=sys.exit, args=(3,))  # a real process that crashes
    infer.process.start()
    infer.process.join(30)
    supervisor._reap(infer, time.monotonic())
    assert registry.get_sample_value("vidwatch_stage_restarts_total", {"stage": "infer-0"}) == 1
    assert registry.get_sample_value("vidwatch_stage_restarts_total", {"stage": "sink-0"}) == 0
    assert infer.process is None and infer.next_start > time.monotonic()  # restarted after the backoff
    shutil.rmtree(supervisor.metrics_dir, ignore_errors=True)


def test_the_supervisor_stops_after_a_stage_was_killed(models_dir: Path, tmp_path: Path) -> None:
    """SIGKILL a stage (its health reporter is usually waiting on the stop signal then), let the
    supervisor restart it, then SIGTERM: every stage stops and `vidwatch run` exits 0 in bounded
    time. A stop event shared across processes hung here forever (a dead waiter is never woken)."""
    config = write_run_config(models_dir, tmp_path, metrics_port=free_port())
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", str(config)], cwd=ROOT,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, stages = time.monotonic() + 60, []
        while time.monotonic() < deadline and len(stages) < 3:
            time.sleep(0.5)
            stages = [k for k in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]
        assert len(stages) == 3, f"sink, inference and capture should be running; log:\n{log.read_text()[-3000:]}"
        time.sleep(3.0)  # every stage past start-up, its reporter waiting for the next report
        victim = stages[0]
        os.kill(victim, signal.SIGKILL)
        deadline, restarted = time.monotonic() + 60, False
        while time.monotonic() < deadline and not restarted:
            time.sleep(0.5)
            restarted = "restarting in" in log.read_text() and len(
                [k for k in _children(proc.pid) if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]) == 3
        assert restarted, f"the killed stage was not restarted; log:\n{log.read_text()[-3000:]}"
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        # Three kinds, each stopped (or killed) within STOP_TIMEOUT_S (10 s): 60 s is ample on a loaded box.
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()  # its stages notice (parent watch) and stop
    assert code == 0, f"`vidwatch run` did not exit cleanly within 60 s of SIGTERM ({code}); " \
                      f"log:\n{log.read_text()[-3000:]}"
