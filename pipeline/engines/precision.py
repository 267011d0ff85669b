"""The accuracy gate at load: a reduced precision (fp16, int8) that lost more than
``MAX_LOSS_POINTS`` of the package's task metric, as recorded by the gate benchmark
(``python -m benchmarks.gpu_bench gate --record``), is refused unless the engine option
``allow_precision_loss: true`` forces it.

The record is ``precision_gate.json`` beside the graph (in the model package), keyed by the graph's
sha256, so a re-exported graph is never covered by an old measurement. A precision with no record
runs with a warning that it is unmeasured: the measurement needs real clips and a GPU, the load
must not.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pipeline.errors import EngineError

logger = logging.getLogger(__name__)

GATE_FILE = "precision_gate.json"
MAX_LOSS_POINTS = 1.0


def graph_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gate_record(path: Path, precision: str) -> dict[str, Any] | None:
    """The recorded gate result of the graph at ``path`` for ``precision``, if any."""
    record = path.parent / GATE_FILE
    if not record.exists():
        return None
    try:
        data = json.loads(record.read_text())
    except (OSError, ValueError) as exc:
        raise EngineError(f"{record}: unreadable accuracy-gate record ({exc}); delete it or re-run "
                          "python -m benchmarks.gpu_bench gate --record") from exc
    entry = data.get(graph_sha256(path), {}).get(precision)
    return entry if isinstance(entry, dict) else None


def check_precision(path: Path, precision: str, allow_loss: bool) -> None:
    """Refuse ``precision`` for the graph at ``path`` if its recorded loss is over the gate."""
    if precision == "fp32":
        return
    entry = gate_record(path, precision)
    if entry is None:
        logger.warning("%s at %s: no accuracy-gate record (%s beside the graph); running it unmeasured "
                       "(python -m benchmarks.gpu_bench gate --record measures it)", path.name, precision, GATE_FILE)
        return
    loss = float(entry.get("loss_points", 0.0))
    if loss > MAX_LOSS_POINTS and not allow_loss:
        raise EngineError(
            f"{path}: {precision} lost {loss:.2f} points of {entry.get('metric', 'the task metric')} against FP32 "
            f"(gate: {MAX_LOSS_POINTS:g}; measured {entry.get('measured', '?')}); run it in fp32, or set "
            "engine.allow_precision_loss: true to accept the loss")
    if loss > MAX_LOSS_POINTS:
        logger.warning("%s at %s: accepting a loss of %.2f points (allow_precision_loss)", path.name, precision, loss)
