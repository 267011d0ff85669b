"""Write model package folders (graphs + manifest.json + optional state.npz)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.modelpkg import STATE_FILE, GraphSpec, Manifest, load_package, sha256_file, write_manifest


@dataclass(frozen=True)
class GraphFile:
    """A graph to put in a package: where its ONNX file is now and how it chains."""

    name: str
    source: Path
    over: str
    inputs: dict[str, str]
    outputs: list[str]
    last_frame_only: tuple[str, ...] = ()  # window-graph inputs fed only the window's last frame


def write_package(out: Path, graphs: list[GraphFile], state: dict[str, np.ndarray] | None = None,
                  **manifest_fields: Any) -> Path:
    """Copy graphs into ``out``, hash them, validate and write the manifest; return ``out``.

    ``manifest_fields`` are the remaining :class:`pipeline.modelpkg.Manifest` fields (name,
    version, task, input, window, labels, alert_label, scores, ...).
    """
    out.mkdir(parents=True, exist_ok=True)
    specs = []
    for graph in graphs:
        target = out / f"{graph.name}.onnx"
        if graph.source.resolve() != target.resolve():
            shutil.copyfile(graph.source, target)
        specs.append(GraphSpec(name=graph.name, file=target.name, sha256=sha256_file(target),
                               over=graph.over, inputs=graph.inputs, outputs=graph.outputs,  # type: ignore[arg-type]
                               last_frame_only=list(graph.last_frame_only)))
    manifest = Manifest.model_validate({**manifest_fields, "graphs": [s.model_dump() for s in specs]})
    if state is not None:
        np.savez(out / STATE_FILE, **state)
    write_manifest(out, manifest)
    # a refit into the same folder may drop a graph (a motion-only anomaly design has no trunk): no stale copy
    for stale in set(out.glob("*.onnx")) - {out / s.file for s in specs}:
        stale.unlink()
    load_package(out)  # what we wrote must load
    return out
