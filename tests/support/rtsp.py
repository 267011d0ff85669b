"""Start ``rtsp_server.py`` (a real GStreamer RTSP server) from tests, and tell when it can't run.

    ok, reason = rtsp_available()
    if not ok:
        pytest.skip(reason)
    with rtsp_server({"cam0": Path("car.mp4")}) as server:
        cap = cv2.VideoCapture(server.url("cam0"), cv2.CAP_FFMPEG)
        server.freeze()   # frames stop, sockets stay open
        server.thaw()

The server runs under Debian's ``/usr/bin/python3``: GstRtspServer comes from apt
(``deploy/install-system-deps.sh``), not from PyPI, so the venv cannot import it.
"""

from __future__ import annotations

import functools
import queue
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

SYSTEM_PYTHON = Path("/usr/bin/python3")
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
HOST = "127.0.0.1"
START_TIMEOUT_S = 30.0  # demuxing long files happens before READY
SIGNAL_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0

_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("appsrc", "appsink", "qtdemux", "h264parse", "rtph264pay") if not Gst.ElementFactory.find(e)]
print(" ".join(missing))
"""


class RtspServerError(RuntimeError):
    """The test RTSP server did not start or did not answer a signal; carries its stderr."""


@functools.cache
def rtsp_available() -> tuple[bool, str]:
    """Whether the system Python can run the GStreamer RTSP server, and why not."""
    if not SYSTEM_PYTHON.exists():
        return False, f"{SYSTEM_PYTHON} not found (the RTSP test server runs on Debian's python3)"
    try:
        probe = subprocess.run([str(SYSTEM_PYTHON), "-c", _PROBE], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return False, f"{SYSTEM_PYTHON} timed out importing GStreamer"
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return False, f"{SYSTEM_PYTHON} cannot import gi/GstRtspServer ({last}); run deploy/install-system-deps.sh"
    if missing := probe.stdout.strip():
        return False, f"GStreamer elements missing: {missing}; run deploy/install-system-deps.sh"
    return True, ""


class RtspServer:
    """A running ``rtsp_server.py`` process; use through :func:`rtsp_server`."""

    def __init__(self, proc: subprocess.Popen[str], stderr: IO[str]) -> None:
        self.proc = proc
        self._stderr = stderr
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self.port = int(self._wait_for("READY", START_TIMEOUT_S).split("port=")[1])

    def url(self, name: str) -> str:
        return f"rtsp://{HOST}:{self.port}/{name.lstrip('/')}"

    def freeze(self) -> None:
        """Stop sending frames on every mount, keeping all sockets open (a hung camera)."""
        self._signal(signal.SIGUSR1, "FROZEN")

    def thaw(self) -> None:
        """Resume sending frames."""
        self._signal(signal.SIGUSR2, "THAWED")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()

    def _signal(self, sig: signal.Signals, ack: str) -> None:
        self.proc.send_signal(sig)
        self._wait_for(ack, SIGNAL_TIMEOUT_S)

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.strip())
        self._lines.put(None)  # the process closed stdout: it exited

    def _wait_for(self, prefix: str, timeout: float) -> str:
        try:
            while (line := self._lines.get(timeout=timeout)) is not None:
                if line.startswith(prefix):
                    return line
        except queue.Empty:
            raise RtspServerError(self._failure(f"no {prefix} within {timeout:.0f} s")) from None
        self.proc.wait(STOP_TIMEOUT_S)
        raise RtspServerError(self._failure(f"exited before {prefix}"))

    def _failure(self, what: str) -> str:
        self._stderr.seek(0)
        status = "running" if self.proc.poll() is None else f"exit code {self.proc.returncode}"
        return f"RTSP test server: {what} ({status}); stderr:\n{self._stderr.read()[-2000:]}"


@contextmanager
def rtsp_server(mounts: dict[str, Path], port: int | None = None, auth: str | None = None) -> Iterator[RtspServer]:
    """Serve each file of ``mounts`` (name -> MP4 path) looped on ``rtsp://127.0.0.1:port/name``.

    ``port=None`` lets the server pick a free port (read it from ``.port`` or ``.url()``).
    ``auth="user:password"`` makes the server require RTSP basic authentication.
    The process is killed on exit, also when the body raises.
    """
    ok, reason = rtsp_available()
    if not ok:
        raise RtspServerError(reason)
    cmd = [str(SYSTEM_PYTHON), str(SERVER_SCRIPT), "--port", str(port or 0)]
    for name, path in mounts.items():
        cmd += ["--mount", f"/{name.lstrip('/')}={path}"]
    if auth:
        cmd += ["--auth", auth]
    stderr = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, bufsize=1)
    try:
        server = RtspServer(proc, stderr)
    except BaseException:
        proc.kill()
        proc.wait()
        stderr.close()
        raise
    try:
        yield server
    finally:
        server.stop()
