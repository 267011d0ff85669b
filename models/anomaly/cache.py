"""Per-clip feature cache for comparing anomaly variants cheaply: ``trunk.c4`` and flow cell stats.

Features are computed by the runtime's own pieces (the trunk graph through a pipeline engine,
``pipeline.features.flow``), once per clip and per feature spec, and stored as ``.npy`` under a
cache folder (``runs/anomaly-cache`` by default; git ignores ``runs/``). Several flow specs that
differ only in how cells are summarized share one DIS pass per clip. A cache entry is keyed by
the clip's path, its frame count and the spec, so a changed clip or spec is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from models.anomaly.footage import read_clip
from pipeline.engines import create_engine
from pipeline.features.flow import FlowCells

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path("runs/anomaly-cache")


def spec_key(spec: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


class FeatureCache:
    """``c4(clip)`` and ``flow(clip, spec)`` arrays ``[F, ...]``, computed once and kept on disk."""

    def __init__(self, root: Path, trunk: Path, height: int = 240, width: int = 360, fps: float = 10.0,
                 threads: int = 1) -> None:
        self.root, self.trunk = Path(root), Path(trunk)
        self.height, self.width, self.fps, self.threads = height, width, fps, threads
        self._engine = None

    def _path(self, clip: Path, what: str) -> Path:
        clip_id = hashlib.sha1(str(Path(clip).resolve()).encode()).hexdigest()[:8]
        return self.root / what / f"{Path(clip).name}-{clip_id}.npy"

    def frames(self, clip: Path) -> list[np.ndarray]:
        return list(read_clip(clip, self.height, self.width, self.fps))

    def c4(self, clip: Path) -> np.ndarray:
        trunk_id = hashlib.sha1(self.trunk.read_bytes()).hexdigest()[:12]
        path = self._path(clip, f"c4-{trunk_id}")
        if path.exists():
            return np.load(path)
        if self._engine is None:
            self._engine = create_engine("onnxruntime", self.trunk, {"intra_op_threads": self.threads})
        frames = self.frames(clip)
        parts = [self._engine.run({"frames": np.stack(frames[i:i + 16])})["c4"] for i in range(0, len(frames), 16)]
        return self._save(path, np.concatenate(parts).astype(np.float16))

    def flow(self, clip: Path, spec: dict[str, Any]) -> np.ndarray:
        return self.flows(clip, [spec])[0]

    def flows(self, clip: Path, specs: list[dict[str, Any]]) -> list[np.ndarray]:
        """Flow cell stats of ``clip`` for each spec, as the runtime feature returns them per frame (a
        first frame of zeros: ``first`` is applied by the caller); specs sharing ``preset``, ``scale`` and
        the far-field band (``far_rows``, ``far_preset``) share one DIS pass."""
        specs = [{k: v for k, v in s.items() if k != "first"} for s in specs]
        paths = [self._path(clip, f"flow-{spec_key(s)}") for s in specs]
        missing = [i for i, p in enumerate(paths) if not p.exists()]

        def dis(spec: dict[str, Any]) -> tuple[int, str, float, int, str]:
            return (int(spec.get("cell", 16)), str(spec.get("preset", "medium")), float(spec.get("scale", 1.0)),
                    int(spec.get("far_rows", 0)), str(spec.get("far_preset", "medium")))

        for key in sorted({dis(specs[i]) for i in missing}):
            todo = [i for i in missing if dis(specs[i]) == key]
            cell, preset, scale, far_rows, far_preset = key
            flow = FlowCells(self.height, self.width, cell, preset=preset, scale=scale, far_rows=far_rows,
                             far_preset=far_preset)
            stats: list[list[np.ndarray]] = [[] for _ in todo]
            for frame in self.frames(clip):
                fields = flow.fields(frame)
                for out, i in zip(stats, todo, strict=True):
                    s = specs[i]
                    out.append(flow.stats(fields, float(s.get("moving_px", 1.0)), float(s.get("quantile", 0.9))))
            for out, i in zip(stats, todo, strict=True):
                self._save(paths[i], np.stack(out))
            logger.info("flow of %s: %d specs", clip, len(todo))
        return [np.load(p) for p in paths]

    @staticmethod
    def _save(path: Path, array: np.ndarray) -> np.ndarray:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, array)
        tmp.replace(path)
        return array
