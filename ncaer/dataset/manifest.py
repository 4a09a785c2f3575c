"""The manifest: one row per sample, the same columns in parquet and CSV.

docs/dataset.md describes each column; `COLUMNS` is the single source of the
names, order and types.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ncaer.atomic import replace_with

COLUMNS: dict[str, str] = {
    "sample_id": "string",  # {split}/{label}/{clip}_{segment}
    "split": "string",
    "label": "string",
    "label_id": "int64",
    "video_id": "string",  # source video: its corpus-relative path without extension
    "group": "string",  # split unit (video_id unless --group-by / a CSV group column)
    "source_path": "string",  # corpus-relative path of the video file
    "source_fingerprint": "string",  # content hash of the video file (size + first/last 64 KiB)
    "segment": "int64",
    "n_segments": "int64",
    "frame_index": "int64",  # position in the decoder's presentation-order output, from 0
    "timestamp_s": "float64",
    "n_frames": "int64",
    "fps": "float64",
    "width": "int64",
    "height": "int64",
    "face_x1": "Int64",  # face box in pixels, x2/y2 exclusive; empty when no face
    "face_y1": "Int64",
    "face_x2": "Int64",
    "face_y2": "Int64",
    "face_score": "float64",
    "n_faces": "int64",  # faces the detector saw in this frame
    "has_face": "bool",
    "detector": "string",
    "decoder": "string",
    "image_path": "string",  # paths relative to the build folder
    "crop_path": "string",
    "face_path": "string",  # empty when no face
    "context_path": "string",
}
FILE_COLUMNS = ("image_path", "crop_path", "face_path", "context_path")  # the files a sample is made of


def to_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows -> a manifest DataFrame with the schema's columns and types, sorted by sample_id."""
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df = df.astype(COLUMNS)
    return df.sort_values("sample_id", kind="stable").reset_index(drop=True)


def write_manifest(df: pd.DataFrame, out: str | Path) -> None:
    out = Path(out)
    replace_with(out / "manifest.parquet", lambda p: df.to_parquet(p, index=False))
    replace_with(out / "manifest.csv", lambda p: df.to_csv(p, index=False))


def read_manifest(build_dir: str | Path) -> pd.DataFrame:
    path = Path(build_dir) / "manifest.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not an `ncaer build` output")
    return pd.read_parquet(path)
