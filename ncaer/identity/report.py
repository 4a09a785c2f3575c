"""What `ncaer check-leakage --identity` writes: identities.csv, identities.png and an `identity` section
in report.json."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ncaer.atomic import replace_with, write_csv, write_text
from ncaer.dataset.layout import SPLITS

from .check import IdentityReport

THUMB = 96


def identity_summary(report: IdentityReport) -> dict:
    return {"model": report.model, "threshold": report.threshold, "shared": report.leaked, **report.counts,
            "shared_identities_clips": report.shared.to_dict(orient="records"),
            "not_embedded": report.not_embedded[:100], "timings": report.timings}


def write_identity_report(report: IdentityReport, root: Path, out: Path, max_rows: int = 40) -> dict[str, Path]:
    """identities.csv (one row per clip), the contact sheet of shared identities, report.json's section."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"identities": out / "identities.csv", "sheet": out / "identities.png", "report": out / "report.json"}
    write_csv(report.clips.sort_values(["identity", "split", "video_id"]), paths["identities"])
    summary = json.loads(paths["report"].read_text()) if paths["report"].is_file() else {}
    summary["identity"] = identity_summary(report)
    write_text(json.dumps(summary, indent=2) + "\n", paths["report"])
    if report.leaked:
        png = cv2.imencode(".png", _contact_sheet(report, root, max_rows))[1].tobytes()
        replace_with(paths["sheet"], lambda tmp: Path(tmp).write_bytes(png))
    else:
        paths["sheet"] = None
    return paths


def _contact_sheet(report: IdentityReport, root: Path, max_rows: int) -> np.ndarray:
    """One row per shared identity (most clips first): a face from each split it appears in."""
    shared = report.shared.assign(total=report.shared[list(SPLITS)].sum(axis=1)).sort_values("total",
                                                                                              ascending=False)
    rows = []
    for r in shared.head(max_rows).itertuples():
        tiles = []
        for split in SPLITS:
            clips = report.clips[(report.clips["identity"] == r.identity) & (report.clips["split"] == split)]
            tile = np.full((THUMB + 18, THUMB, 3), 255, np.uint8)
            if len(clips):
                face = cv2.imread(str(root / clips["face_path"].iloc[0]))
                if face is not None:
                    tile[:THUMB] = cv2.resize(face, (THUMB, THUMB), interpolation=cv2.INTER_AREA)
                cv2.putText(tile, f"{split}: {len(clips)}", (3, THUMB + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.38,
                            (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(np.pad(tile, ((4, 4), (4, 4), (0, 0)), constant_values=255))
        label = np.full((THUMB + 26, 90, 3), 255, np.uint8)
        cv2.putText(label, f"identity {r.identity}", (3, THUMB // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 160),
                    1, cv2.LINE_AA)
        rows.append(np.hstack([label, *tiles]))
    return np.vstack(rows)
