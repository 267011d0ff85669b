"""What a person looks at to see why frames scored as they did: per-clip score plots and an error
gallery (the worst false alarms and misses, each frame with its anomaly heat map drawn over it)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)


def plot_clip(path: Path, clip: str, scores: np.ndarray, labels: np.ndarray, threshold: float | None,
              title: str | None = None) -> Path:
    """Score over frames, ground truth shaded, threshold dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 2.6))
    frames = np.arange(len(scores))
    top = max(float(np.nanmax(scores)), threshold or 1.0) * 1.05
    ax.fill_between(frames, 0, labels * top, step="mid", color="tab:red", alpha=0.15, label="ground truth anomalous")
    ax.plot(frames, scores, color="tab:blue", lw=1.2, label="anomaly score")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", lw=0.8, label="threshold")
    ax.set(title=title or clip, xlabel="frame", ylabel="score", xlim=(0, max(len(scores) - 1, 1)), ylim=(0, top))
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def overlay(frame: np.ndarray, heatmap: np.ndarray, vmax: float, caption: str) -> np.ndarray:
    """RGB ``frame`` with ``heatmap`` (cells, score units) upsampled, coloured on 0..vmax and blended,
    the peak cell boxed, ``caption`` on top; returns BGR for ``cv2.imwrite``."""
    h, w = frame.shape[:2]
    norm = np.clip(heatmap / max(vmax, 1e-6), 0, 1)
    colour = cv2.applyColorMap((cv2.resize(norm, (w, h), interpolation=cv2.INTER_NEAREST) * 255).astype(np.uint8),
                               cv2.COLORMAP_JET)
    bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
    alpha = (0.15 + 0.45 * cv2.resize(norm, (w, h), interpolation=cv2.INTER_NEAREST))[..., None]
    out = (bgr * (1 - alpha) + colour * alpha).astype(np.uint8)
    gy, gx = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    cy, cx = h / heatmap.shape[0], w / heatmap.shape[1]
    cv2.rectangle(out, (int(gx * cx), int(gy * cy)), (int((gx + 1) * cx), int((gy + 1) * cy)), (255, 255, 255), 1)
    out = cv2.copyMakeBorder(out, 18, 0, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    cv2.putText(out, caption, (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def error_gallery(out: Path, scores: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray],
                  heatmap: Callable[[str, int], np.ndarray], frame: Callable[[str, int], np.ndarray],
                  threshold: float | Mapping[str, float], count: int = 6) -> dict[str, list[dict[str, object]]]:
    """``count`` highest-scoring normal frames (false alarms) and lowest-scoring anomalous frames
    (misses), one PNG each in ``out`` plus a contact sheet ``gallery.png``; returns what was drawn.
    ``threshold`` is one value or one per clip (cross-validation folds choose their own)."""
    out.mkdir(parents=True, exist_ok=True)
    rows = [(c, i, float(scores[c][i]), int(labels[c][i])) for c in sorted(labels) for i in range(len(labels[c]))]
    normal = sorted((r for r in rows if r[3] == 0), key=lambda r: -r[2])[:count]
    missed = sorted((r for r in rows if r[3] == 1), key=lambda r: r[2])[:count]
    limits = threshold if isinstance(threshold, Mapping) else dict.fromkeys(labels, threshold)
    vmax = max(max(limits.values()), 1e-6) * 2
    drawn: dict[str, list[dict[str, object]]] = {"false_alarms": [], "misses": []}
    tiles: list[list[np.ndarray]] = [[], []]
    for kind, picked, row in (("false_alarms", normal, 0), ("misses", missed, 1)):
        for rank, (clip, i, score, label) in enumerate(picked):
            verdict = "ALARM" if score > limits[clip] else "quiet"
            caption = f"{clip} #{i} {'normal' if label == 0 else 'ANOMALY'} score {score:.2f} {verdict}"
            image = overlay(frame(clip, i), heatmap(clip, i), vmax, caption)
            path = out / f"{kind}-{rank + 1}-{clip}-{i:03d}.png"
            cv2.imwrite(str(path), image)
            tiles[row].append(image)
            drawn[kind].append({"clip": clip, "frame": i, "score": round(score, 4), "file": path.name})
    width = max(len(t) for t in tiles)
    if width:
        blank = np.zeros_like((tiles[0] or tiles[1])[0])
        sheet = np.vstack([np.hstack(t + [blank] * (width - len(t))) for t in tiles])
        cv2.imwrite(str(out / "gallery.png"), sheet)
    logger.info("error gallery: %d false alarms, %d misses in %s", len(normal), len(missed), out)
    return drawn
