from pathlib import Path

import numpy as np
import pytest

from pipeline.engines import ENGINES, create_engine
from pipeline.errors import EngineError
from pipeline.registry import UnknownNameError


def _trunk(models_dir: Path) -> Path:
    return models_dir / "_trunk" / "trunk-224x224.onnx"


def test_onnxruntime_runs_the_real_trunk(models_dir: Path) -> None:
    engine = create_engine("onnxruntime", _trunk(models_dir), {"intra_op_threads": 1})
    out = engine.run({"frames": np.zeros((2, 224, 224, 3), np.uint8)})
    assert out["c4"].shape == (2, 112, 14, 14)


def test_missing_provider_fails_loudly_instead_of_falling_back(models_dir: Path) -> None:
    with pytest.raises(EngineError, match="did not enable \\['CUDAExecutionProvider'\\]"):
        create_engine("onnxruntime", _trunk(models_dir), {"providers": ["CUDAExecutionProvider"]})


def test_bad_input_is_an_engine_error(models_dir: Path) -> None:
    engine = create_engine("onnxruntime", _trunk(models_dir))
    with pytest.raises(EngineError, match="failed on inputs"):
        engine.run({"frames": np.zeros((1, 224, 224, 3), np.float32)})


def test_unknown_engine_lists_valid_names(models_dir: Path) -> None:
    assert ENGINES.names() == ["onnxruntime", "ort-cuda", "ort-tensorrt", "tensorrt", "torch-cuda"]
    with pytest.raises(UnknownNameError, match="valid: onnxruntime, ort-cuda, ort-tensorrt, tensorrt, torch-cuda"):
        create_engine("openvino", _trunk(models_dir))


def test_tensorrt_engine_matches_onnxruntime(models_dir: Path) -> None:
    pytest.importorskip("tensorrt", reason="TensorRT is not installed on this machine (needs an NVIDIA GPU)")
    frames = np.random.default_rng(0).integers(0, 256, (4, 224, 224, 3), dtype=np.uint8)
    trt_out = create_engine("tensorrt", _trunk(models_dir), {"fp16": False}).run({"frames": frames})
    ort_out = create_engine("onnxruntime", _trunk(models_dir)).run({"frames": frames})
    np.testing.assert_allclose(trt_out["c4"], ort_out["c4"], atol=1e-2)


def test_tensorrt_missing_says_what_to_do(models_dir: Path) -> None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(EngineError, match="pip install tensorrt"):
            create_engine("tensorrt", _trunk(models_dir))
    else:
        pytest.skip("TensorRT is installed here; the missing-package message cannot be shown")
