"""Choose one subject per clip from the faces detected in its sampled frames.

Sampled frames are a fraction of a second or more apart, so detections are linked
into tracks by how far a face moved relative to its size (not by box overlap,
which fails for fast motion). The subject is the most prominent track over the
clip: the sum, over the sampled frames, of its face size (the square root of the
box area) times the detector's score. A frame the track is absent from adds
nothing, so presence is one factor, not the first key: a 150 px subject who leaves
the frame for a fifth of the clip outweighs a 50 px poster in every frame, which
ranking by presence first chose. Frames where the subject is not found get no
face, rather than a different person's.
"""

from __future__ import annotations

import numpy as np

MAX_MOVE = 1.5  # how far (in face sizes) a face may move between two sampled frames
MAX_SCALE_CHANGE = 2.0


def _size(box: np.ndarray) -> float:
    return float(np.sqrt(max(box[2] - box[0], 1e-6) * max(box[3] - box[1], 1e-6)))


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    """Centre distance in units of the mean face size; inf if the sizes are too different."""
    sa, sb = _size(a), _size(b)
    if max(sa, sb) / min(sa, sb) > MAX_SCALE_CHANGE:
        return np.inf
    ca = np.array([(a[0] + a[2]) / 2, (a[1] + a[3]) / 2])
    cb = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    return float(np.linalg.norm(ca - cb) / ((sa + sb) / 2))


def link_tracks(dets_per_frame: list[np.ndarray]) -> list[dict[int, int]]:
    """Greedy frame-to-frame linking; returns tracks as {frame: detection row}."""
    tracks: list[dict[int, int]] = []
    for f, dets in enumerate(dets_per_frame):
        pairs = []
        for t, track in enumerate(tracks):
            last_f = max(track)
            last = dets_per_frame[last_f][track[last_f]]
            for d in range(len(dets)):
                dist = _distance(last, dets[d])
                if dist <= MAX_MOVE:
                    pairs.append((dist, t, d))
        used_t, used_d = set(), set()
        for _, t, d in sorted(pairs):
            if t in used_t or d in used_d:
                continue
            tracks[t][f] = d
            used_t.add(t)
            used_d.add(d)
        for d in range(len(dets)):
            if d not in used_d:
                tracks.append({f: d})
    return tracks


def choose_subject(dets_per_frame: list[np.ndarray]) -> list[int | None]:
    """Row of the subject's detection in each frame's (k, 5) array, or None."""
    tracks = link_tracks(dets_per_frame)
    if not tracks:
        return [None] * len(dets_per_frame)

    def prominence(track: dict[int, int]) -> float:
        rows = [dets_per_frame[f][d] for f, d in track.items()]
        return float(sum(np.sqrt(max(r[2] - r[0], 0) * max(r[3] - r[1], 0)) * r[4] for r in rows))

    best = max(tracks, key=prominence)
    return [best.get(f) for f in range(len(dets_per_frame))]
