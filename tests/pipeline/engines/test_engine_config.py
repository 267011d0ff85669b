"""The engine config union (one model per engine, selected by ``name``), ``auto``, and start-up
refusals of engines this machine cannot run (this test machine has no NVIDIA GPU; where one is
visible, the CPU-only expectations skip)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import parse_config
from pipeline.engines import AutoEngineConfig, OnnxRuntimeConfig, choose_auto, missing, resolve
from pipeline.engines.torch_engine import TorchEngineConfig, nvidia_gpu_visible
from pipeline.errors import ConfigError, EngineError
from tests.conftest import ROOT

BASE = """models: {a: {path: build/models/demo-anomaly}}
cameras: [{id: c, source: x.mp4, models: [{model: a}]}]
"""


def _engine(block: str):  # type: ignore[no-untyped-def]
    return parse_config(BASE + block).engine


def test_each_engine_gets_its_own_model() -> None:
    assert _engine("") == OnnxRuntimeConfig()
    assert _engine("engine: auto") == AutoEngineConfig()
    torch_cfg = _engine("engine: {name: torch-cuda, fp16: true, batch_sizes: [8, 1, 8]}")
    assert isinstance(torch_cfg, TorchEngineConfig) and torch_cfg.batch_sizes == [1, 8] and torch_cfg.fp16
    # a mapping without a name keeps meaning the default engine, as before the union
    assert _engine("engine: {intra_op_threads: 2}") == OnnxRuntimeConfig(intra_op_threads=2)


@pytest.mark.parametrize("block,message", [
    ("engine:\n  name: onnxruntime\n  fp16: true\n",
     "engine.fp16 (line 5): engine 'onnxruntime' does not take this option (its options: providers, intra_op_threads"),
    ("engine: {name: torch-cuda, max_batch: 4}", "engine.max_batch (line 3): engine 'torch-cuda' does not take"),
    ("engine: {name: auto, fp16: true}", "engine 'auto' does not take this option (it takes no options"),
    ("engine: {name: openvino}", "engine (line 3): unknown engine 'openvino'; valid: 'onnxruntime', 'ort-cuda'"),
    ("engine: {name: torch-cuda, batch_sizes: [0, 4]}", "engine.batch_sizes (line 3): must be positive batch sizes"),
    ("engine: {name: tensorrt, int8: maybe}", "engine.int8 (line 3): must be a valid boolean"),
])
def test_option_an_engine_does_not_take_is_rejected_with_its_path(block: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + block)
    assert message in str(err.value)


no_gpu = pytest.mark.skipif(nvidia_gpu_visible(), reason="an NVIDIA GPU is visible: the CPU-only refusals do not apply")


@no_gpu
def test_auto_chooses_onnxruntime_cpu_here_and_says_why() -> None:
    chosen, skipped = choose_auto()
    assert chosen == "onnxruntime"
    assert list(skipped) == ["tensorrt", "ort-tensorrt", "torch-cuda", "ort-cuda"]
    assert "onnxruntime-gpu" in skipped["ort-cuda"] and "no NVIDIA GPU" in skipped["torch-cuda"]
    assert resolve(AutoEngineConfig()) == OnnxRuntimeConfig()


@no_gpu
@pytest.mark.parametrize("name,words", [("torch-cuda", "has no CUDA"), ("tensorrt", "TensorRT"),
                                        ("ort-cuda", "onnxruntime-gpu"), ("ort-tensorrt", "onnxruntime-gpu")])
def test_gpu_engine_fails_at_start_up_naming_what_is_missing(name: str, words: str) -> None:
    config = _engine(f"engine: {{name: {name}}}")
    with pytest.raises(EngineError, match=f"engine '{name}' cannot run on this machine: .*{words}"):
        resolve(config)
    assert words in (missing(name, configured=True) or "")


def _config_file(tmp_path: Path, engine: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"""models: {{a: {{path: {ROOT / 'build/models/demo-anomaly'}}}}}
engine: {engine}
inference: {{endpoint: "tcp://127.0.0.1:1"}}
cameras: [{{id: c, source: {ROOT / 'deploy/samples/people.mp4'}, models: [{{model: a}}]}}]
""")
    return path


@no_gpu
def test_vidwatch_check_says_which_engine_auto_would_choose(tmp_path: Path, models_dir: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "check", str(_config_file(tmp_path, "auto"))],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "engine auto: would choose onnxruntime" in run.stdout
    assert "engine auto: not torch-cuda: no NVIDIA GPU" in run.stdout


@no_gpu
def test_vidwatch_run_with_a_gpu_engine_fails_at_start_up(tmp_path: Path, models_dir: Path) -> None:
    config = _config_file(tmp_path, "{name: torch-cuda, fp16: true}")
    check = subprocess.run([sys.executable, "-m", "pipeline.cli", "check", str(config)],
                           capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert check.returncode == 2 and "engine 'torch-cuda' cannot run on this machine: this torch build" in check.stderr
    run = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", str(config), "--duration", "30"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode != 0
    assert "engine 'torch-cuda' cannot run on this machine: this torch build" in run.stderr
    assert "metrics:" not in run.stdout  # refused before any stage started
