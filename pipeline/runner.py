"""Runs model packages on frames from many cameras: frame graphs once per frame, window graphs
over per-camera ring buffers, shared graphs (same sha256) once for every package that has them.
A package's per-frame work (runtime features, frame graphs) is skipped for frames none of its
windows will read (a stride longer than the window); the features still keep such a frame as the
previous one, so results are the same as computing everything. A frame graph whose outputs windows
read only for their last frame (``last_frame_only`` inputs) runs only on frames that end a window.

Used by the inference stage live, and offline (``score_frames``) by evaluation, so offline
figures come from exactly the code that runs in production.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.camera_state import CameraPackageState, StateStore, Window
from pipeline.engines import Engine, create_engine
from pipeline.modelpkg import GraphSpec, ModelPackage
from pipeline.resize import area_resize

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameMeta:
    camera: str
    seq: int
    t_capture: float  # wall clock (time.time()) when the frame was read
    t_stream: float  # the stream's own timestamp in seconds
    gap: bool = False  # capture says frames before this one are missing (see PackageRunner.mark_gaps)


@dataclass
class WindowResult:
    """One scored window of one camera by one package."""

    camera: str
    package: str
    labels: list[str]
    alert_label: str
    scores: np.ndarray  # [K]
    first: FrameMeta
    last: FrameMeta
    frame_scores: np.ndarray | None = None  # [T]
    heatmap: np.ndarray | None = None  # [h, w]
    last_frame: np.ndarray | None = None  # uint8 HxWx3 RGB, for evidence snapshots

    @property
    def alert_score(self) -> float:
        return float(self.scores[self.labels.index(self.alert_label)])


@dataclass(frozen=True)
class Subscription:
    """A camera runs a package with this window stride and calibration setting."""

    package: str
    stride: int | None = None
    calibrate_seconds: float | None = None


@dataclass
class StageTimings:
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, started: float) -> float:
        now = time.perf_counter()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - started
        return now

    def drain(self) -> dict[str, float]:
        """Seconds per step since the last drain (for counters that accumulate elsewhere)."""
        seconds, self.seconds = self.seconds, {}
        return seconds


DueWindow = tuple[CameraPackageState, Window]
# Per source (``graph.output`` or ``runtime.<name>``): the batch rows it was computed for, and their values stacked.
FrameValues = dict[str, tuple[list[int], np.ndarray]]


class PackageRunner:
    """Holds one engine per distinct graph file and the window state of every camera."""

    def __init__(self, packages: Sequence[ModelPackage], engine: str = "onnxruntime",
                 engine_options: Mapping[str, object] | None = None, state_store: StateStore | None = None,
                 skip_unread: bool = True) -> None:
        self.skip_unread = skip_unread  # False: compute every frame (tests compare the two)
        self.packages = {p.name: p for p in packages}
        # per package: frame graphs that run only on frames ending a window (derived once, read per batch)
        self._window_end = {p.name: p.manifest.window_end_graphs() for p in packages}
        self._engines: dict[str, Engine] = {}  # sha256 -> engine
        for package in packages:
            for graph in package.manifest.graphs:
                if graph.sha256 not in self._engines:
                    self._engines[graph.sha256] = create_engine(engine, package.graph_path(graph), engine_options)
        self.state_store = state_store or StateStore(None)
        self._cameras: dict[str, dict[str, CameraPackageState]] = {}
        self._last_seq: dict[str, int] = {}
        self.timings = StageTimings()
        self.skipped: dict[str, int] = {}  # package -> frames no window read, since the last drain

    # -- cameras -------------------------------------------------------------------------
    def add_camera(self, camera: str, subscriptions: Iterable[Subscription]) -> None:
        states = {}
        for sub in subscriptions:
            package = self.packages[sub.package]
            states[sub.package] = CameraPackageState.create(camera, package, sub, self.state_store)
        self._cameras[camera] = states

    def cameras(self) -> list[str]:
        return list(self._cameras)

    def camera_states(self, camera: str) -> dict[str, CameraPackageState]:
        return self._cameras[camera]

    # -- processing ----------------------------------------------------------------------
    def process(self, frames: np.ndarray, metas: Sequence[FrameMeta]) -> list[WindowResult]:
        """Run all packages on a batch of frames (any cameras, in arrival order per camera)."""
        rows_by_package = self._rows_by_package(metas)
        gaps = self.mark_gaps(metas)
        shared: dict[tuple[str, int, int], dict[str, np.ndarray]] = {}
        results: list[WindowResult] = []
        for name, rows in rows_by_package.items():
            package = self.packages[name]
            reads = self._plan_reads(package, rows, metas, gaps)
            computed = [row for row, read in zip(rows, reads, strict=True) if read]
            if len(computed) < len(rows):
                self.skipped[name] = self.skipped.get(name, 0) + len(rows) - len(computed)
            ends = self._plan_window_ends(package, rows, metas, gaps)
            # Features first: frame graphs may read them, and push() stores them as computed here.
            features = self._compute_features(package, frames, rows, metas, gaps, reads)
            per_frame = (self._run_frame_graphs(package, frames, computed, metas, shared, features, ends)
                         if computed else {})
            due = self._push_frames(package, frames, rows, metas, per_frame, gaps, reads)
            results.extend(self._run_windows(package, due))
        return results

    def drain_skipped(self) -> dict[str, int]:
        """Frames per package that no window read (nothing computed for them) since the last drain."""
        skipped, self.skipped = self.skipped, {}
        return skipped

    def mark_gaps(self, metas: Sequence[FrameMeta]) -> list[bool]:
        """Per frame: does it follow a gap in its camera's frames?

        A gap is flagged by capture (``meta.gap``: a reopened stream, a looped file) or shows as a
        jump in the camera's sampled-frame numbers (frames held back by the motion gate or dropped
        on a full queue). After a gap, windows, frame deltas and flow start afresh.
        """
        gaps = []
        for meta in metas:
            last = self._last_seq.get(meta.camera)
            gaps.append(meta.gap or (last is not None and meta.seq != last + 1))
            self._last_seq[meta.camera] = meta.seq
        return gaps

    def _rows_by_package(self, metas: Sequence[FrameMeta]) -> dict[str, list[int]]:
        rows: dict[str, list[int]] = {}
        for i, meta in enumerate(metas):
            for name in self._cameras.get(meta.camera, {}):
                rows.setdefault(name, []).append(i)
        return rows

    def _plan_reads(self, package: ModelPackage, rows: list[int], metas: Sequence[FrameMeta],
                    gaps: Sequence[bool]) -> list[bool]:
        """Per row: will one of the package's windows (or its calibration) read the frame?"""
        if not self.skip_unread:
            return [True] * len(rows)
        return self._plan_per_camera(package, rows, metas, gaps, CameraPackageState.plan_reads)

    def _plan_window_ends(self, package: ModelPackage, rows: list[int], metas: Sequence[FrameMeta],
                          gaps: Sequence[bool]) -> list[int]:
        """The ``rows`` that end one of their camera's windows: the only ones ``window_end_graphs`` run on."""
        if not self.skip_unread or not self._window_end[package.name]:
            return rows
        ends = self._plan_per_camera(package, rows, metas, gaps, CameraPackageState.plan_window_ends)
        return [row for row, end in zip(rows, ends, strict=True) if end]

    def _plan_per_camera(self, package: ModelPackage, rows: list[int], metas: Sequence[FrameMeta],
                         gaps: Sequence[bool], plan: Callable[[CameraPackageState, list[bool]], list[bool]],
                         ) -> list[bool]:
        """Per row: what ``plan`` says of it, asked of each camera's state for its own rows' gap flags, in order."""
        planned = [True] * len(rows)
        by_camera: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            by_camera.setdefault(metas[row].camera, []).append(i)
        for camera, indices in by_camera.items():
            flags = plan(self._cameras[camera][package.name], [gaps[rows[i]] for i in indices])
            for i, flag in zip(indices, flags, strict=True):
                planned[i] = flag
        return planned

    def _package_frames(self, package: ModelPackage, frames: np.ndarray, rows: list[int]) -> np.ndarray:
        spec = package.manifest.input
        batch = frames[rows]
        if batch.shape[1:3] == (spec.height, spec.width):
            return batch
        # Cameras resize once at capture to their first package's size; others pay a resize here.
        return np.stack([area_resize(f, (spec.width, spec.height)) for f in batch])

    def _compute_features(self, package: ModelPackage, frames: np.ndarray, rows: list[int],
                          metas: Sequence[FrameMeta], gaps: Sequence[bool],
                          reads: Sequence[bool]) -> dict[str, np.ndarray]:
        """The package's runtime features of the ``rows`` it ``reads``, stacked ``[rows read, ...]`` per
        ``runtime.<name>``; the other rows only become their camera's previous frame."""
        if not package.manifest.runtime_features:
            return {}
        started = time.perf_counter()
        # Row order is frame order per camera, and each camera's features keep their own state
        # (the previous frame), so rows of several cameras interleave safely.
        per_row = []
        for row, read in zip(rows, reads, strict=True):
            state = self._cameras[metas[row].camera][package.name]
            if read:
                per_row.append(state.compute_features(frames[row], gaps[row]))
            else:
                state.observe_frame(frames[row], gaps[row])
        stacked = {key: np.stack([values[key] for values in per_row]) for key in per_row[0]} if per_row else {}
        self.timings.add("features", started)
        return stacked

    def _run_frame_graphs(self, package: ModelPackage, frames: np.ndarray, rows: list[int],
                          metas: Sequence[FrameMeta], shared: dict, features: Mapping[str, np.ndarray],
                          ends: list[int]) -> FrameValues:
        """``features`` plus the outputs of the package's frame graphs, keyed ``graph.output``, each with the
        rows it holds: ``rows``, or for ``window_end_graphs`` only those of ``rows`` in ``ends``."""
        values: dict[str, np.ndarray] = dict(features)
        out_rows: dict[str, list[int]] = dict.fromkeys(features, rows)
        window_end, end_rows = self._window_end[package.name], set(ends)
        batches: dict[bool, np.ndarray] = {}
        for graph in package.manifest.frame_graphs():
            at_ends = graph.name in window_end
            graph_rows = [row for row in rows if row in end_rows] if at_ends else rows
            if not graph_rows:
                continue
            started = time.perf_counter()
            batch = batches.get(at_ends)
            if batch is None and "frames" in graph.inputs.values():
                batch = batches[at_ends] = self._package_frames(package, frames, graph_rows)
            if batch is not None and set(graph.inputs.values()) == {"frames"}:
                outputs = self._run_shared(graph, batch, graph_rows, shared)
            else:
                outputs = self._run_graph(graph, self._frame_inputs(package, graph, batch, graph_rows, metas, values))
            for out, array in outputs.items():
                values[f"{graph.name}.{out}"] = array
                out_rows[f"{graph.name}.{out}"] = graph_rows
            self.timings.add(f"frame:{graph.name}", started)
        return {key: (out_rows[key], value) for key, value in values.items()}

    def _run_shared(self, graph: GraphSpec, batch: np.ndarray, rows: list[int],
                    shared: dict) -> dict[str, np.ndarray]:
        """A graph that reads only frames runs once per batch for every package that has it."""
        key = (graph.sha256, *batch.shape[1:3])
        cached = shared.get(key)
        if cached is not None and cached["rows"] == rows:
            return {k: v for k, v in cached.items() if k != "rows"}
        if cached is not None:
            # Different camera subsets: run only rows not yet computed, then index.
            have = {r: i for i, r in enumerate(cached["rows"])}
            missing = [i for i, r in enumerate(rows) if r not in have]
            extra = self._run_graph(graph, {name: batch[missing] for name in graph.inputs}) if missing else {}
            out = {}
            for name in graph.outputs:
                parts = [cached[name][have[r]] if r in have else extra[name][missing.index(i)]
                         for i, r in enumerate(rows)]
                out[name] = np.stack(parts)
            return out
        outputs = self._run_graph(graph, {name: batch for name in graph.inputs})
        shared[key] = {"rows": rows, **outputs}
        return outputs

    def _frame_inputs(self, package: ModelPackage, graph: GraphSpec, batch: np.ndarray | None,
                      rows: list[int], metas: Sequence[FrameMeta], values: dict) -> dict[str, np.ndarray]:
        inputs = {}
        for name, source in graph.inputs.items():
            if source == "frames":
                inputs[name] = batch if batch is not None else np.empty(0)
            elif source.startswith("state."):
                # Frame graphs reading per-camera state are fed the first camera's state; packages
                # keep per-camera state in window graphs, which run per camera.
                inputs[name] = self._cameras[metas[rows[0]].camera][package.name].state_array(source)
            else:  # an earlier graph's output or a runtime feature, both already in ``values``
                inputs[name] = values[source]
        return inputs

    def _run_graph(self, graph: GraphSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._engines[graph.sha256].run(inputs)

    def _push_frames(self, package: ModelPackage, frames: np.ndarray, rows: list[int], metas: Sequence[FrameMeta],
                     per_frame: FrameValues, gaps: Sequence[bool], reads: Sequence[bool]) -> list[DueWindow]:
        """Append each frame's sources (runtime features included; ``per_frame`` holds the rows each was
        computed for) to its camera's ring, a placeholder for the others; return every window that fell due."""
        due = []
        started = time.perf_counter()
        index = {key: {row: i for i, row in enumerate(key_rows)} for key, (key_rows, _) in per_frame.items()}
        for row, read in zip(rows, reads, strict=True):
            meta = metas[row]
            state = self._cameras[meta.camera][package.name]
            sources = None
            if read:
                sources = {key: value[index[key][row]] for key, (_, value) in per_frame.items() if row in index[key]}
            if state.push(frames[row], meta, sources, gaps[row]):
                due.append((state, state.take_window()))
        self.timings.add("features_and_rings", started)
        return due

    def _run_windows(self, package: ModelPackage, due: list[DueWindow]) -> list[WindowResult]:
        if not due:
            return []
        results = []
        started = time.perf_counter()
        # Window graphs that read per-camera state run per camera; the rest batch across cameras.
        uses_state = any(s.startswith("state.") for g in package.manifest.window_graphs() for s in g.inputs.values())
        groups: list[list[DueWindow]] = []
        if uses_state:
            by_camera: dict[str, list[DueWindow]] = {}
            for item in due:
                by_camera.setdefault(item[0].camera, []).append(item)
            groups = list(by_camera.values())
        else:
            groups = [due]
        for group in groups:
            results.extend(self._run_window_group(package, group))
        self.timings.add(f"window:{package.name}", started)
        return results

    def _run_window_group(self, package: ModelPackage, group: list[DueWindow]) -> list[WindowResult]:
        m = package.manifest
        windows = [window for _, window in group]
        values: dict[str, np.ndarray] = {}
        for graph in m.window_graphs():
            inputs = {}
            for name, source in graph.inputs.items():
                if source.startswith("state."):
                    inputs[name] = group[0][0].state_array(source)
                elif source in values:
                    inputs[name] = values[source]
                elif name in graph.last_frame_only:
                    inputs[name] = np.stack([w.last(source) for w in windows])
                else:
                    inputs[name] = np.stack([w.stacked(source) for w in windows])
            for out, array in self._run_graph(graph, inputs).items():
                values[f"{graph.name}.{out}"] = array
        results = []
        for i, (state, window) in enumerate(group):
            results.append(WindowResult(
                camera=state.camera, package=package.name, labels=list(m.labels), alert_label=m.alert_label,
                scores=np.asarray(values[m.scores][i], dtype=np.float32).reshape(-1),
                first=window.metas[0], last=window.metas[-1],
                frame_scores=values[m.frame_scores][i] if m.frame_scores else None,
                heatmap=values[m.heatmap][i] if m.heatmap else None,
                last_frame=window.last_frame,
            ))
        return results


# -- offline -----------------------------------------------------------------------------
@dataclass
class OfflineScores:
    frame_scores: np.ndarray  # [F] alert-label score per frame
    window_scores: np.ndarray  # [W, K]
    window_end: np.ndarray  # [W] index of each window's last frame
    heatmaps: list[np.ndarray] = field(default_factory=list)


def score_frames(package: ModelPackage, frames: Iterable[np.ndarray], state: dict[str, np.ndarray] | None = None,
                 stride: int = 1, batch: int = 16, engine: str = "onnxruntime",
                 engine_options: Mapping[str, object] | None = None,
                 runner: PackageRunner | None = None) -> OfflineScores:
    """Score one clip's frames (uint8 RGB HxWx3, in order) the way the live pipeline does.

    Each frame's score is taken from the latest window that covers it (its ``frame_scores``
    when the package has them, else the window's alert score). Pass ``runner`` to reuse loaded
    engines across clips.
    """
    runner = runner or PackageRunner([package], engine, engine_options)
    camera = f"offline-{id(frames)}"
    runner.add_camera(camera, [Subscription(package.name, stride=stride)])
    if state is not None:
        runner.camera_states(camera)[package.name].set_state(state)
    results: list[WindowResult] = []
    pending: list[np.ndarray] = []
    count = 0

    def flush() -> None:
        metas = [FrameMeta(camera, count - len(pending) + i, 0.0, 0.0) for i in range(len(pending))]
        results.extend(runner.process(np.stack(pending), metas))
        pending.clear()

    for frame in frames:
        pending.append(frame)
        count += 1
        if len(pending) == batch:
            flush()
    if pending:
        flush()
    runner._cameras.pop(camera, None)
    runner._last_seq.pop(camera, None)
    return _assemble(results, count, package)


def _assemble(results: list[WindowResult], count: int, package: ModelPackage) -> OfflineScores:
    if not results:
        raise ValueError(f"{count} frames are fewer than the {package.manifest.window.frames} "
                         f"frames one window of {package.name!r} needs")
    frame_scores = np.full(count, np.nan, dtype=np.float32)
    for result in results:
        first, last = result.first.seq, result.last.seq
        values = result.frame_scores if result.frame_scores is not None else np.full(last - first + 1,
                                                                                     result.alert_score)
        frame_scores[first:last + 1] = values
    _forward_fill(frame_scores)
    return OfflineScores(
        frame_scores=frame_scores,
        window_scores=np.stack([r.scores for r in results]),
        window_end=np.array([r.last.seq for r in results]),
        heatmaps=[r.heatmap for r in results if r.heatmap is not None],
    )


def _forward_fill(values: np.ndarray) -> None:
    """Frames after the last full window take its score (the live pipeline would still show it)."""
    for i in range(1, len(values)):
        if np.isnan(values[i]):
            values[i] = values[i - 1]
