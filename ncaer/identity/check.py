"""`ncaer check-leakage --identity`: which actors appear in more than one split of a build.

Every sample with a face is embedded from its full frame and the manifest's box; a clip's
subject is the mean of its samples' embeddings; subjects are grouped into identities
(`cluster`). An identity is shared when its clips lie in more than one split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pandas as pd

from ncaer.dataset.layout import SPLITS

from .cluster import identities, subject_embeddings


@dataclass
class IdentityReport:
    clips: pd.DataFrame  # video_id, split, label, identity, samples, face_path (one face of the clip)
    shared: pd.DataFrame  # identity, then clips per split, for identities in more than one split
    counts: dict
    model: str
    threshold: float
    not_embedded: list[dict]  # image_path, reason: samples the model could not embed
    timings: dict = field(default_factory=dict)

    @property
    def leaked(self) -> bool:
        return len(self.shared) > 0


def check_identities(manifest: pd.DataFrame, root: Path, embedder, threshold: float,
                     on_progress: Callable[[int, int], None] | None = None) -> IdentityReport:
    faces = manifest[manifest["has_face"]].reset_index(drop=True)
    started = time.perf_counter()
    rows, embedded, failed = [], [], []
    for i, row in enumerate(faces.itertuples()):
        image = cv2.imread(str(root / row.image_path))
        box = (int(row.face_x1), int(row.face_y1), int(row.face_x2), int(row.face_y2))
        try:
            if image is None:
                raise ValueError("missing or unreadable")
            rows.append(embedder.embed(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), box))
            embedded.append(i)
        except Exception as e:  # noqa: BLE001 - one sample the model cannot take is reported, the check goes on
            failed.append({"image_path": row.image_path, "reason": str(e)})
        if on_progress:
            on_progress(i + 1, len(faces))
    embed_s = time.perf_counter() - started
    faces = faces.iloc[embedded].reset_index(drop=True)
    per_sample = np.stack(rows) if rows else np.zeros((0, embedder.dim), np.float32)
    names, subjects = subject_embeddings(per_sample, list(faces["video_id"]))
    ids = identities(subjects, threshold) if len(names) else np.zeros(0, int)
    first = faces.groupby("video_id", sort=False).first()
    clips = pd.DataFrame({"video_id": pd.Series(names, dtype="string"), "identity": np.asarray(ids, np.int64)})
    clips = clips.join(first[["split", "label", "face_path"]], on="video_id")
    clips["samples"] = clips["video_id"].map(faces.groupby("video_id").size())
    per_split = (pd.crosstab(clips["identity"], clips["split"]) if len(clips) else
                 pd.DataFrame(index=pd.Index([], dtype=np.int64, name="identity"))).reindex(columns=list(SPLITS),
                                                                                           fill_value=0)
    shared = per_split[(per_split > 0).sum(axis=1) > 1].reset_index()
    train_ids = set(clips.loc[clips["split"] == "train", "identity"])
    test_faces = faces[faces["split"] == "test"]
    test_ids = test_faces["video_id"].map(dict(zip(clips["video_id"], clips["identity"])))
    counts = {
        "samples_embedded": len(faces),
        "samples_without_face": int((~manifest["has_face"]).sum()),
        "samples_not_embedded": len(failed),
        "clips": len(clips),
        "identities": int(clips["identity"].nunique()),
        "shared_identities": len(shared),
        "largest_identity_clips": int(clips["identity"].value_counts().max()) if len(clips) else 0,
        "test_samples": int((manifest["split"] == "test").sum()),
        "test_samples_with_an_actor_seen_in_train": int(test_ids.isin(train_ids).sum()),
    }
    return IdentityReport(clips, shared, counts, embedder.name, threshold, failed,
                          {"embed_s": round(embed_s, 3),
                           "embeddings_per_s": round(len(faces) / embed_s, 2) if embed_s > 0 and len(faces) else None})
