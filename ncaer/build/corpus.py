"""Scan a labelled video corpus into a list of clips.

Two inputs are understood: the CAER folder layout
``ROOT/{train,validation,test}/{Class}/*.avi`` and, for other corpora, a CSV with
columns ``path,label,split[,group]``. Anything that cannot be used (junk files,
unknown class folders, non-video files, missing paths, file names that are not
UTF-8, CSV rows repeating or contradicting another) becomes a `Rejected` entry:
reported, never fatal (`--strict` makes it fatal). A folder that cannot be read is
a `CorpusError`: a listing with a class silently missing is not a corpus.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ncaer.dataset.layout import CAER_CLASSES, VIDEO_EXTENSIONS, canonical_split

JUNK_NAMES = {".ds_store", "thumbs.db", "desktop.ini"}

EXPECTED_LAYOUT = """\
expected either the CAER folder layout

    VIDEOS/{train,validation,test}/{Anger,Disgust,Fear,Happy,Neutral,Sad,Surprise}/*.avi

(`val` or `validation`; any case of class names; .avi .mp4 .mov .mkv), or a CSV file
with a header `path,label,split[,group]` (paths relative to the CSV's folder)."""


class CorpusError(ValueError):
    """The input does not look like a corpus at all (fatal, unlike per-file problems)."""


@dataclass(frozen=True)
class Clip:
    source_path: str  # absolute path of the video file
    rel_path: str  # path relative to the corpus root (posix), used as the video's identity
    split: str  # train | val | test
    label: str  # canonical class name
    group: str = ""  # larger split unit (TV show, episode); set by `units.assign_groups`

    @property
    def video_id(self) -> str:
        """Stable identity of the source video: its path without extension."""
        return self.rel_path.rsplit(".", 1)[0]


@dataclass(frozen=True)
class Rejected:
    path: str
    reason: str
    split: str = ""
    label: str = ""


@dataclass
class Corpus:
    root: str
    kind: str  # "folders" | "csv"
    classes: tuple[str, ...]
    clips: list[Clip] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    csv_columns: dict[str, dict[str, str]] = field(default_factory=dict)  # rel_path -> extra CSV fields

    def label_id(self, label: str) -> int:
        return self.classes.index(label)


def _class_lookup(classes: tuple[str, ...]) -> dict[str, str]:
    return {c.lower(): c for c in classes}


def _is_junk(path: Path) -> bool:
    return path.name.lower() in JUNK_NAMES or path.name.startswith("._")


def _printable(path: str) -> str:
    """A path as UTF-8 text: bytes that are not UTF-8 (kept by Python as surrogates) shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    # manifests, journals and reports are UTF-8: a name that cannot be written there cannot be a sample
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NOT_UTF8 = "file name is not valid UTF-8; rename it"


def _listdir(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise CorpusError(f"cannot read {_printable(str(folder))}: {e.strerror or e}") from e


def _files_under(folder: Path) -> list[Path]:
    """Every file below `folder`, sorted. Path.rglob skips unreadable folders in silence; os.walk is told to raise."""
    def fail(e: OSError):
        raise CorpusError(f"cannot read {_printable(e.filename or str(folder))}: {e.strerror or e}") from e

    return sorted(Path(d) / f for d, _, files in os.walk(folder, onerror=fail) for f in files)


def scan(videos: str | Path, classes: tuple[str, ...] | None = None) -> Corpus:
    """Scan a CAER-layout folder or a CSV listing; raise CorpusError if it is neither."""
    videos = Path(videos)
    if not videos.exists():
        raise CorpusError(f"{videos} does not exist; {EXPECTED_LAYOUT}")
    if videos.is_file():
        if videos.suffix.lower() != ".csv":
            raise CorpusError(f"{videos} is a file but not a .csv listing; {EXPECTED_LAYOUT}")
        return _scan_csv(videos, classes)
    return _scan_folders(videos, classes or CAER_CLASSES)


def _scan_folders(root: Path, classes: tuple[str, ...]) -> Corpus:
    corpus = Corpus(root=str(root.resolve()), kind="folders", classes=tuple(classes))
    lookup = _class_lookup(corpus.classes)
    split_dirs = []
    for entry in _listdir(root):
        split = canonical_split(entry.name) if entry.is_dir() else None
        if split is None:
            if not _is_junk(entry):
                corpus.rejected.append(
                    Rejected(_printable(entry.name), "not a split folder (expected train, val/validation, test)"))
            continue
        split_dirs.append((split, entry))
    seen_splits = [s for s, _ in split_dirs]
    duplicated = {s for s in seen_splits if seen_splits.count(s) > 1}
    if duplicated:
        names = ", ".join(d.name for s, d in split_dirs if s in duplicated)
        raise CorpusError(f"{root}: several folders name the same split ({names})")
    if not split_dirs:
        raise CorpusError(f"{root} holds no train/val/test folders; {EXPECTED_LAYOUT}")

    found_class_dir = False
    for split, split_dir in split_dirs:
        for class_dir in _listdir(split_dir):
            rel = _printable(class_dir.relative_to(root).as_posix())
            if _is_junk(class_dir):
                continue
            if not class_dir.is_dir():
                corpus.rejected.append(Rejected(rel, "file outside a class folder", split))
                continue
            label = lookup.get(class_dir.name.lower())
            if label is None:
                corpus.rejected.append(Rejected(rel, f"unknown class folder (classes: {', '.join(classes)})", split))
                continue
            found_class_dir = True
            for path in _files_under(class_dir):
                rel = path.relative_to(root).as_posix()
                if not _is_utf8(rel):
                    corpus.rejected.append(Rejected(_printable(rel), NOT_UTF8, split, label))
                elif _is_junk(path):
                    corpus.rejected.append(Rejected(rel, "junk file", split, label))
                elif path.suffix.lower() not in VIDEO_EXTENSIONS:
                    corpus.rejected.append(Rejected(rel, "not a video file (extension)", split, label))
                else:
                    corpus.clips.append(Clip(str(path.resolve()), rel, split, label))
    if not found_class_dir:
        raise CorpusError(f"{root} has split folders but no class folders inside them; {EXPECTED_LAYOUT}")
    return corpus


def _scan_csv(path: Path, classes: tuple[str, ...] | None) -> Corpus:
    base = path.parent.resolve()
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip().lower() for h in (reader.fieldnames or [])]
        missing = {"path", "label", "split"} - set(header)
        if missing:
            raise CorpusError(f"{path}: CSV lacks column(s) {', '.join(sorted(missing))}; {EXPECTED_LAYOUT}")
        rows = [{k.strip().lower(): (v or "").strip() for k, v in row.items() if k} for row in reader]
    if classes is None:
        labels = {r["label"] for r in rows if r["label"]}
        caer = _class_lookup(CAER_CLASSES)
        if labels and all(label.lower() in caer for label in labels):
            classes = CAER_CLASSES  # keep the reference label order for CAER-like listings
        else:
            classes = tuple(sorted(labels, key=str.lower))
    corpus = Corpus(root=str(base), kind="csv", classes=tuple(classes))
    lookup = _class_lookup(corpus.classes)
    listed: dict[str, list[tuple[int, Clip, dict]]] = {}  # usable rows per file, to find repeats
    for line_no, row in enumerate(rows, start=2):
        raw = row["path"]
        where = f"{raw or '(empty path)'} (line {line_no})"
        split = canonical_split(row["split"])
        label = lookup.get(row["label"].lower())
        if not raw:
            corpus.rejected.append(Rejected(where, "empty path"))
            continue
        file = Path(raw) if Path(raw).is_absolute() else base / raw
        rel = _relative_id(file, base)
        if not _is_utf8(rel):  # the listing is UTF-8, but a symlink on the way may not be
            corpus.rejected.append(Rejected(f"{_printable(rel)} (line {line_no})", NOT_UTF8))
        elif split is None:
            corpus.rejected.append(Rejected(rel, f"unknown split {row['split']!r}"))
        elif label is None:
            corpus.rejected.append(Rejected(rel, f"unknown class {row['label']!r}", split))
        elif not file.is_file():
            corpus.rejected.append(Rejected(rel, "file not found", split, label))
        elif file.suffix.lower() not in VIDEO_EXTENSIONS:
            corpus.rejected.append(Rejected(rel, "not a video file (extension)", split, label))
        else:
            clip = Clip(str(file.resolve()), rel, split, label, row.get("group", ""))
            listed.setdefault(rel, []).append((line_no, clip, row))
    # A file listed twice: an exact repeat is harmless (kept once, the repeat reported); a file listed with two
    # labels, splits or groups has no known label, so all its rows are skipped and reported. Skip-and-report,
    # as for every other bad row, so one slip does not stop a long listing; --strict makes it fatal.
    for rel, entries in listed.items():
        line_no, clip, row = entries[0]
        if len({(c.label, c.split, c.group) for _, c, _ in entries}) == 1:
            corpus.clips.append(clip)
            corpus.csv_columns[rel] = row
            corpus.rejected.extend(Rejected(f"{rel} (line {n})", f"duplicate of line {line_no}", c.split, c.label)
                                   for n, c, _ in entries[1:])
            continue
        listing = ", ".join(f"{'/'.join(filter(None, (c.label, c.split, c.group)))} (line {n})"
                            for n, c, _ in entries)
        kind = "label/split/group" if any(c.group for _, c, _ in entries) else "label/split"
        corpus.rejected.extend(Rejected(f"{rel} (line {n})", f"listed with conflicting {kind}: {listing}")
                               for n, _, _ in entries)
    if not corpus.clips and not corpus.rejected:
        raise CorpusError(f"{path} lists no videos; {EXPECTED_LAYOUT}")
    return corpus


def _relative_id(file: Path, base: Path) -> str:
    try:
        return file.resolve().relative_to(base).as_posix()
    except ValueError:  # outside the CSV's folder: keep the absolute path as identity
        return file.resolve().as_posix()


def clip_names(clips: list[Clip]) -> dict[str, str]:
    """Output file stem per clip: the file's stem, made unique within its split and class.

    CAER names clips 0001.avi ... inside each class folder, so stems collide only
    across folders, which the output layout keeps apart. Where two clips of one
    split and class share a stem (CSV corpora, mixed extensions), a short hash of
    the path is appended to each of them.
    """
    counts: dict[tuple[str, str, str], int] = {}
    for c in clips:
        key = (c.split, c.label, Path(c.rel_path).stem)
        counts[key] = counts.get(key, 0) + 1
    names = {}
    for c in clips:
        stem = Path(c.rel_path).stem
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", stem)
        if counts[(c.split, c.label, stem)] > 1 or safe != stem:
            safe = f"{safe}-{hashlib.sha1(c.rel_path.encode()).hexdigest()[:8]}"
        names[c.rel_path] = safe
    return names
