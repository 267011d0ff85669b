"""Classification figures for the alert label (the positive class) and the plots of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score


def classification_metrics(probs: np.ndarray, labels: np.ndarray, names: tuple[str, ...] | list[str],
                           positive: int, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, P/R/F1 of ``positive`` at ``threshold``, per-class P/R/F1, ROC AUC, confusion."""
    pred = np.where(probs[:, positive] >= threshold, positive, 1 - positive) if len(names) == 2 \
        else probs.argmax(1)
    k = list(range(len(names)))
    p, r, f, support = precision_recall_fscore_support(labels, pred, labels=k, zero_division=0)
    both = len(np.unique(labels)) > 1
    return {
        "n": int(len(labels)),
        "accuracy": float((pred == labels).mean()),
        "precision": float(p[positive]), "recall": float(r[positive]), "f1": float(f[positive]),
        "auc": float(roc_auc_score(labels == positive, probs[:, positive])) if both else float("nan"),
        "per_class": {n: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                          "support": int(support[i])} for i, n in enumerate(names)},
        "confusion": confusion_matrix(labels, pred, labels=k).tolist(),
        "threshold": threshold,
    }


def mean_std(rows: list[dict[str, Any]], keys: tuple[str, ...] = ("accuracy", "precision", "recall", "f1", "auc")
             ) -> dict[str, dict[str, float]]:
    return {k: {"mean": float(np.mean([r[k] for r in rows])), "std": float(np.std([r[k] for r in rows]))}
            for k in keys}


def plot_confusion(confusion: list[list[int]], names: list[str] | tuple[str, ...], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.5, 3.2))
    ax.imshow(confusion, cmap="Blues")
    for i, row in enumerate(confusion):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(history: list[dict[str, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = np.arange(len(history))
    for key in ("train_loss", "val_loss", "val_acc"):
        ys = [h.get(key, np.nan) for h in history]
        if not np.all(np.isnan(ys)):
            ax.plot(steps, ys, label=key)
    for i in range(1, len(history)):
        if history[i]["stage"] != history[i - 1]["stage"]:
            ax.axvline(i - 0.5, color="grey", linestyle=":", label="stage 2")
    ax.set_xlabel("epoch (both stages)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
