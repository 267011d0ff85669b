"""Per-camera, per-package state in the inference stage: the ring of per-frame sources windows
are built from, runtime features (optical flow...), fitted arrays and live calibration.

The ring holds what window graphs read, never raw frames (except the latest, for evidence), so
a frame's features are computed once and reused by every window that overlaps it. Windows end when
the ring first fills, then every ``stride`` frames; with a stride longer than the window, the
frames between two windows are in none, and their sources are never computed (``frame_is_read``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.calibration import FITTERS, SEGMENT, STATE_CHECKS
from pipeline.errors import ModelPackageError
from pipeline.features import FrameFeature, create_feature
from pipeline.modelpkg import ModelPackage

if TYPE_CHECKING:
    from pipeline.runner import FrameMeta, Subscription

logger = logging.getLogger(__name__)


class StateStore:
    """Fitted per-camera arrays persisted as ``<root>/<camera>/<package>.npz`` (atomic writes),
    so a restart does not recalibrate. ``root=None`` keeps nothing on disk."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def _path(self, camera: str, package: str) -> Path | None:
        return None if self.root is None else self.root / camera / f"{package}.npz"

    def load(self, camera: str, package: str) -> dict[str, np.ndarray] | None:
        path = self._path(camera, package)
        if path is None or not path.exists():
            return None
        with np.load(path) as data:
            return {k: data[k] for k in data.files}

    def save(self, camera: str, package: str, state: dict[str, np.ndarray]) -> None:
        path = self._path(camera, package)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, **state)  # type: ignore[arg-type]
        os.replace(tmp, path)


# The ring slot of a frame no window reads: its sources were never computed (see frame_is_read).
SKIPPED = np.empty(0, np.float32)
SKIPPED.flags.writeable = False


def window_ends_at(position: int, frames: int, stride: int) -> bool:
    """Is a window due at the ``position``-th frame (1-based) of a run of consecutive frames in the
    ring? The first when the ring fills, then every ``stride`` frames."""
    return position >= frames and (position - frames) % stride == 0


def frame_is_read(position: int, frames: int, stride: int) -> bool:
    """Will the run's ``position``-th frame (1-based) be in a window if the run goes on? Every frame
    when ``stride <= frames``; with a longer stride, the ``stride - frames`` frames before each
    window's first are in none."""
    if position <= frames:
        return True
    return -(position - frames) % stride < frames  # frames until the next window's end


@dataclass
class Window:
    metas: list[FrameMeta]
    sources: dict[str, list[np.ndarray]]
    last_frame: np.ndarray | None

    def stacked(self, source: str) -> np.ndarray:
        return np.stack(self.sources[source])

    def last(self, source: str) -> np.ndarray:
        """The window's last frame's value of ``source`` as ``[1, ...]`` (a ``last_frame_only`` input)."""
        return self.sources[source][-1][None]


class CameraPackageState:
    """Everything one camera keeps for one package."""

    def __init__(self, camera: str, package: ModelPackage, frames: int, stride: int,
                 calibrate_seconds: float | None, store: StateStore) -> None:
        m = package.manifest
        self.camera, self.package, self.store = camera, package, store
        self.frames, self.stride = frames, stride
        self.window_sources = sorted({s for g in m.window_graphs() for s in g.inputs.values()
                                      if not s.startswith("state.") and _is_frame_source(s, m)})
        # Sources windows read for their last frame only (outputs of m.window_end_graphs()): the ring holds
        # SKIPPED for the other frames, whose frame graphs never ran (see plan_window_ends).
        ends = m.window_end_graphs()
        self.end_sources = {s for s in self.window_sources if s.split(".", 1)[0] in ends}
        self.features: dict[str, FrameFeature] = {
            f"runtime.{name}": create_feature(spec) for name, spec in m.runtime_features.items()}
        # Features whose run-first frame (camera start, after a gap) takes the second frame's value
        # (flow with first="next": the first frame has no previous one); see _borrow_first.
        self._borrowing = [k for k, f in self.features.items() if getattr(f, "borrows_next", False)]
        self._run_length = 0  # frames pushed since the camera started or since the last gap
        self._run_first: dict[str, np.ndarray] | None = None  # the stored arrays of the run's first frame
        self.metas: deque[FrameMeta] = deque(maxlen=frames)
        self.ring: dict[str, deque[np.ndarray]] = {s: deque(maxlen=frames) for s in self.window_sources}
        self.position = 0  # frames pushed into the ring since it was last emptied (camera start, gap)
        self.last_frame: np.ndarray | None = None
        self.state: dict[str, np.ndarray] | None = None
        self.calibration_seconds = calibrate_seconds
        self._collected: dict[str, list[np.ndarray]] = {}
        self._segments: list[int] = []  # per collected frame: runs of consecutive frames, split at gaps
        self._calibration_start: float | None = None
        self._fitting: threading.Thread | None = None

    @classmethod
    def create(cls, camera: str, package: ModelPackage, sub: Subscription, store: StateStore) -> CameraPackageState:
        window = package.manifest.window
        state = cls(camera, package, window.frames, sub.stride or window.stride, sub.calibrate_seconds, store)
        state._init_state()
        return state

    def _init_state(self) -> None:
        m = self.package.manifest
        saved = self.store.load(self.camera, self.package.name)
        missing = sorted(self.state_keys() - set(saved)) if saved is not None else []
        if missing:
            # e.g. saved by an older version of the package whose graphs read other state arrays
            logger.warning("camera %s: saved state for %s lacks %s that its graphs read; ignoring it",
                           self.camera, m.name, ", ".join(missing))
            saved = None
        problem = (STATE_CHECKS.get(m.calibration.fit)(saved, m.calibration.params)
                   if saved is not None and m.calibration is not None and m.calibration.fit in STATE_CHECKS else None)
        if problem:
            logger.warning("camera %s: saved state for %s does not fit the package (%s); ignoring it",
                           self.camera, m.name, problem)
            saved = None
        if saved is not None:
            logger.info("camera %s: loaded fitted state for %s (no recalibration)", self.camera, m.name)
            self.state = read_only(saved)
        elif self.calibration_seconds is None:
            self.state = self.package.shipped_state()
        if self.state is None and not self.needs_state():
            return
        if self.state is None:
            if m.calibration is None:
                raise ModelPackageError(f"{self.package.root}: graphs read state.* but the package ships no "
                                        f"state.npz and declares no calibration")
            self.calibration_seconds = self.calibration_seconds or m.calibration.seconds
            logger.info("camera %s: calibrating %s for %.0f s", self.camera, m.name, self.calibration_seconds)

    def needs_state(self) -> bool:
        return bool(self.state_keys())

    def state_keys(self) -> set[str]:
        """The ``state.<key>`` arrays the package's graphs read."""
        return {s.removeprefix("state.") for g in self.package.manifest.graphs for s in g.inputs.values()
                if s.startswith("state.")}

    @property
    def calibrating(self) -> bool:
        return self.needs_state() and self.state is None

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        self.state = read_only(state)

    def state_array(self, source: str) -> np.ndarray:
        if self.state is None:
            raise ModelPackageError(f"camera {self.camera}: {self.package.name} has no fitted state yet")
        return self.state[source.removeprefix("state.")]

    # -- frames --------------------------------------------------------------------------
    def plan_reads(self, gaps: Sequence[bool]) -> list[bool]:
        """Will a window (or calibration) read each of the camera's next frames, if the run goes on?
        ``gaps``: the frames' gap flags, in frame order, as :meth:`push` will get them. A frame no
        window reads goes to :meth:`observe_frame` and is pushed without sources."""
        if self.calibrating:
            return [True] * len(gaps)  # calibration collects every frame
        reads, position = [], self.position
        for gap in gaps:
            position = 1 if gap else position + 1
            # A run's second frame lends its motion features to the first (_borrow_first).
            reads.append(frame_is_read(position, self.frames, self.stride) or (position == 2 and bool(self._borrowing)))
        return reads

    def plan_window_ends(self, gaps: Sequence[bool]) -> list[bool]:
        """Will each of the camera's next frames end a window (or be collected by calibration), if the run
        goes on? The frame graphs of ``window_end_graphs`` run only on those frames. ``gaps`` as in
        :meth:`plan_reads`."""
        if self.calibrating:
            return [True] * len(gaps)  # calibration collects every frame's sources
        ends, position = [], self.position
        for gap in gaps:
            position = 1 if gap else position + 1
            ends.append(window_ends_at(position, self.frames, self.stride))
        return ends

    def observe_frame(self, frame: np.ndarray, gap: bool = False) -> None:
        """:meth:`compute_features` for a frame no window reads: the features only keep it as their
        previous frame, so the next frame's values are the same as if it had been computed."""
        for feature in self.features.values():
            if gap:
                feature.reset()
            feature.observe(frame)

    def compute_features(self, frame: np.ndarray, gap: bool = False) -> dict[str, np.ndarray]:
        """Runtime features of this camera's next frame, keyed ``runtime.<name>``.

        Features keep state (the previous frame): call once per frame, in frame order. After a
        ``gap`` they start afresh, as on a camera's first frame (no motion across a gap).
        """
        if gap:
            for feature in self.features.values():
                feature.reset()
        return {key: feature(frame) for key, feature in self.features.items()}

    def push(self, frame: np.ndarray, meta: FrameMeta, sources: dict[str, np.ndarray] | None,
             gap: bool = False) -> bool:
        """Add one frame's sources (frame-graph outputs and the runtime features from
        :meth:`compute_features`; None for a frame :meth:`plan_reads` said no window reads: the
        ring holds ``SKIPPED`` for it); True when a window is due (see ``window_ends_at``).

        After a ``gap`` the ring starts empty: a window is only ever ``frames`` consecutive frames."""
        self._run_length = 1 if gap else self._run_length + 1
        if self.calibrating:
            assert sources is not None, "calibration collects every frame"
            self._borrow_first(self._collect(meta, sources, gap), sources)
            return False
        if gap:
            for ring in self.ring.values():
                ring.clear()
            self.metas.clear()
            self.position = 0
        # Copies, not views: a view of one row keeps the whole batch's output (or the whole received
        # message, for the frame) alive, and a ring of T rows from T batches would pin T batches per camera.
        stored = {key: SKIPPED if sources is None or (key in self.end_sources and key not in sources)
                  else np.array(sources[key], copy=True) for key in self.window_sources}
        for key, value in stored.items():
            self.ring[key].append(value)
        if sources is not None:
            self._borrow_first(stored, sources)
        self.metas.append(meta)
        self.last_frame = np.array(frame, copy=True)
        self.position += 1
        return window_ends_at(self.position, self.frames, self.stride)

    def _borrow_first(self, stored: dict[str, np.ndarray] | None, sources: dict[str, np.ndarray]) -> None:
        """A run's first frame has no motion features (no previous frame): when its second frame
        arrives, the first frame's stored copies (in the ring or the calibration collection) of the
        borrowing features take the second frame's values. No window is scored in between: a window
        holds at least two frames (``pipeline.features.flow.borrow_first`` is the offline equivalent)."""
        if not self._borrowing:
            return
        if self._run_length == 1:
            self._run_first = {k: stored[k] for k in self._borrowing if k in stored} if stored else None
        elif self._run_length == 2 and self._run_first:
            for key, first in self._run_first.items():
                np.copyto(first, sources[key])
            self._run_first = None

    def take_window(self) -> Window:
        assert not any(value is SKIPPED for key, ring in self.ring.items()
                       for value in (list(ring)[-1:] if key in self.end_sources else ring)), \
            f"camera {self.camera}: a window of {self.package.name} holds a frame planned as read by none"
        return Window(list(self.metas), {k: list(v) for k, v in self.ring.items()}, self.last_frame)

    # -- calibration ---------------------------------------------------------------------
    def _collect(self, meta: FrameMeta, sources: dict[str, np.ndarray], gap: bool) -> dict[str, np.ndarray] | None:
        """Keep this frame's calibration sources; returns the stored copies (None: not kept)."""
        spec = self.package.manifest.calibration
        assert spec is not None
        if self._fitting is not None:
            return None  # the fit runs in the background; frames meanwhile are neither kept nor scored
        stored = {key: np.array(sources[key], copy=True) for key in spec.collect}
        for key, value in stored.items():
            self._collected.setdefault(key, []).append(value)
        segment = self._segments[-1] if self._segments else 0
        self._segments.append(segment + 1 if gap and self._segments else segment)
        if self._calibration_start is None:
            self._calibration_start = meta.t_stream
        if meta.t_stream - self._calibration_start >= (self.calibration_seconds or spec.seconds):
            self._fit()
            return None  # handed to the fit (which may already be stacking them): no later borrowing
        return stored

    def wait_fitted(self, timeout: float) -> bool:
        """Block until a background fit finishes (tests, tools); True when the camera scores now."""
        if self._fitting is not None:
            self._fitting.join(timeout)
        return not self.calibrating

    def _fit(self) -> None:
        count = len(next(iter(self._collected.values())))
        if count < 2 * self.frames + 1:
            logger.warning("camera %s: only %d frames collected for %s; calibrating longer", self.camera, count,
                           self.package.name)
            return
        # Fitting can take seconds: run it beside the stream so other cameras keep being scored.
        self._fitting = threading.Thread(target=self._fit_now, name=f"fit-{self.camera}", daemon=True)
        self._fitting.start()

    def _fit_now(self) -> None:
        spec = self.package.manifest.calibration
        assert spec is not None
        collected = {k: np.stack(v) for k, v in self._collected.items()}
        collected[SEGMENT] = np.asarray(self._segments, np.int64)
        self._collected.clear()
        self._segments = []
        count = len(next(iter(collected.values())))
        try:
            state = FITTERS.get(spec.fit)(collected, self.frames, spec.params)
        except Exception as exc:  # a failed fit must not kill the worker: calibrate again
            logger.error("camera %s: fitting %s failed (%r); calibrating again", self.camera, self.package.name, exc)
            self._calibration_start, self._fitting = None, None
            return
        try:
            self.store.save(self.camera, self.package.name, state)
        except OSError as exc:  # a full disk costs a recalibration after restart, nothing more
            logger.error("camera %s: could not persist calibration of %s: %s", self.camera, self.package.name, exc)
        self.state = read_only(state)
        logger.info("camera %s: calibrated %s on %d frames; scoring now", self.camera, self.package.name, count)


def read_only(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mark fitted arrays read-only: nothing may change them in place, which lets a GPU engine keep
    one device copy of each (a memory bank is megabytes) instead of sending it with every window."""
    for array in state.values():
        array.flags.writeable = False
    return state


def _is_frame_source(source: str, manifest: object) -> bool:
    from pipeline.modelpkg import Manifest

    assert isinstance(manifest, Manifest)
    if source.startswith("runtime.") or source == "frames":
        return True
    graph = source.split(".", 1)[0]
    return any(g.name == graph and g.over == "frame" for g in manifest.graphs)
