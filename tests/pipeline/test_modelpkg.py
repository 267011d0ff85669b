import json
import shutil
from pathlib import Path

import pytest

from pipeline.errors import ModelPackageError
from pipeline.modelpkg import load_package
from tests.pipeline.package_helpers import motion_package


def test_demo_package_loads_and_verifies(demo_package_path: Path) -> None:
    pkg = load_package(demo_package_path)
    m = pkg.manifest
    assert m.task == "anomaly" and m.alert_label in m.labels
    assert [g.over for g in m.graphs] == ["frame", "window"]
    assert m.calibration is not None and m.calibration.fit == "window_gaussian"


def test_corrupt_graph_is_detected(demo_package_path: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(demo_package_path, tmp_path / "pkg")
    with (copy / "score.onnx").open("ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(ModelPackageError, match="sha256 does not match"):
        load_package(copy)


def test_missing_manifest_and_bad_references(demo_package_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelPackageError, match="no manifest.json"):
        load_package(tmp_path)
    copy = shutil.copytree(demo_package_path, tmp_path / "pkg")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["graphs"][1]["inputs"]["c4"] = "trunk.nothing"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError, match="trunk.nothing"):
        load_package(copy)
    manifest["graphs"][1]["inputs"]["c4"] = "trunk.c4"
    manifest["alert_label"] = "fire"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelPackageError, match="alert_label 'fire'"):
        load_package(copy)


def test_frame_graph_reading_an_undeclared_runtime_feature_is_rejected(tmp_path: Path) -> None:
    load_package(motion_package(tmp_path / "ok"))  # frame graphs may read declared runtime features
    with pytest.raises(ModelPackageError, match=r"graphs\[motion\]\.inputs\.x: runtime feature 'flow' is not "
                                                r"declared under runtime_features \(declared: delta\)"):
        load_package(motion_package(tmp_path / "bad", reads="runtime.flow"))


def test_rate_mismatch_names_camera_model_and_fix(demo_package_path: Path) -> None:
    from pipeline.modelpkg import WindowSpec, rate_mismatch

    m = load_package(demo_package_path).manifest
    at_10 = m.model_copy(update={"window": WindowSpec(frames=8, stride=2, fps=10.0)})
    assert rate_mismatch("yard", 10.0, "fight", at_10) is None
    assert rate_mismatch("yard", 9.5, "fight", at_10) is None  # within tolerance
    warning = rate_mismatch("yard", 5.0, "fight", at_10)
    assert warning is not None and "yard" in warning and "fight" in warning and "set the camera's fps to 10" in warning
    unknown = m.model_copy(update={"window": WindowSpec(frames=8, stride=2, fps=None)})
    assert rate_mismatch("yard", 5.0, "fight", unknown) is None  # a package that states no rate


def test_last_frame_only_inputs_are_checked_and_name_the_frame_graphs_run_on_window_ends(
        demo_package_path: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(demo_package_path, tmp_path / "pkg")
    manifest = json.loads((copy / "manifest.json").read_text())
    assert load_package(copy).manifest.window_end_graphs() == set()  # the score graph reads every frame's c4

    def with_last(graph: int, names: list[str]) -> None:
        edited = json.loads(json.dumps(manifest))
        edited["graphs"][graph]["last_frame_only"] = names
        (copy / "manifest.json").write_text(json.dumps(edited))

    with_last(1, ["c4"])
    assert load_package(copy).manifest.window_end_graphs() == {"trunk"}
    with_last(0, ["frames"])
    with pytest.raises(ModelPackageError, match=r"graphs\[trunk\]\.last_frame_only: only a window graph's inputs"):
        load_package(copy)
    with_last(1, ["c5"])
    with pytest.raises(ModelPackageError, match=r"'c5' is not one of its inputs \(c4, mean, inv_std, scale\)"):
        load_package(copy)
    with_last(1, ["mean"])
    with pytest.raises(ModelPackageError, match="'mean' reads fitted state 'state.mean', not a per-frame source"):
        load_package(copy)
