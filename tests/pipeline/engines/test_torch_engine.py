"""torch-cuda's conversion on the CPU (``device: cpu``): every shipped graph converts and matches
ONNX Runtime through the real runner on real clips; unconvertible graphs fall back or fail as
configured; the accuracy gate refuses a recorded loss. (The CUDA parts: test_gpu_engines.py.)"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is not installed (the [models] extra)")
if importlib.util.find_spec("onnx2torch") is None:  # (importing it needs torchvision; the engine stands in)
    pytest.skip("onnx2torch is not installed (the [gpu] extra)", allow_module_level=True)

from pipeline.engines import create_engine  # noqa: E402
from pipeline.engines.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402
from pipeline.engines.precision import GATE_FILE, graph_sha256  # noqa: E402
from pipeline.engines.torch_engine import DeviceConstants, TorchEngine, batch_plan  # noqa: E402
from pipeline.errors import EngineError  # noqa: E402
from pipeline.modelpkg import load_package  # noqa: E402
from pipeline.runner import score_frames  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.support.video import rgb_frames  # noqa: E402

CPU = {"device": "cpu", "fallback": "error"}


def _ped2_frames(shared_data: Path, count: int) -> list[np.ndarray]:
    import cv2

    folder = shared_data / "ucsd_ped2" / "test" / "Test001"
    paths = sorted(folder.glob("*.jpg"))[55:55 + count]  # normal frames, then the first anomalous ones
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]


@pytest.mark.slow
def test_ped2_package_on_torch_matches_onnxruntime_on_real_frames(models_dir: Path, shared_data: Path) -> None:
    """trunk (240x360 uint8 NHWC in) + anomaly scorer (k-NN over the shipped bank), via the runner."""
    package = load_package(models_dir / "ped2-anomaly")
    frames = _ped2_frames(shared_data, 12)
    ort = score_frames(package, frames, batch=6)
    torch_cpu = score_frames(package, frames, batch=6, engine="torch-cuda", engine_options=CPU)
    np.testing.assert_allclose(torch_cpu.window_scores, ort.window_scores, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(torch_cpu.frame_scores, ort.frame_scores, rtol=1e-4, atol=1e-4)
    assert np.ptp(ort.frame_scores) > 0.05  # real frames across the anomaly onset: scores that vary


@pytest.mark.slow
def test_fight_package_on_torch_matches_onnxruntime_on_a_real_clip(models_dir: Path) -> None:
    """motion graph (160x160 uint8 frame deltas in) + temporal head, via the runner."""
    package = load_package(models_dir / "fight")
    frames = list(rgb_frames(ROOT / "deploy" / "samples" / "fight-demo.mp4", 16, (224, 224)))
    ort = score_frames(package, frames, batch=8)
    torch_cpu = score_frames(package, frames, batch=8, engine="torch-cuda", engine_options=CPU)
    np.testing.assert_allclose(torch_cpu.window_scores, ort.window_scores, atol=1e-4)
    assert (torch_cpu.window_scores.argmax(1) == ort.window_scores.argmax(1)).all()


def test_demo_scorer_and_trunk_convert_and_match(models_dir: Path) -> None:
    rng = np.random.default_rng(0)
    trunk = models_dir / "demo-anomaly" / "trunk.onnx"
    frames = {"frames": rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)}
    np.testing.assert_allclose(create_engine("torch-cuda", trunk, CPU).run(frames)["c4"],
                               create_engine("onnxruntime", trunk).run(frames)["c4"], atol=2e-4)
    score = models_dir / "demo-anomaly" / "score.onnx"
    inputs = {"c4": rng.standard_normal((2, 4, 112, 14, 14)).astype(np.float32),
              "mean": rng.standard_normal((112, 14, 14)).astype(np.float32),
              "inv_std": rng.random((112, 14, 14)).astype(np.float32), "scale": np.ones(1, np.float32)}
    got, want = create_engine("torch-cuda", score, CPU).run(inputs), create_engine("onnxruntime", score).run(inputs)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)


def _det_graph(path: Path) -> Path:
    """A graph with an op onnx2torch has no converter for (Det); ONNX Runtime runs it."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Det", ["x"], ["y"])], "det",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_unconvertible_graph_falls_back_to_onnxruntime_cpu_with_the_reason(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    path = _det_graph(tmp_path / "det.onnx")
    with caplog.at_level(logging.WARNING, logger="pipeline.engines.torch_engine"):
        engine = create_engine("torch-cuda", path, {"device": "cpu"})
    assert isinstance(engine, OnnxRuntimeEngine)
    assert "Det" in caplog.text and "ONNX Runtime CPU instead" in caplog.text
    x = np.array([[[2.0, 0.0], [0.0, 3.0]]], np.float32)
    np.testing.assert_allclose(engine.run({"x": x})["y"], [6.0])


def test_unconvertible_graph_fails_with_fallback_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="onnx2torch cannot convert det.onnx: .*Det"):
        create_engine("torch-cuda", _det_graph(tmp_path / "det.onnx"), {"device": "cpu", "fallback": "error"})


def _package_with_gate(models_dir: Path, tmp_path: Path, loss: float) -> Path:
    folder = Path(shutil.copytree(models_dir / "fight", tmp_path / "fight"))
    graph = folder / "motion.onnx"
    record = {graph_sha256(graph): {"fp16": {"loss_points": loss, "metric": "fight clip accuracy",
                                             "measured": "test"}}}
    (folder / GATE_FILE).write_text(json.dumps(record))
    return graph


def test_fp16_refused_when_the_gate_recorded_a_loss_over_one_point(models_dir: Path, tmp_path: Path) -> None:
    graph = _package_with_gate(models_dir, tmp_path, loss=3.0)
    with pytest.raises(EngineError, match="fp16 lost 3.00 points of fight clip accuracy .*allow_precision_loss"):
        create_engine("torch-cuda", graph, {"device": "cpu", "fp16": True})
    assert isinstance(create_engine("torch-cuda", graph, {"device": "cpu", "fp16": True,
                                                          "allow_precision_loss": True}), TorchEngine)
    assert isinstance(create_engine("torch-cuda", graph, {"device": "cpu"}), TorchEngine)  # fp32: no gate


def test_fp16_within_the_gate_or_unmeasured_loads(models_dir: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    graph = _package_with_gate(models_dir, tmp_path, loss=0.5)
    assert isinstance(create_engine("torch-cuda", graph, {"device": "cpu", "fp16": True}), TorchEngine)
    with caplog.at_level(logging.WARNING):
        create_engine("torch-cuda", models_dir / "fight" / "head.onnx", {"device": "cpu", "fp16": True})
    assert "no accuracy-gate record" in caplog.text


def test_bad_option_is_rejected_by_the_engine_model(models_dir: Path) -> None:
    with pytest.raises(EngineError, match="engine 'torch-cuda': bad options \\(providers: Extra inputs"):
        create_engine("torch-cuda", models_dir / "fight" / "head.onnx", {"device": "cpu", "providers": ["x"]})


@pytest.mark.parametrize("sizes", [[1, 8, 16, 32, 64], [4, 8], [16]])
def test_batch_plan_uses_only_captured_sizes_for_any_batch(sizes: list[int]) -> None:
    """Any batch (1..300 frames, above the largest size too) runs as chunks of configured sizes
    covering its rows exactly once, in order: a live worker never meets a shape with no CUDA graph
    (a new shape meant a capture, seconds on the live path, in the first H200 streams run)."""
    for n in range(1, 301):
        plan = batch_plan(n, sizes)
        assert all(size in sizes and 0 < rows <= size for _, rows, size in plan), (n, plan)
        assert [start for start, _, _ in plan] == list(np.cumsum([0] + [rows for _, rows, _ in plan[:-1]]))
        assert sum(rows for _, rows, _ in plan) == n
        assert sum(size - rows for _, rows, size in plan) < sizes[-1]  # padding: less than one largest chunk


def test_torch_engine_on_cpu_passes_the_start_up_check() -> None:
    """``device: cpu`` needs the packages, not a GPU: a live run can use it (the CPU reproduction
    of the GPU worker path); the default ``device: cuda`` still fails here (test_engine_config)."""
    from pipeline.engines import resolve
    from pipeline.engines.torch_engine import TorchEngineConfig

    config = TorchEngineConfig(device="cpu")
    assert resolve(config) is config


def test_device_constants_copy_read_only_state_once_and_writeable_arrays_never() -> None:
    """The anomaly scorer's state (a ~10 MB bank) went to the GPU with every window call; fitted
    state is read-only, so one device copy serves every call while the same array is passed."""
    copies: list[np.ndarray] = []
    constants = DeviceConstants(lambda a: copies.append(a) or ("dev", len(copies)), max_bytes=3 * 400)
    bank = np.ones((10, 10), np.float32)  # 400 bytes
    bank.flags.writeable = False
    assert constants.get(bank) == constants.get(bank) == ("dev", 1)
    assert constants.copies_made == 1
    frames = np.zeros((10, 10), np.float32)  # per-call input: copied by the caller every time
    assert constants.get(frames) is None
    same_values = bank.copy()
    same_values.flags.writeable = False  # another camera's state with equal values is its own copy
    assert constants.get(same_values) == ("dev", 2)
    others = [np.full((10, 10), i, np.float32) for i in range(3)]
    for array in others:
        array.flags.writeable = False
        constants.get(array)
    assert constants.nbytes <= 3 * 400  # least recently used went first
    assert constants.get(others[-1]) == ("dev", 5) and constants.get(bank) == ("dev", 6)


def test_runner_state_reaches_the_engine_as_the_same_read_only_arrays(models_dir: Path, shared_data: Path) -> None:
    """What makes the cache hit on the live path: every window call of a camera passes the same
    read-only state objects (shipped state here; live calibration: test_camera_state)."""
    package = load_package(models_dir / "ped2-anomaly")
    first, second = package.shipped_state(), package.shipped_state()
    assert first is not None and second is not None
    assert all(first[k] is second[k] and not first[k].flags.writeable for k in first)
