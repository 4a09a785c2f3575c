"""Actor-disjoint splits (`--group-by identity`): the clips of one person are one split unit.

Each worker embeds the faces it writes and keeps their mean, the clip's subject (`clip`).
When every clip is done, subjects closer than the threshold are one identity (connected
components, `ncaer.identity.cluster`), and a clip's split unit is its identity joined
with its video (or CSV group), transitively. The conflict rule of `units` then applies
unchanged: a unit stays in its earliest split (train, then val, then test) and its clips
in later splits are removed, never moved. A clip without a face has no subject and stays
its own unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ncaer.dataset.layout import SPLITS
from ncaer.identity.cluster import identities

from .units import LeakageError, UnitJoin, earliest_split


@dataclass(frozen=True)
class Subject:
    key: str  # the clip's corpus-relative path (journal key)
    split: str
    group: str  # its unit before identities: the video, or its CSV group
    samples: int
    embedding: list[float] | None  # None: no face, or the model failed on it


@dataclass
class ActorSplit:
    subjects: list[Subject]
    unit: dict[str, str]  # key -> the split unit (the manifest's `group`)
    identity: dict[str, int]  # key -> identity number, for clips with a subject
    removed: dict[str, str]  # key -> why the clip was left out
    summary: dict  # build.json's `identity` section: what actor-disjointness cost

    def clips(self, left_out: set[str]) -> pd.DataFrame:
        """identities.csv: one row per clip that gave samples, with its identity, unit and whether it is in the
        manifest (`left_out`: kept by the rule but not built in this run)."""
        return pd.DataFrame({
            "source_path": [s.key for s in self.subjects],
            "split": [s.split for s in self.subjects],
            "identity": pd.array([self.identity.get(s.key) for s in self.subjects], dtype="Int64"),
            "group": [self.unit[s.key] for s in self.subjects],
            "samples": [s.samples for s in self.subjects],
            "kept": [s.key not in self.removed and s.key not in left_out for s in self.subjects],
        }).sort_values(["group", "source_path"], kind="stable")


def _identities(subjects: list[Subject], threshold: float) -> dict[str, int]:
    """Identity number of each clip with a subject (connected components under the threshold)."""
    with_face = [s for s in subjects if s.embedding is not None]
    if not with_face:
        return {}
    ids = identities(np.array([s.embedding for s in with_face], np.float64), threshold)
    return {s.key: int(i) for s, i in zip(with_face, ids)}


def split_by_actor(subjects: list[Subject], threshold: float, model: str) -> ActorSplit:
    """Identity units and the clips the earliest-split rule removes."""
    identity = _identities(subjects, threshold)
    units = UnitJoin()
    for s in subjects:
        if s.key in identity:
            units.join("group:" + s.group, f"identity:{identity[s.key]}")
    root = {s.key: units.find("group:" + s.group) for s in subjects}
    first_split = earliest_split((root[s.key], s.split) for s in subjects)

    # units holding a face are named actor-NNNN in the order of their first clip; the others keep their group
    with_identity = {root[k] for k in identity}
    names: dict[str, str] = {}
    for s in sorted(subjects, key=lambda s: s.key):
        r = root[s.key]
        if r in with_identity and r not in names:
            names[r] = f"actor-{len(names):04d}"
    unit = {s.key: names.get(root[s.key], s.group) for s in subjects}

    removed = {}
    for s in subjects:
        kept_in = first_split[root[s.key]]
        if s.split != kept_in:
            removed[s.key] = (f"removed from {s.split}: split unit {unit[s.key]} (the same person in several clips) "
                              f"also gives frames to {kept_in}")
    return ActorSplit(subjects, unit, identity, removed, _summary(subjects, identity, removed, threshold, model))


def _summary(subjects: list[Subject], identity: dict[str, int], removed: dict[str, str], threshold: float,
             model: str) -> dict:
    per_identity: dict[int, list[Subject]] = {}
    for s in subjects:
        if s.key in identity:
            per_identity.setdefault(identity[s.key], []).append(s)
    largest = max(per_identity.values(), key=len, default=[])

    def per_split(clips, samples=False) -> dict[str, int]:
        return {split: sum(c.samples if samples else 1 for c in clips if c.split == split) for split in SPLITS}

    gone = [s for s in subjects if s.key in removed]
    return {
        "model": model,
        "threshold": threshold,
        "clips": len(subjects),
        "clips_with_a_face": len(identity),
        "identities": len(per_identity),
        "largest_identity": {"clips": len(largest), "per_split": per_split(largest)},
        "clips_before": per_split(subjects),
        "clips_removed": per_split(gone),
        "samples_removed": per_split(gone, samples=True),
        "clips_moved": {split: 0 for split in SPLITS},  # the rule removes; it never moves a clip
    }


def verify_actor_disjoint(subjects: list[Subject], threshold: float) -> None:
    """Raise LeakageError unless every identity among the kept clips lies in one split."""
    split_of = {s.key: s.split for s in subjects}
    splits: dict[int, set[str]] = {}
    for key, i in _identities(subjects, threshold).items():
        splits.setdefault(i, set()).add(split_of[key])
    shared = {i: sorted(v) for i, v in splits.items() if len(v) > 1}
    if shared:
        examples = "; ".join(f"identity {i} in {', '.join(v)}" for i, v in list(shared.items())[:10])
        raise LeakageError(f"splits are not actor-disjoint: {len(shared)} identities in several splits: {examples}")
