"""The plan: scan the corpus and decide which clips go where, without decoding anything."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from .clip import ClipJob, default_decoders
from .config import BuildConfig
from .corpus import Clip, Corpus, Rejected, clip_names, scan
from .units import Conflict, assign_groups, fingerprint, resolve_conflicts


@dataclass
class Plan:
    corpus: Corpus
    jobs: list[ClipJob]
    rejected: list[Rejected]
    conflicts: list[Conflict]
    group_warnings: list[str]
    limited_out: int = 0  # clips left out by --limit

    def counts(self) -> pd.DataFrame:
        """Clips per split and class."""
        df = pd.DataFrame([(j.clip.split, j.clip.label) for j in self.jobs], columns=["split", "label"])
        return df.value_counts().rename("clips").reset_index()


def _interleave(jobs: list[ClipJob], limit: int) -> list[ClipJob]:
    """The first `limit` clips taken round-robin over (split, class), so a small trial covers all of them."""
    buckets: dict[tuple[str, str], list[ClipJob]] = {}
    for j in jobs:
        buckets.setdefault((j.clip.split, j.clip.label), []).append(j)
    picked, queues = [], [list(b) for _, b in sorted(buckets.items())]
    while len(picked) < limit and any(queues):
        for q in queues:
            if q and len(picked) < limit:
                picked.append(q.pop(0))
    return sorted(picked, key=lambda j: j.clip.rel_path)


def plan_build(config: BuildConfig) -> Plan:
    """Scan the corpus and decide which clips go where, without decoding anything."""
    corpus = scan(config.videos, config.classes)
    # identity units are known only once faces are found (build.actors); until then the unit is the video
    if config.by_identity and corpus.kind == "csv" and any("identity" in row for row in corpus.csv_columns.values()):
        raise ValueError("--group-by identity groups clips by the faces they show, but this CSV also has an "
                         "'identity' column: rename the column to group by it instead")
    clips, group_warnings = assign_groups(corpus, None if config.by_identity else config.group_by)
    rejected = list(corpus.rejected)
    prints = {}
    readable: list[Clip] = []
    for c in clips:
        try:
            if os.path.getsize(c.source_path) == 0:
                rejected.append(Rejected(c.rel_path, "empty file (0 bytes)", c.split, c.label))
                continue
            prints[c.rel_path] = fingerprint(c.source_path)
            readable.append(c)
        except OSError as e:
            rejected.append(Rejected(c.rel_path, f"unreadable: {e.strerror or e}", c.split, c.label))
    kept, conflicts = resolve_conflicts(readable, prints)
    names = clip_names(kept)
    decoders = default_decoders(config.decoder)
    jobs = [ClipJob(c, names[c.rel_path], corpus.label_id(c.label), prints[c.rel_path], decoders)
            for c in sorted(kept, key=lambda c: c.rel_path)]
    limited_out = 0
    if config.limit is not None and config.limit < len(jobs):
        limited_out = len(jobs) - config.limit
        jobs = _interleave(jobs, config.limit)
    return Plan(corpus, jobs, rejected, conflicts, group_warnings, limited_out)
