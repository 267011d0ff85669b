"""Errors raised while reading action-recognition data; each says what to do about it.

    VidwatchError
    └── ActionDataError
        ├── EmptyDatasetError    a data folder without class folders or without clips
        ├── VideoReadError       a clip OpenCV cannot open or decode
        └── LabelMismatchError   class folders that do not match the model's labels
"""

from __future__ import annotations

from pipeline.errors import VidwatchError


class ActionDataError(VidwatchError):
    """Action-recognition data is unusable; the message names the path."""


class EmptyDatasetError(ActionDataError):
    """No clips where some were expected."""


class VideoReadError(ActionDataError):
    """A clip could not be decoded."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(f"{path}: cannot read video ({reason}); re-encode it as H.264 mp4 "
                         f"(ffmpeg -i IN -c:v libx264 OUT.mp4) or remove it from the data folder")


class LabelMismatchError(ActionDataError):
    """The data's class folders are not the labels the model was trained with."""

    def __init__(self, root: str, found: list[str], expected: list[str]) -> None:
        self.found = found
        self.expected = expected
        super().__init__(f"{root}: class folders {found} do not match the model labels {expected}; "
                         f"rename the folders or train a model on these labels")
