"""A video corpus as training data: built once by `ncaer build` into the cache folder."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ncaer.build.config import BuildConfig
from ncaer.build.engine import run_build


def ensure_build(data: str | Path, frames: int, cache_dir: str | Path, workers: int) -> Path:
    """An `ncaer build` of `data`: `data` itself if it is one, else a build made once into the cache."""
    data = Path(data)
    if (data / "manifest.parquet").is_file():
        return data
    config = BuildConfig(videos=str(data.resolve()), out="", segments=frames, workers=workers)
    out = Path(cache_dir) / "builds" / config.fingerprint()  # the fingerprint ignores `out`
    if not (out / "manifest.parquet").is_file():
        run_build(replace(config, out=str(out)), overwrite=True)
    return out
