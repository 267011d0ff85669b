"""The anomaly window graph: motion Gaussian + appearance k-NN per location, exported to ONNX.

It mirrors ``pipeline.calibration.anomaly_maps`` / ``anomaly_window`` (the numpy reference the
tests compare it with). Fitted arrays are graph inputs (``state.*``), not constants, so one
graph serves the shipped state and every camera's live calibration. The appearance memory ``bank``
is ``[h*w, M, C]`` (one per cell) or ``[h, M, C]`` (one per image row, read by every cell of the row:
a row pool stored once, 1/w of the state); the graph tells them apart by the bank's first dimension,
so packages fitted before round 6 (a row memory repeated per cell) score as before.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from models.onnx_export import export_onnx
from pipeline.calibration import FRAME_SCORES

STATE_INPUTS = ("flow_mean", "flow_inv_std", "flow_lower", "bank", "bank_sq", "weights", "scale")
# a motion-only design (appearance weight 0) has no appearance memory and its graph takes no c4
MOTION_STATE_INPUTS = tuple(k for k in STATE_INPUTS if k not in ("bank", "bank_sq"))
OUTPUTS = ("scores", "frame_scores", "heatmap")


def _motion(flow: torch.Tensor, flow_mean: torch.Tensor, flow_inv_std: torch.Tensor,
            flow_lower: torch.Tensor) -> torch.Tensor:
    z = torch.maximum((flow - flow_mean) * flow_inv_std, flow_lower)
    return (z * z).mean(dim=2)  # [N, T, h, w]


def _window_outputs(maps: torch.Tensor, scale: torch.Tensor, frame_score: str,
                    persist: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-frame maps ``[N, T, h, w]`` -> scores, frame_scores, heatmap (``pipeline.calibration.anomaly_window``)."""
    h, w = maps.shape[-2:]
    if persist:  # the next frame's map (the previous one's for the last frame), max-pooled 3x3
        frames = torch.ones_like(maps[0, :, 0, 0], dtype=torch.long).cumsum(0)  # 1..T, traced with T dynamic
        t_last = frames[-1:]
        neighbour = torch.where(frames >= t_last, frames - 2, frames).clamp_min(0)  # a 1-frame window: itself
        padded = nn.functional.pad(maps.index_select(1, neighbour), (1, 1, 1, 1), value=float("-inf"))
        pooled = padded[:, :, :h, :w]  # a 3x3 max as shifted slices: ONNX MaxPool rejects this graph's ranks
        for i, j in ((i, j) for i in range(3) for j in range(3) if i or j):
            pooled = torch.maximum(pooled, padded[:, :, i:i + h, j:j + w])
        maps = torch.minimum(maps, pooled)
    peaks = maps.flatten(2).amax(dim=-1) * scale[0]
    scores = peaks.mean(dim=1, keepdim=True)
    frame_scores = _suffix_means(peaks) if frame_score == "window" else peaks
    return scores, frame_scores, maps.amax(dim=1) * scale[0]


def _suffix_means(peaks: torch.Tensor) -> torch.Tensor:
    """``[N, T]`` -> frame k's mean of peaks k..T-1: its own and the next frames' inside the window (the
    window's first frame reads the window score; a clip's last frames, which start no window, read their own
    and what follows, not the frames before them: README round 11)."""
    sums = peaks.flip(1).cumsum(1).flip(1)
    counts = torch.ones_like(peaks).flip(1).cumsum(1).flip(1)  # T..1, traced with T dynamic
    return sums / counts


class _WindowGraph(nn.Module):
    """What both window graphs are built with: how a frame is scored (``frame_score``) and ``persist``."""

    def __init__(self, frame_score: str = "peak", persist: bool = False) -> None:
        super().__init__()
        if frame_score not in FRAME_SCORES:
            raise ValueError(f"unknown frame_score {frame_score!r}; valid: {', '.join(FRAME_SCORES)}")
        self.frame_score = frame_score
        self.persist = persist


class WindowScorer(_WindowGraph):
    """``c4 [N,T,C,h,w]``, ``flow [N,T,4,h,w]`` + state -> scores, frame_scores, heatmap.

    ``c4`` may hold only the window's last frame, ``[N,1,C,h,w]`` (``appearance_frames="last"``, the input
    declared ``last_frame_only``): its appearance map then adds to each frame's motion map.

    ``frame_score``: ``"peak"`` (each frame's own peak) or ``"window"`` (each frame takes the window
    mean: temporal smoothing), as in ``pipeline.calibration.anomaly_window``. ``persist``: each frame's
    map keeps only what a neighbouring frame shows within one cell (``pipeline.calibration.persist_maps``)."""

    def forward(self, c4: torch.Tensor, flow: torch.Tensor, flow_mean: torch.Tensor, flow_inv_std: torch.Tensor,
                flow_lower: torch.Tensor, bank: torch.Tensor, bank_sq: torch.Tensor, weights: torch.Tensor,
                scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, t, c, h, w = c4.shape
        motion = _motion(flow, flow_mean, flow_inv_std, flow_lower)
        # [B, L/B * NT, C]: the queries of the locations reading each memory (B = h*w: one cell; B = h: a row)
        q = c4.reshape(n * t, c, h * w).permute(2, 0, 1).reshape(bank.shape[0], -1, c)
        d2 = (q * q).sum(-1, keepdim=True) - 2 * torch.bmm(q, bank.transpose(1, 2)) + bank_sq.unsqueeze(1)
        appearance = d2.amin(dim=-1).clamp_min(0).sqrt().reshape(h * w, n * t).permute(1, 0).reshape(n, t, h, w)
        maps = weights[0] * motion + weights[1] * appearance  # c4's T may be 1: broadcast over flow's T
        return _window_outputs(maps, scale, self.frame_score, self.persist)


class MotionWindowScorer(_WindowGraph):
    """The window graph of a motion-only design: ``flow [N,T,4,h,w]`` + motion state -> the same outputs.

    No c4 input and no appearance memory, so its package runs no trunk (``appearance_weight`` 0)."""

    def forward(self, flow: torch.Tensor, flow_mean: torch.Tensor, flow_inv_std: torch.Tensor,
                flow_lower: torch.Tensor, weights: torch.Tensor,
                scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        maps = weights[0] * _motion(flow, flow_mean, flow_inv_std, flow_lower)
        return _window_outputs(maps, scale, self.frame_score, self.persist)


def export_scorer(path: Path, state: dict[str, torch.Tensor] | dict, window_frames: int,
                  channels: int, grid: tuple[int, int], frame_score: str = "peak", persist: bool = False) -> Path:
    """Export the window graph for a ``grid`` of cells; N, T and the bank's shape ``[B, M, C]`` stay dynamic
    (B: ``h*w`` memories per cell or ``h`` per row; M: live calibration on a short clip keeps fewer). A state
    without ``bank`` (motion only) gets :class:`MotionWindowScorer`, inputs ``flow`` and ``MOTION_STATE_INPUTS``."""
    h, w = grid
    flow = torch.zeros(1, window_frames, 4, h, w)
    dynamic = {"c4": {0: "n", 1: "t"}, "flow": {0: "n", 1: "t"}, "bank": {0: "b", 1: "m"}, "bank_sq": {0: "b", 1: "m"},
               "scores": {0: "n"},
               "frame_scores": {0: "n", 1: "t"}, "heatmap": {0: "n"}}
    if "bank" not in state:
        return export_onnx(MotionWindowScorer(frame_score, persist),
                           (flow, *[torch.as_tensor(state[k]) for k in MOTION_STATE_INPUTS]), path,
                           ["flow", *MOTION_STATE_INPUTS], list(OUTPUTS),
                           {k: v for k, v in dynamic.items() if k not in ("c4", "bank", "bank_sq")})
    example = (torch.zeros(1, window_frames, channels, h, w), flow, *[torch.as_tensor(state[k]) for k in STATE_INPUTS])
    return export_onnx(WindowScorer(frame_score, persist), example, path, ["c4", "flow", *STATE_INPUTS],
                       list(OUTPUTS), dynamic)
