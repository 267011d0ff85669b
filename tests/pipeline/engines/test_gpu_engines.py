"""GPU engines on a real GPU (marked ``gpu``): parity with ONNX Runtime CPU on the real trunk and
both shipped models, CUDA-graph replay, execution-provider checks, refusals. Each test skips,
naming what is missing (GPU, CUDA, torch, onnx2torch, onnxruntime-gpu, TensorRT), where its
stack is absent. Packages come from ``$VIDWATCH_GPU_MODELS`` (the GPU check carries a trimmed
set) or build/models."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from pipeline.engines import create_engine, missing, resolve
from pipeline.engines.precision import GATE_FILE, graph_sha256
from pipeline.errors import EngineError
from tests.conftest import MODELS_DIR

pytestmark = pytest.mark.gpu

# exact fp32 for parity (fp16 tests loosen); one CUDA graph size, captured at load, keeps the tests short
CUDA = {"device": "cuda", "fallback": "error", "tf32": False, "batch_sizes": [8]}
TRUNK = "_trunk/trunk-240x360.onnx"  # the shared trunk `make models` builds (ped2-anomaly is motion only)


def _need(engine: str) -> None:
    reason = missing(engine, configured=True)
    if reason:
        pytest.skip(f"{engine}: {reason}")


@pytest.fixture(scope="module")
def gpu_models() -> Path:
    root = Path(os.environ.get("VIDWATCH_GPU_MODELS", MODELS_DIR))
    absent = [p for p in ("fight", "ped2-anomaly") if not (root / p / "manifest.json").exists()]
    absent += [TRUNK] if not (root / TRUNK).exists() else []
    if absent:
        pytest.skip(f"model packages {absent} are not in {root} (make models, or set VIDWATCH_GPU_MODELS)")
    return root


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth images (not white noise): conv features in the range real frames give."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, h // 8 + 1, w // 8 + 1, 3)).astype(np.float32)
    big = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)[:, :h, :w]
    return np.clip(big + rng.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


def _close(got: dict[str, np.ndarray], want: dict[str, np.ndarray], rel: float) -> None:
    for name, ref in want.items():
        scale = max(float(np.abs(ref).max()), 1e-6)
        err = float(np.abs(got[name].astype(np.float32) - ref).max())
        assert err <= rel * scale, f"{name}: max abs diff {err:.3g} > {rel} x {scale:.3g}"


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_torch_cuda_trunk_matches_onnxruntime(gpu_models: Path, fp16: bool) -> None:
    _need("torch-cuda")
    trunk = gpu_models / TRUNK
    x = {"frames": _frames(5, 240, 360)}
    got = create_engine("torch-cuda", trunk, {**CUDA, "fp16": fp16, "allow_precision_loss": True}).run(x)
    _close(got, create_engine("onnxruntime", trunk).run(x), rel=3e-2 if fp16 else 2e-3)


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_torch_cuda_fight_graphs_match_onnxruntime(gpu_models: Path, fp16: bool) -> None:
    _need("torch-cuda")
    opts = {**CUDA, "fp16": fp16, "allow_precision_loss": True}
    motion, head = gpu_models / "fight" / "motion.onnx", gpu_models / "fight" / "head.onnx"
    x = {"delta": _frames(8, 160, 160)}
    feat = create_engine("onnxruntime", motion).run(x)
    _close(create_engine("torch-cuda", motion, opts).run(x), feat, rel=3e-2 if fp16 else 2e-3)
    w = {"feat": feat["feat"][None]}
    got, want = create_engine("torch-cuda", head, opts).run(w), create_engine("onnxruntime", head).run(w)
    np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-2 if fp16 else 1e-4)


def test_torch_cuda_anomaly_scorer_matches_onnxruntime(gpu_models: Path) -> None:
    _need("torch-cuda")
    package = gpu_models / "ped2-anomaly"
    state = dict(np.load(package / "state.npz"))
    window = int(json.loads((package / "manifest.json").read_text())["window"]["frames"])
    rng = np.random.default_rng(1)
    x = {"flow": rng.normal(0, 1, (2, window, 4, 15, 23)).astype(np.float32), **state}
    if "bank" in state:  # a design with an appearance part (rounds 2-9) also reads the trunk's c4
        c4 = create_engine("onnxruntime", gpu_models / TRUNK).run({"frames": _frames(2 * window, 240, 360)})["c4"]
        x["c4"] = c4.reshape(2, window, *c4.shape[1:])
    anomaly = package / "anomaly.onnx"
    _close(create_engine("torch-cuda", anomaly, CUDA).run(x), create_engine("onnxruntime", anomaly).run(x), rel=1e-3)


def test_cuda_graphs_replay_padded_batches_correctly(gpu_models: Path) -> None:
    """Batches padded to the captured sizes; each replay reads the new inputs (no stale buffers)."""
    _need("torch-cuda")
    motion = gpu_models / "fight" / "motion.onnx"
    graphs = create_engine("torch-cuda", motion, {**CUDA, "batch_sizes": [4, 8]})
    eager = create_engine("torch-cuda", motion, {**CUDA, "cuda_graphs": False})
    ort = create_engine("onnxruntime", motion)
    for seed, n in [(0, 3), (1, 3), (2, 8), (3, 1), (4, 11)]:
        x = {"delta": _frames(n, 160, 160, seed)}
        got = graphs.run(x)
        assert got["feat"].shape == (n, 1280)
        _close(got, eager.run(x), rel=1e-3)
        _close(got, ort.run(x), rel=2e-3)
    assert graphs.captured_sizes() == [4, 8]  # type: ignore[attr-defined]  (11 = 8 + 3 padded to 4)


def test_cuda_graphs_are_captured_at_load_and_never_on_the_live_path(gpu_models: Path) -> None:
    """Every configured batch size is captured when the engine loads; no batch size afterwards, not
    even one above the largest, captures again (captures stalled the first live GPU run for seconds)."""
    _need("torch-cuda")
    trunk = gpu_models / TRUNK
    engine = create_engine("torch-cuda", trunk, {**CUDA, "batch_sizes": [1, 4, 8]})
    assert [size for size, _ in engine.captures] == [1, 4, 8]  # type: ignore[attr-defined]
    ort = create_engine("onnxruntime", trunk)
    for seed, n in enumerate([1, 3, 8, 2, 9, 20, 5]):
        x = {"frames": _frames(n, 240, 360, seed)}
        got = engine.run(x)
        assert got["c4"].shape[0] == n
        _close(got, ort.run(x), rel=2e-3)
    assert len(engine.captures) == 3, engine.captures  # type: ignore[attr-defined]


def test_fp16_refused_on_gpu_when_the_gate_recorded_a_loss(gpu_models: Path, tmp_path: Path) -> None:
    _need("torch-cuda")
    folder = Path(shutil.copytree(gpu_models / "fight", tmp_path / "fight"))
    graph = folder / "head.onnx"
    (folder / GATE_FILE).write_text(json.dumps({graph_sha256(graph): {"fp16": {"loss_points": 2.5}}}))
    with pytest.raises(EngineError, match="fp16 lost 2.50 points"):
        create_engine("torch-cuda", graph, {**CUDA, "fp16": True})


def test_auto_picks_a_gpu_engine_here() -> None:
    _need("torch-cuda")
    from pipeline.engines import AutoEngineConfig

    assert resolve(AutoEngineConfig()).name != "onnxruntime"  # type: ignore[attr-defined]


@pytest.mark.parametrize("name,provider", [("ort-cuda", "CUDAExecutionProvider"),
                                           ("ort-tensorrt", "TensorrtExecutionProvider")])
def test_ort_gpu_providers_are_enabled_and_match_cpu(gpu_models: Path, name: str, provider: str,
                                                     tmp_path: Path) -> None:
    _need(name)
    trunk = gpu_models / TRUNK
    options = {"engine_cache_dir": str(tmp_path)} if name == "ort-tensorrt" else {}
    engine = create_engine(name, trunk, options)
    assert engine.providers[0] == provider  # type: ignore[attr-defined]  (hard-checked at creation too)
    x = {"frames": _frames(2, 240, 360)}
    _close(engine.run(x), create_engine("onnxruntime", trunk).run(x), rel=2e-3)


def test_tensorrt_matches_onnxruntime(gpu_models: Path, tmp_path: Path) -> None:
    _need("tensorrt")
    trunk = gpu_models / TRUNK
    x = {"frames": _frames(4, 240, 360)}
    got = create_engine("tensorrt", trunk, {"fp16": False, "cache_dir": str(tmp_path)}).run(x)
    _close(got, create_engine("onnxruntime", trunk).run(x), rel=2e-3)
    assert list(tmp_path.glob("*.plan"))  # cached, keyed by sha256 + GPU + TensorRT version
