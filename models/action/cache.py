"""Per-frame ``c4`` features of every clip, computed once by the shared trunk graph and kept on disk.

The trunk is frozen, so fine-tuning only ever needs its output. Each clip is stored as
``[V, F, 112, h, w]`` float16: view 0 is the clean clip (whole frame resized, as live), views
1..V-1 are clip-consistent augmentations. Frames are sampled at ``cfg.cache_fps`` so training can
pick a sampling phase (temporal jitter) and still step at ``cfg.fps``. Features come from the very
ONNX trunk the package ships, run by ONNX Runtime, so training sees what the runtime computes.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from models.action.augment import ClipAugment, resize_frames
from models.action.config import ActionConfig
from models.action.data import Clip
from models.action.video import read_clip
from models.onnx_export import ort_session
from models.trunk import build_trunk
from pipeline.modelpkg import sha256_file

logger = logging.getLogger(__name__)

DEFAULT_CACHE = Path("build/cache/action")
CACHE_VERSION = 2  # bump when decoding or augmentation changes, so stale features are not reused
TRUNK_BATCH = 16


def trunk_file(cache_dir: Path, size: int) -> Path:
    """The trunk ONNX for ``size``, exported once into the cache folder."""
    path = cache_dir / f"trunk_{size}x{size}.onnx"
    if not path.exists():
        build_trunk(path, size, size)
    return path


def clip_views(clip: Clip, cfg: ActionConfig) -> np.ndarray:
    """uint8 ``[V, F, size, size, 3]``: the clean clip, then ``cfg.aug_views`` augmented copies."""
    native = read_clip(clip.path, cfg.cache_fps, None)
    # seeded by the clip's name, so a clip gets the same views whatever the order of the folder
    rng = np.random.default_rng([cfg.seed, zlib.crc32(clip.name.encode())])
    views = [resize_frames(native, cfg.size)]
    views += [ClipAugment.draw(rng).apply(native, cfg.size) for _ in range(cfg.aug_views)]
    return np.stack(views)


def _key(clip: Clip, cfg: ActionConfig, trunk_sha: str) -> str:
    stat = clip.path.stat()
    parts = [str(CACHE_VERSION), str(clip.path.resolve()), str(stat.st_mtime_ns), str(stat.st_size), trunk_sha,
             str(cfg.seed), str(cfg.cache_fps), str(cfg.size), str(cfg.aug_views)]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:20]


def run_trunk(session: object, frames: np.ndarray) -> np.ndarray:
    """uint8 NHWC frames -> c4 float16, in batches of ``TRUNK_BATCH``."""
    out = [session.run(["c4"], {"frames": frames[i:i + TRUNK_BATCH]})[0]  # type: ignore[attr-defined]
           for i in range(0, len(frames), TRUNK_BATCH)]
    return np.concatenate(out).astype(np.float16)


def cache_features(clips: list[Clip], cfg: ActionConfig, cache_dir: Path = DEFAULT_CACHE) -> list[np.ndarray]:
    """``[V, F, 112, h, w]`` float16 per clip, read from ``cache_dir`` or computed and stored there."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    trunk = trunk_file(cache_dir, cfg.size)
    trunk_sha = sha256_file(trunk)
    session = None
    feats = []
    for clip in tqdm(clips, desc="c4 features", unit="clip"):
        path = cache_dir / f"{_key(clip, cfg, trunk_sha)}.npy"
        if not path.exists():
            session = session or ort_session(trunk)
            views = clip_views(clip, cfg)
            c4 = run_trunk(session, views.reshape(-1, *views.shape[2:]))
            np.save(path, c4.reshape(*views.shape[:2], *c4.shape[1:]))
        feats.append(np.load(path, mmap_mode="r"))
    return feats
