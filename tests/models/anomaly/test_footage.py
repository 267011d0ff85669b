"""Finding and reading normal footage: frame folders and videos, searched recursively."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from models.anomaly.footage import FootageError, find_clips, read_clip


@pytest.fixture(scope="module")
def mixed(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A camera folder with one short JPEG clip and one MP4, at different depths."""
    root = tmp_path_factory.mktemp("footage")
    frames = root / "day1" / "clipA"
    frames.mkdir(parents=True)
    for path in sorted((shared_data / "ucsd_ped2" / "train" / "Train001").glob("*.jpg"))[:5]:
        (frames / path.name).symlink_to(path)
    video = sorted((shared_data / "fight" / "train" / "nofight").glob("*.mp4"))[0]
    (root / "b.mp4").symlink_to(video)
    return root


def test_finds_frame_folders_and_videos_recursively(mixed: Path) -> None:
    assert find_clips(mixed) == [mixed / "b.mp4", mixed / "day1" / "clipA"]


def test_reads_frames_resized_rgb(mixed: Path) -> None:
    frames = list(read_clip(mixed / "day1" / "clipA", 120, 180))
    assert len(frames) == 5 and frames[0].shape == (120, 180, 3) and frames[0].dtype.name == "uint8"


def test_video_is_subsampled_to_the_model_rate(mixed: Path) -> None:
    capture = cv2.VideoCapture(str(mixed / "b.mp4"))
    count, fps = capture.get(cv2.CAP_PROP_FRAME_COUNT), capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    frames = list(read_clip(mixed / "b.mp4", 240, 360, fps=10.0))
    expected = count * min(1.0, 10.0 / fps)
    assert abs(len(frames) - expected) <= 1.5


def test_a_file_instead_of_a_folder_is_a_clear_error(mixed: Path) -> None:
    with pytest.raises(FootageError, match="is not a folder"):
        find_clips(mixed / "b.mp4")
