"""Split units and disjointness.

The split unit is the source video; `--group-by` widens it (a TV show, an
episode). Files with identical content are one unit whatever their names. A unit
may give frames to one split only: where the corpus puts a unit in several
splits, it is kept in the earliest (train, then val, then test) and removed from
the later ones, the rule NCAER-S was built with ("any original video that gives
frames to the training set is removed from the test set").
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, replace

import pandas as pd

from ncaer.dataset.layout import SPLITS

from .corpus import Clip, Corpus

FINGERPRINT_BYTES = 64 * 1024


class LeakageError(RuntimeError):
    """A finished dataset shares a split unit between splits."""


def fingerprint(path: str) -> str:
    """Content identity of a file: its size and first and last 64 KiB (whole file if smaller)."""
    h = hashlib.blake2b(digest_size=16)
    size = os.path.getsize(path)
    h.update(size.to_bytes(8, "little"))
    with open(path, "rb") as f:
        h.update(f.read(FINGERPRINT_BYTES))
        if size > 2 * FINGERPRINT_BYTES:
            f.seek(-FINGERPRINT_BYTES, os.SEEK_END)
        h.update(f.read(FINGERPRINT_BYTES))
    return h.hexdigest()


def assign_groups(corpus: Corpus, group_by: str | None) -> tuple[list[Clip], list[str]]:
    """Set each clip's group. Returns the clips and a warning per clip the rule did not match.

    `group_by` names a CSV column (CSV corpora) or is a regular expression searched
    in the clip's relative path; its first capture group (else the whole match) is
    the group. Without it, a CSV's `group` column is used, else the video itself.
    """
    warnings = []
    if group_by is None:
        return [replace(c, group=c.group or c.video_id) for c in corpus.clips], warnings
    column = group_by.lower()
    if corpus.kind == "csv" and corpus.csv_columns and all(column in row for row in corpus.csv_columns.values()):
        clips = []
        for c in corpus.clips:
            value = corpus.csv_columns[c.rel_path][column]
            if not value:
                warnings.append(f"{c.rel_path}: empty {column!r}; the video is its own unit")
            clips.append(replace(c, group=value or c.video_id))
        return clips, warnings
    try:
        pattern = re.compile(group_by)
    except re.error as e:
        raise ValueError(f"--group-by {group_by!r} is neither a CSV column nor a valid regular expression: {e}") from e
    clips = []
    for c in corpus.clips:
        m = pattern.search(c.rel_path)
        if m is None:
            warnings.append(f"{c.rel_path}: --group-by did not match; the video is its own unit")
            clips.append(replace(c, group=c.video_id))
        else:
            clips.append(replace(c, group=m.group(1) if pattern.groups else m.group(0)))
    return clips, warnings


@dataclass(frozen=True)
class Conflict:
    clip: Clip
    unit: str
    kept_in: str
    reason: str


class UnitJoin:
    """Union-find over split-unit names: units joined here are one unit (its name: the smallest joined)."""

    def __init__(self):
        self._parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self._parent.setdefault(x, x)
        while self._parent[x] != x:
            self._parent[x] = self._parent[self._parent[x]]
            x = self._parent[x]
        return x

    def join(self, a: str, b: str) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            self._parent[max(a, b)] = min(a, b)


def earliest_split(unit_splits) -> dict[str, str]:
    """The first split (train, then val, then test) of each unit, from (unit, split) pairs."""
    order = {s: i for i, s in enumerate(SPLITS)}
    first: dict[str, str] = {}
    for unit, split in unit_splits:
        if unit not in first or order[split] < order[first[unit]]:
            first[unit] = split
    return first


def resolve_conflicts(clips: list[Clip], fingerprints: dict[str, str]) -> tuple[list[Clip], list[Conflict]]:
    """Keep every split unit in its earliest split only.

    Units are groups, joined into one where two files have the same content
    (`fingerprints`: rel_path -> fingerprint), so a copy of a training video in
    the test folder is caught whatever its name.
    """
    units = UnitJoin()
    by_print: dict[str, str] = {}
    for c in clips:
        units.find(c.group)
        fp = fingerprints.get(c.rel_path)
        if fp is None:
            continue
        if fp in by_print:
            units.join(by_print[fp], c.group)
        else:
            by_print[fp] = c.group

    first_split = earliest_split((units.find(c.group), c.split) for c in clips)
    group_splits = {(c.group, c.split) for c in clips}
    kept, conflicts = [], []
    for c in clips:
        unit = units.find(c.group)
        if c.split == first_split[unit]:
            kept.append(c)
            continue
        if (c.group, first_split[unit]) in group_splits:
            reason = f"split unit {c.group!r} also gives frames to {first_split[unit]}"
        else:
            reason = f"same file content as a clip in {first_split[unit]}"
        conflicts.append(Conflict(c, unit, first_split[unit], f"removed from {c.split}: {reason}"))
    return kept, conflicts


def verify_disjoint(manifest: pd.DataFrame) -> None:
    """Raise LeakageError unless every video_id and group lies in exactly one split."""
    problems = []
    for column in ("video_id", "group"):
        if column not in manifest or manifest.empty:
            continue
        n_splits = manifest.groupby(column)["split"].nunique()
        shared = n_splits[n_splits > 1]
        for unit in shared.index[:10]:
            splits = sorted(manifest.loc[manifest[column] == unit, "split"].unique())
            problems.append(f"{column} {unit!r} in {', '.join(splits)}")
        if len(shared) > 10:
            problems.append(f"... and {len(shared) - 10} more {column} values")
    if problems:
        raise LeakageError("splits are not disjoint: " + "; ".join(problems))
