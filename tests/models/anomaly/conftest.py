"""Small real Ped2 sets for the anomaly tests: labelled test-clip cuts around the anomaly onset."""

from __future__ import annotations

from pathlib import Path

import pytest

# clip -> first frame of a 16-frame cut that holds normal and anomalous frames (0-based onsets 60, 94, 30)
CUTS = {"Test001": 52, "Test002": 86, "Test004": 22}
CUT_FRAMES = 16


@pytest.fixture(scope="session")
def labelled_cuts(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(data, labels.csv)``: 3 clips of 16 real frames each, labels taken from the shared labels.csv."""
    from models.anomaly.evaluate import read_labels

    ped2 = shared_data / "ucsd_ped2" / "test"
    labels = read_labels(ped2 / "labels.csv")
    root = tmp_path_factory.mktemp("labelled")
    rows = ["clip,frame,label"]
    for clip, start in CUTS.items():
        (root / clip).mkdir()
        for i, frame in enumerate(sorted((ped2 / clip).glob("*.jpg"))[start:start + CUT_FRAMES]):
            (root / clip / f"{i:03d}.jpg").symlink_to(frame)
            rows.append(f"{clip},{i},{labels[clip][start + i]}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root, root / "labels.csv"


@pytest.fixture(scope="session")
def trunk_240(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 240x360 trunk graph the Ped2 packages read."""
    from models.trunk import build_trunk

    return build_trunk(tmp_path_factory.mktemp("trunk") / "trunk.onnx", 240, 360)
