"""Segment sampling: one frame from each of N equal-duration segments of a clip.

Segments are cut on the time axis, not by frame count, so variable-frame-rate
files are split fairly. The random choice inside a segment draws from a generator
seeded by (seed, video, segment) alone, so a clip's samples do not depend on the
order clips are processed in or on how many workers there are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

PICK_MODES = ("random", "middle")


@dataclass(frozen=True)
class Pick:
    segment: int
    frame_index: int
    timestamp_s: float


def video_seed(video_id: str) -> int:
    """A stable 64-bit integer for a video identity (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(video_id.encode()).digest()[:8], "little")


def sample_segments(
    timestamps: np.ndarray,
    end_time: float,
    n_segments: int,
    pick: str = "random",
    seed: int = 0,
    video_id: str = "",
) -> list[Pick]:
    """Choose frames: one per segment, or every frame of a clip shorter than `n_segments`.

    `timestamps` are the frames' presentation times in seconds, in presentation
    order; `end_time` is when the last frame stops being shown. A clip with fewer
    frames than `n_segments` gives every frame, one segment each (the clip then
    has min(n_frames, n_segments) segments). A segment with no frame in it (a
    long gap in a variable-frame-rate file) gives no sample.
    """
    if pick not in PICK_MODES:
        raise ValueError(f"pick must be one of {PICK_MODES}, not {pick!r}")
    if n_segments < 1:
        raise ValueError("n_segments must be at least 1")
    ts = np.asarray(timestamps, dtype=np.float64)
    n = len(ts)
    if n == 0:
        return []
    if n <= n_segments:
        return [Pick(i, i, float(ts[i])) for i in range(n)]

    start = ts[0]
    duration = max(end_time - start, 1e-9)
    bounds = start + duration * np.arange(n_segments + 1) / n_segments
    # frame i belongs to the segment its start time falls in
    segment_of = np.clip(np.searchsorted(bounds, ts, side="right") - 1, 0, n_segments - 1)
    vseed = video_seed(video_id)
    picks = []
    for s in range(n_segments):
        members = np.flatnonzero(segment_of == s)
        if len(members) == 0:
            continue
        if pick == "random":
            rng = np.random.default_rng([seed, vseed, s])
            i = int(members[rng.integers(len(members))])
        else:
            middle = (bounds[s] + bounds[s + 1]) / 2
            i = int(members[np.argmin(np.abs(ts[members] - middle))])
        picks.append(Pick(s, i, float(ts[i])))
    return picks
