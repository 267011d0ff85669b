from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from models.action.data import list_clips, read_split, stratified_folds, stratified_split, write_split
from models.action.errors import EmptyDatasetError, LabelMismatchError, VideoReadError
from models.action.video import loop_pad, read_clip
from pipeline.errors import VidwatchError

LABELS = ("nofight", "fight")


def test_empty_folder_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(EmptyDatasetError, match="one folder per label"):
        list_clips(tmp_path, LABELS)


def test_class_folder_without_clips(tmp_path: Path) -> None:
    (tmp_path / "fight").mkdir()
    (tmp_path / "nofight").mkdir()
    with pytest.raises(EmptyDatasetError, match="no clips"):
        list_clips(tmp_path, LABELS)


def test_label_mismatch(tmp_path: Path) -> None:
    (tmp_path / "fight").mkdir()
    (tmp_path / "walking").mkdir()
    with pytest.raises(LabelMismatchError) as info:
        list_clips(tmp_path, LABELS)
    assert isinstance(info.value, VidwatchError)
    assert info.value.found == ["fight", "walking"]
    assert "rename the folders" in str(info.value)


def test_unreadable_video(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(VideoReadError, match="broken.mp4.*re-encode"):
        read_clip(bad, 5.0, (64, 64))


def test_real_clip_is_sampled_by_time(fight_data: Path) -> None:
    clip = sorted((fight_data / "fight").glob("*.mp4"))[0]
    cap = cv2.VideoCapture(str(clip))
    seconds = cap.get(cv2.CAP_PROP_FRAME_COUNT) / cap.get(cv2.CAP_PROP_FPS)
    frames = read_clip(clip, 5.0, (64, 48))
    assert frames.shape[1:] == (48, 64, 3) and frames.dtype == np.uint8
    assert abs(len(frames) - seconds * 5) <= 1


def test_jpeg_folder_clip(fight_data: Path, tmp_path: Path) -> None:
    frames = read_clip(sorted((fight_data / "fight").glob("*.mp4"))[0], 10.0, (64, 48))
    folder = tmp_path / "fight" / "clip0"
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (folder / "fps.txt").write_text("10")
    assert len(read_clip(folder, 5.0, (64, 48))) == -(-len(frames) // 2)
    (tmp_path / "nofight").mkdir()
    with pytest.raises(EmptyDatasetError):
        list_clips(tmp_path, LABELS)  # nofight has no clip


def test_split_is_stratified_seeded_and_round_trips(tiny_data: Path, tmp_path: Path) -> None:
    clips = list_clips(tiny_data, LABELS)
    labels = [c.label for c in clips]
    split = stratified_split(labels, 0.34, 0.34, seed=3)
    assert split == stratified_split(labels, 0.34, 0.34, seed=3)
    assert sorted(sum(split.values(), [])) == list(range(len(clips)))
    for part in split.values():
        assert sorted(labels[i] for i in part) == [0, 1]
    assert read_split(write_split(tmp_path / "split.json", clips, split), clips) == split
    folds = stratified_folds(labels, 3, seed=0)
    assert sorted(sum(folds, [])) == list(range(len(clips)))


def test_loop_pad() -> None:
    assert loop_pad(np.arange(3), 7).tolist() == [0, 1, 2, 0, 1, 2, 0]
