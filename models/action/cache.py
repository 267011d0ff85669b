"""Decoded clips on disk: every clip sampled at ``cfg.fps`` and resized to ``cfg.input_size``, the
very frames live capture sends for it, decoded once and reused by every run and fold.

Stored as uint8 ``[F, I, I, 3]`` ``.npy`` files (memory-mapped when read back), keyed by the clip's
path, size and mtime and the decoding settings, so an edited clip or another rate decodes anew.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.action.config import ActionConfig
from models.action.data import Clip
from models.action.video import read_clip

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path("build/cache/action")
CACHE_VERSION = 3  # bump when decoding changes, so stale frames are not reused


def _key(clip: Clip, cfg: ActionConfig) -> str:
    stat = clip.path.stat()
    parts = [str(CACHE_VERSION), str(clip.path.resolve()), str(stat.st_mtime_ns), str(stat.st_size),
             str(cfg.fps), str(cfg.input_size)]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:20]


def cached_frames(clips: list[Clip], cfg: ActionConfig, cache_dir: Path = DEFAULT_CACHE) -> list[np.ndarray]:
    """uint8 ``[F, I, I, 3]`` per clip, read from ``cache_dir`` or decoded and stored there."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for clip in tqdm(clips, desc="decode clips", unit="clip"):
        path = cache_dir / f"frames-{_key(clip, cfg)}.npy"
        if not path.exists():
            frames = read_clip(clip.path, cfg.fps, (cfg.input_size, cfg.input_size))
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, frames)
            tmp.replace(path)  # a killed run must not leave a truncated cache entry
        out.append(np.load(path, mmap_mode="r"))
    return out
