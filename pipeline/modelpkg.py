"""Model packages: a folder of ONNX graphs plus ``manifest.json`` saying how they chain.

A package is run in two phases by the inference stage:

* **frame graphs** (``over: "frame"``) run once per sampled frame, batched across cameras. The
  first usually reads ``frames`` (uint8 NHWC RGB at ``input.height x input.width``);
  normalization happens inside the graph. Frame graphs may also read runtime features, which
  are computed per camera before the frame graphs run. Frame graphs of different packages whose
  file has the same sha256 and that read only ``frames`` run once and feed every package (the
  shared backbone trunk).
* **window graphs** (``over: "window"``) run once per window of ``window.frames`` frames, every
  ``window.stride`` frames. An input that names a frame-level source receives the window's
  per-frame values stacked as ``[N, T, ...]``; nothing per frame is recomputed.

Input sources a graph may name:

* ``frames``                 the uint8 frames ``[N, H, W, 3]``
* ``<graph>.<output>``       an output of an earlier graph of the same package
* ``runtime.<feature>``      a per-frame feature computed by the runtime (``pipeline.features``),
                             declared under ``runtime_features``; readable by frame graphs
                             (``[N, ...]``), window graphs (``[N, T, ...]``) and calibration
* ``state.<key>``            an array fitted for this camera (``state.npz`` shipped in the
                             package, or produced by live calibration), passed without batch dim

``scores`` names the window output ``[N, K]`` aligned with ``labels``; ``frame_scores`` an
optional ``[N, T]`` output and ``heatmap`` an optional ``[N, h, w]`` output (values on the same
scale as the scores, drawn on evidence snapshots).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline.errors import ModelPackageError

if TYPE_CHECKING:
    from pipeline.config import CameraConfig

MANIFEST = "manifest.json"
STATE_FILE = "state.npz"
FORMAT_VERSION = 1


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputSpec(_Frozen):
    """What the first frame graph expects; normalization is inside the graph, listed for users."""

    height: int = Field(gt=0)
    width: int = Field(gt=0)
    layout: Literal["NHWC"] = "NHWC"
    dtype: Literal["uint8"] = "uint8"
    color: Literal["RGB"] = "RGB"
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class WindowSpec(_Frozen):
    frames: int = Field(gt=0, description="T: frames per window")
    stride: int = Field(gt=0, description="S: a window is scored every S frames")
    dynamic_frames: bool = Field(False, description="window graphs accept any T")
    fps: float | None = Field(None, gt=0, description="sampling rate the model was trained at")


class GraphSpec(_Frozen):
    name: str
    file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    over: Literal["frame", "window"]
    inputs: dict[str, str]
    outputs: list[str]
    # Window-graph inputs fed only the window's last frame (``[N, 1, ...]``, not ``[N, T, ...]``): a frame
    # graph whose outputs are read only this way runs only on frames that end a window.
    last_frame_only: list[str] = Field(default_factory=list)


class CalibrationSpec(_Frozen):
    """Live calibration: collect per-frame sources for a while, then fit ``state`` arrays."""

    fit: str = Field(description="name in pipeline.calibration.FITTERS")
    collect: list[str] = Field(description="per-frame sources to collect, e.g. 'trunk.c4'")
    seconds: float = Field(30.0, gt=0)
    params: dict[str, Any] = Field(default_factory=dict)


class Manifest(_Frozen):
    format: Literal[1] = 1
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    version: str
    task: Literal["action", "anomaly"]
    description: str = ""
    input: InputSpec
    window: WindowSpec
    graphs: list[GraphSpec] = Field(min_length=1)
    runtime_features: dict[str, dict[str, Any]] = Field(default_factory=dict)
    labels: list[str] = Field(min_length=1)
    alert_label: str
    scores: str
    frame_scores: str | None = None
    heatmap: str | None = None
    threshold: float | None = Field(None, description="suggested alert threshold on the alert label")
    calibration: CalibrationSpec | None = None
    outputs_doc: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Manifest:
        _check_alert_label(self)
        _check_sources(self)
        return self

    def graph(self, name: str) -> GraphSpec:
        for graph in self.graphs:
            if graph.name == name:
                return graph
        raise KeyError(name)

    @property
    def alert_index(self) -> int:
        return self.labels.index(self.alert_label)

    def frame_graphs(self) -> list[GraphSpec]:
        return [g for g in self.graphs if g.over == "frame"]

    def window_graphs(self) -> list[GraphSpec]:
        return [g for g in self.graphs if g.over == "window"]

    def window_end_graphs(self) -> set[str]:
        """Frame graphs whose outputs only window graphs read, each through a ``last_frame_only`` input, and
        that read nothing but the frames (and fitted state): they need running only on frames that end a window."""
        whole: set[str] = set()  # per-frame sources some graph reads for every frame
        last: set[str] = set()
        for graph in self.graphs:
            for name, source in graph.inputs.items():
                (last if name in graph.last_frame_only else whole).add(source)
        ends = set()
        for graph in self.frame_graphs():
            outputs = {f"{graph.name}.{out}" for out in graph.outputs}
            if (outputs & last and not outputs & whole
                    and all(s == "frames" or s.startswith("state.") for s in graph.inputs.values())):
                ends.add(graph.name)
        return ends


def _check_alert_label(m: Manifest) -> None:
    if m.alert_label not in m.labels:
        raise ValueError(f"alert_label {m.alert_label!r} is not one of labels {m.labels}")


def _check_sources(m: Manifest) -> None:
    """Every input names something that exists before it; outputs named at top level exist."""
    produced: dict[str, str] = {}  # "graph.output" -> over
    for graph in m.graphs:
        for input_name, source in graph.inputs.items():
            _check_source(m, graph, input_name, source, produced)
        _check_last_frame_only(graph)
        for out in graph.outputs:
            produced[f"{graph.name}.{out}"] = graph.over
    for field in ("scores", "frame_scores", "heatmap"):
        ref = getattr(m, field)
        if ref is not None and produced.get(ref) != "window":
            raise ValueError(f"{field}: {ref!r} is not an output of a window graph")
    for ref in m.calibration.collect if m.calibration else []:
        if not (produced.get(ref) == "frame" or _is_runtime(m, ref)):
            raise ValueError(f"calibration.collect: {ref!r} is not a per-frame source")


def _check_last_frame_only(graph: GraphSpec) -> None:
    where = f"graphs[{graph.name}].last_frame_only"
    if graph.last_frame_only and graph.over != "window":
        raise ValueError(f"{where}: only a window graph's inputs can take the window's last frame; "
                         f"{graph.name!r} runs over frames")
    for name in graph.last_frame_only:
        if name not in graph.inputs:
            raise ValueError(f"{where}: {name!r} is not one of its inputs ({', '.join(graph.inputs)})")
        if graph.inputs[name].startswith("state."):
            raise ValueError(f"{where}: {name!r} reads fitted state {graph.inputs[name]!r}, not a per-frame source")


def _is_runtime(m: Manifest, source: str) -> bool:
    return source.startswith("runtime.") and source.removeprefix("runtime.") in m.runtime_features


def _check_source(m: Manifest, graph: GraphSpec, name: str, source: str, produced: dict[str, str]) -> None:
    where = f"graphs[{graph.name}].inputs.{name}"
    if source == "frames" or source.startswith("state.") or _is_runtime(m, source):
        return
    if source.startswith("runtime."):
        declared = ", ".join(sorted(m.runtime_features)) or "(none)"
        raise ValueError(f"{where}: runtime feature {source.removeprefix('runtime.')!r} is not declared under "
                         f"runtime_features (declared: {declared})")
    if source not in produced:
        raise ValueError(f"{where}: {source!r} is not 'frames', 'state.<key>', a declared runtime feature, "
                         f"or an output of an earlier graph")
    if graph.over == "frame" and produced[source] == "window":
        raise ValueError(f"{where}: a frame graph cannot read the window output {source!r}")


RATE_TOLERANCE = 0.1  # relative: 9 fps for a 10 fps model is fine, 5 fps is not


def rate_mismatch(camera: str, camera_fps: float, model: str, manifest: Manifest) -> str | None:
    """A warning when ``camera`` samples at another rate than ``model`` was trained at (``window.fps``).

    Motion read between consecutive samples (frame differences, optical flow) scales with the
    gap between them, so scores at another rate are not the ones the model was measured on.
    """
    trained = manifest.window.fps
    if trained is None or abs(camera_fps - trained) <= RATE_TOLERANCE * trained:
        return None
    return (f"camera {camera} samples at {camera_fps:g} fps but model {model} was trained at {trained:g} fps: "
            f"its scores are not calibrated for this rate; set the camera's fps to {trained:g}")


def rate_warnings(cameras: Iterable[CameraConfig], manifests: Mapping[str, Manifest]) -> list[str]:
    """:func:`rate_mismatch` for every model of every camera whose manifest is in ``manifests``."""
    warnings = []
    for camera in cameras:
        for ref in camera.models:
            if ref.model in manifests:
                warning = rate_mismatch(camera.id, camera.fps, ref.model, manifests[ref.model])
                if warning:
                    warnings.append(warning)
    return warnings


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ModelPackage:
    """A loaded, verified package folder."""

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest
        self._shipped: dict[str, np.ndarray] | None = None

    @property
    def name(self) -> str:
        return self.manifest.name

    def graph_path(self, graph: GraphSpec) -> Path:
        return self.root / graph.file

    def shipped_state(self) -> dict[str, np.ndarray] | None:
        """The fitted arrays the package ships, loaded once and shared (read-only) by every camera:
        a memory bank is megabytes, and a copy per camera was most of a camera's memory."""
        path = self.root / STATE_FILE
        if not path.exists():
            return None
        if self._shipped is None:
            with np.load(path) as data:
                arrays = {key: data[key] for key in data.files}
            for array in arrays.values():
                array.flags.writeable = False
            self._shipped = arrays
        return dict(self._shipped)


def load_package(root: str | Path, verify: bool = True) -> ModelPackage:
    """Read and validate ``root/manifest.json``; with ``verify``, check every graph's sha256."""
    root = Path(root)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ModelPackageError(f"{root}: no {MANIFEST}; is this a model package folder? "
                                f"Build one with 'make models' or 'vidwatch export'.")
    try:
        manifest = Manifest.model_validate(json.loads(manifest_path.read_text()))
    except json.JSONDecodeError as exc:
        raise ModelPackageError(f"{manifest_path}: not valid JSON ({exc})") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ModelPackageError(f"{manifest_path}: {problems}") from exc
    for graph in manifest.graphs:
        path = root / graph.file
        if not path.is_file():
            raise ModelPackageError(f"{root}: graph {graph.name!r} file {graph.file!r} is missing")
        if verify and sha256_file(path) != graph.sha256:
            raise ModelPackageError(f"{path}: sha256 does not match the manifest; the file is corrupt "
                                    f"or was changed without re-packaging")
    return ModelPackage(root, manifest)


def write_manifest(root: Path, manifest: Manifest) -> Path:
    path = root / MANIFEST
    path.write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n")
    return path
