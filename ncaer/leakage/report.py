"""What `ncaer check-leakage` writes: leaks.csv, clusters.csv, unreadable.csv, leaks.png, report.json."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from ncaer.atomic import write_csv, write_text

from .check import LeakReport, clusters


def summary_dict(report: LeakReport) -> dict:
    return {
        "dataset": str(report.imageset.root),
        "layout": report.imageset.kind,
        "images": int(len(report.imageset.images)),
        "images_per_split": report.imageset.images["split"].value_counts().to_dict(),
        "unreadable": int(len(report.unreadable)),
        "leaked": report.leaked,
        "config": {"threshold": report.config.threshold, "dhash_threshold": report.config.dhash_threshold,
                   "region": report.config.region, "embedding": report.embedding_used,
                   "embedding_threshold": report.config.embedding_threshold if report.config.embedding else None},
        "checks": report.summary.to_dict(orient="records"),
        "pairs": int(len(report.pairs)),
        "timings": {k: round(v, 3) for k, v in report.timings.items()},
    }


def write_report(report: LeakReport, out: str | Path, sheet_pairs: int = 24) -> dict[str, Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"leaks": out / "leaks.csv", "clusters": out / "clusters.csv", "unreadable": out / "unreadable.csv",
             "report": out / "report.json", "sheet": out / "leaks.png"}
    write_csv(report.pairs, paths["leaks"])
    write_csv(clusters(report.pairs), paths["clusters"])
    write_csv(report.unreadable, paths["unreadable"])
    write_text(json.dumps(summary_dict(report), indent=2) + "\n", paths["report"])
    if report.leaked:
        contact_sheet(report, paths["sheet"], sheet_pairs)
    else:
        paths["sheet"] = None
    return paths


def contact_sheet(report: LeakReport, path: Path, n_pairs: int = 24, thumb_h: int = 120) -> None:
    """The closest leaking pairs side by side (earlier split left), with split, name and distance."""
    pairs = report.pairs[report.pairs["check"] != "source"]
    if pairs.empty:
        pairs = report.pairs
    pairs = pairs.sort_values(["distance", "check"]).drop_duplicates("image_b").head(n_pairs)
    root = report.imageset.root
    tiles = []
    for r in pairs.itertuples():
        a, b = _thumb(root / r.image_a, thumb_h), _thumb(root / r.image_b, thumb_h)
        gap = np.full((thumb_h, 4, 3), 255, np.uint8)
        row = np.hstack([a, gap, b])
        caption = np.full((34, row.shape[1], 3), 255, np.uint8)
        dist = f"{r.distance:.0f} bits" if r.check in ("near", "exact") else f"{r.distance:.3f}"
        cv2.putText(caption, f"{r.check}  {dist}", (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 160), 1,
                    cv2.LINE_AA)
        cv2.putText(caption, f"{r.split_a}: {_short(r.image_a)} | {r.split_b}: {_short(r.image_b)}", (4, 28),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.vstack([row, caption]))
    width = max(t.shape[1] for t in tiles)
    tiles = [np.pad(t, ((0, 0), (0, width - t.shape[1]), (0, 0)), constant_values=255) for t in tiles]
    cols = 3
    rows = []
    for i in range(0, len(tiles), cols):
        group = tiles[i : i + cols]
        group += [np.full_like(tiles[0], 255)] * (cols - len(group))
        rows.append(np.hstack([np.pad(t, ((6, 6), (6, 6), (0, 0)), constant_values=255) for t in group]))
    cv2.imwrite(str(path), np.vstack(rows))


def _thumb(path: Path, h: int) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        return np.full((h, h, 3), 200, np.uint8)
    return cv2.resize(img, (max(1, round(img.shape[1] * h / img.shape[0])), h), interpolation=cv2.INTER_AREA)


def _short(name: str, keep: int = 28) -> str:
    return name if len(name) <= keep else "..." + name[-keep + 3:]
