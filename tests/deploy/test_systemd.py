"""deploy/systemd/vidwatch.service: accepted by systemd-analyze verify with no warning, and its
hardening keeps the exposure score systemd-analyze security reports (README "Deploy")."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import ROOT
from tests.support.servers import require

UNIT = ROOT / "deploy" / "systemd" / "vidwatch.service"
INSTALLED_VIDWATCH = "/opt/vidwatch/venv/bin/vidwatch"
MAX_EXPOSURE = 2.0  # README reports the figure; hardening must not regress past this


def local_unit(tmp_path: Path) -> Path:
    """The unit as shipped, except that ExecStart points at this checkout's vidwatch: verify
    checks the binary exists, and /opt/vidwatch is where the install notes put it, not here."""
    text = UNIT.read_text()
    assert INSTALLED_VIDWATCH in text
    unit = tmp_path / "vidwatch.service"
    unit.write_text(text.replace(INSTALLED_VIDWATCH, str(ROOT / ".venv" / "bin" / "vidwatch")))
    return unit


def test_unit_verifies_without_warnings(tmp_path: Path) -> None:
    analyze = require("systemd-analyze")
    result = subprocess.run([analyze, "verify", str(local_unit(tmp_path))], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stdout + result.stderr


def test_unit_runs_the_supervisor_as_a_notify_service_with_a_watchdog() -> None:
    text = UNIT.read_text()
    for line in ("Type=notify", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/vidwatch", "PrivateTmp=yes", "ProtectHome=yes", "CapabilityBoundingSet=",
                 "User=vidwatch"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), line
    assert re.search(r"^WatchdogSec=\d+", text, re.M)
    assert re.search(rf"^ExecStart={re.escape(INSTALLED_VIDWATCH)} run ", text, re.M)


def test_security_exposure_stays_low(tmp_path: Path) -> None:
    analyze = require("systemd-analyze")
    result = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(local_unit(tmp_path))],
                            capture_output=True, text=True)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout + result.stderr)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
