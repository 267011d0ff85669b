"""A loopback RTSP server for tests: each mount serves one H.264 MP4 file, looped forever.

Runs under Debian's ``/usr/bin/python3`` (it needs ``gi`` with GstRtspServer, which the venv does
not have); ``tests/support/rtsp.py`` starts it. No re-encoding: every file is demuxed once at
start-up into its H.264 access units, and a feeder thread per client pushes them into an
``appsrc`` at the file's frame rate with fresh timestamps, so looping is seamless and cheap.

    /usr/bin/python3 tests/support/rtsp_server.py --port 8554 \
        --mount /cam0=car-detection.mp4 --mount /cam1=fi001.mp4

Prints ``READY port=<port>`` on stdout once listening (``--port 0`` picks a free port).
Freezing stops frame delivery but keeps every RTSP/RTP socket open, like a hung camera:
SIGUSR1 freezes, SIGUSR2 thaws, ``--freeze-after S`` freezes S seconds after start.
SIGTERM / SIGINT exit cleanly.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

HOST = "127.0.0.1"
FREEZE_POLL_S = 0.05


@dataclass(frozen=True)
class AccessUnit:
    """One encoded frame, times relative to the first frame's decode time."""

    data: bytes
    dts: int
    pts_offset: int  # pts - dts: non-zero for streams with B-frames
    duration: int
    keyframe: bool


@dataclass(frozen=True)
class Clip:
    caps: Gst.Caps
    units: tuple[AccessUnit, ...]
    period: int  # ns from the first frame of one loop to the first frame of the next


def demux(path: Path) -> Clip:
    """Read every H.264 access unit of an MP4 file (byte-stream, SPS/PPS before each IDR)."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! qtdemux ! h264parse config-interval=-1 '
        "! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    samples = []
    while (sample := sink.emit("pull-sample")) is not None:
        samples.append(sample)
    pipeline.set_state(Gst.State.NULL)
    if not samples:
        raise SystemExit(f"rtsp_server: no H.264 video frames in {path}")
    return _clip(samples)


def _clip(samples: list[Gst.Sample]) -> Clip:
    first = samples[0].get_buffer()
    t0 = _dts(first)
    units = []
    for sample in samples:
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        data = bytes(info.data)
        buf.unmap(info)
        dts = _dts(buf)
        units.append(
            AccessUnit(
                data=data,
                dts=dts - t0,
                pts_offset=buf.pts - dts if buf.pts != Gst.CLOCK_TIME_NONE else 0,
                duration=buf.duration if buf.duration != Gst.CLOCK_TIME_NONE else 0,
                keyframe=not buf.has_flags(Gst.BufferFlags.DELTA_UNIT),
            )
        )
    last = units[-1]
    period = last.dts + (last.duration or Gst.SECOND // 25)
    return Clip(caps=samples[0].get_caps(), units=tuple(units), period=period)


def _dts(buf: Gst.Buffer) -> int:
    return buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else buf.pts


class Freezer:
    """Shared freeze switch; tracks total frozen time so feeders can shift their schedule."""

    def __init__(self) -> None:
        self._thawed = threading.Event()
        self._thawed.set()

    def freeze(self) -> None:
        self._thawed.clear()
        print("FROZEN", flush=True)

    def thaw(self) -> None:
        self._thawed.set()
        print("THAWED", flush=True)

    def wait_thawed(self, stop: threading.Event) -> float:
        """Block while frozen; return the seconds spent waiting."""
        start = time.monotonic()
        while not self._thawed.wait(FREEZE_POLL_S):
            if stop.is_set():
                break
        return time.monotonic() - start


class Feeder(threading.Thread):
    """Pushes a clip's access units into one client's appsrc in real time, looping forever."""

    def __init__(self, clip: Clip, appsrc: Gst.Element, freezer: Freezer) -> None:
        super().__init__(daemon=True)
        self.clip, self.appsrc, self.freezer = clip, appsrc, freezer
        self.stop = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        loop = 0
        while not self.stop.is_set():
            for unit in self.clip.units:
                start += self.freezer.wait_thawed(self.stop)
                due = start + (loop * self.clip.period + unit.dts) / Gst.SECOND
                if self.stop.wait(max(0.0, due - time.monotonic())) or not self._push(unit):
                    return
            loop += 1

    def _push(self, unit: AccessUnit) -> bool:
        buf = Gst.Buffer.new_wrapped(unit.data)
        now = self.appsrc.get_clock().get_time() - self.appsrc.get_base_time()
        buf.dts, buf.pts, buf.duration = now, now + unit.pts_offset, unit.duration
        if not unit.keyframe:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        return self.appsrc.emit("push-buffer", buf) == Gst.FlowReturn.OK


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    """One pipeline per client (not shared), so every client starts at a keyframe."""

    def __init__(self, clip: Clip, freezer: Freezer) -> None:
        super().__init__()
        self.clip, self.freezer = clip, freezer
        self.set_launch(
            "( appsrc name=src is-live=true format=time "
            "! h264parse config-interval=-1 ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )
        self.connect("media-configure", self._configure)

    def _configure(self, _factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_child_by_name("src")
        appsrc.set_property("caps", self.clip.caps)
        feeder = Feeder(self.clip, appsrc, self.freezer)
        # A live appsrc asks for data only once PLAYING: start feeding then, with valid clock times.
        appsrc.connect("need-data", _start_once, feeder)
        media.connect("unprepared", lambda *_: feeder.stop.set())


def _start_once(_appsrc: Gst.Element, _length: int, feeder: Feeder) -> None:
    if feeder.ident is None and not feeder.stop.is_set():
        feeder.start()


def _call(action: Callable[[], None], keep: bool) -> bool:
    """GLib callback: run ``action``; ``keep`` says whether GLib should call again."""
    action()
    return keep


def parse_mount(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name.startswith("/") or not path:
        raise argparse.ArgumentTypeError(f"expected /name=path/to/video.mp4, got {text!r}")
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"no such file: {path}")
    return name, Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8554, help="0 picks a free port")
    parser.add_argument("--mount", type=parse_mount, action="append", required=True)
    parser.add_argument("--freeze-after", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--auth", default=None, metavar="USER:PASSWORD",
                        help="require RTSP basic authentication (401 without these credentials)")
    args = parser.parse_args(argv)

    Gst.init(None)
    freezer = Freezer()
    server = GstRtspServer.RTSPServer(address=HOST, service=str(args.port))
    mounts = server.get_mount_points()
    for name, path in args.mount:
        factory = LoopingFactory(demux(path), freezer)
        if args.auth:
            factory.add_role_from_structure(Gst.Structure.new_from_string(
                "viewer, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))
        mounts.add_factory(name, factory)
    if args.auth:
        user, _, password = args.auth.partition(":")
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        server.set_auth(auth)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on {HOST}:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGUSR1, _call, freezer.freeze, GLib.SOURCE_CONTINUE)
    GLib.unix_signal_add(GLib.PRIORITY_HIGH, signal.SIGUSR2, _call, freezer.thaw, GLib.SOURCE_CONTINUE)
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, _call, loop.quit, GLib.SOURCE_REMOVE)
    if args.freeze_after is not None:
        GLib.timeout_add(int(args.freeze_after * 1000), _call, freezer.freeze, GLib.SOURCE_REMOVE)
    print(f"READY port={server.get_bound_port()}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
