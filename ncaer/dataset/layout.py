"""Names the dataset layouts share: the splits and the folder names that mean them, CAER's
classes, and the file extensions taken for videos and images."""

from __future__ import annotations

CAER_CLASSES = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".mkv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def canonical_split(name: str) -> str | None:
    """train, val or test for a folder or CSV split name (any case, common aliases); None if it is none."""
    return SPLIT_ALIASES.get(name.strip().lower())
