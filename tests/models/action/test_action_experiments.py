"""Cross-validation bookkeeping: runs of separate folds add up to one result."""

from __future__ import annotations

import pytest

from models.action.experiments import merge_folds


def _row(fold: int, acc: float) -> dict[str, float]:
    return {"fold": fold, "accuracy": acc, "precision": acc, "recall": acc, "f1": acc, "auc": acc}


def test_separate_fold_runs_merge_into_one_summary() -> None:
    first = {"folds": [_row(0, 0.8), _row(3, 0.6)], "summary": {}, "seconds": 10.0}
    rest = {"folds": [_row(4, 1.0), _row(1, 0.9), _row(2, 0.7)], "summary": {}, "seconds": 20.0}
    merged = merge_folds(first, rest)
    assert [r["fold"] for r in merged["folds"]] == [0, 1, 2, 3, 4]
    assert merged["summary"]["accuracy"]["mean"] == pytest.approx(0.8)
    assert merged["summary"]["accuracy"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert merged["seconds"] == 30.0


def test_a_rerun_fold_replaces_the_old_one() -> None:
    old = {"folds": [_row(0, 0.5), _row(1, 0.5)], "summary": {}, "seconds": 5.0}
    merged = merge_folds(old, {"folds": [_row(1, 0.9)], "summary": {}, "seconds": 1.0})
    assert [r["accuracy"] for r in merged["folds"]] == [0.5, 0.9]
    assert merge_folds(None, old) is old
