"""Export torch modules to ONNX and check them against torch on the same inputs."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

OPSET = 18


def export_onnx(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: Path,
    input_names: list[str],
    output_names: list[str],
    dynamic_axes: dict[str, dict[int, str]],
) -> Path:
    """Export ``module`` in eval mode to ``path`` (one self-contained file, weights inside)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example_inputs,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def ort_session(path: Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity(
    module: nn.Module, path: Path, inputs: dict[str, np.ndarray], output_names: list[str]
) -> dict[str, float]:
    """Max abs difference per output between torch and ONNX Runtime on the same inputs."""
    session = ort_session(path)
    ort_out = session.run(output_names, inputs)
    with torch.no_grad():
        torch_out = module.eval()(*[torch.from_numpy(v) for v in inputs.values()])
    if isinstance(torch_out, torch.Tensor):
        torch_out = (torch_out,)
    return {
        name: float(np.abs(np.asarray(o) - t.numpy()).max())
        for name, o, t in zip(output_names, ort_out, torch_out, strict=True)
    }


def quantize_static_int8(src: Path, out: Path, input_name: str, samples: np.ndarray, batch: int = 8) -> Path:
    """Static INT8 graph with ONNX Runtime: per-channel int8 weights, uint8 activations, MinMax
    ranges from ``samples`` (real inputs of the graph's one input ``input_name``).

    QOperator format: with constant padding (``freeze_same_padding``) ORT fuses the quantized
    convolutions; QDQ gained little on these CPUs.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{input_name: samples[i:i + batch]} for i in range(0, len(samples), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    out.parent.mkdir(parents=True, exist_ok=True)
    quantize_static(str(src), str(out), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8)
    return out
