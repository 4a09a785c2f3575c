"""The output folder's private state: a lock, the configuration it was built with, and the
journal of finished clips that makes a build resumable.

- One build at a time: OUT/.ncaer/lock is held (flock) for the whole build, so a
  second build on the same folder is refused instead of deleting the first one's
  temporary files.
- Each finished clip is a line of OUT/.ncaer/journal.jsonl, written only after its
  files are durable: finished clips are committed in groups, about once a second,
  by syncing the output's filesystem, then appending their lines and syncing the
  journal. A crash loses the clips finished since the last commit (commits happen
  as clips finish), which the rerun redoes.
- A rerun skips journaled clips and rebuilds the manifest from the journal, so an
  interrupted build ends exactly like an uninterrupted one. A torn last line (a
  crash mid-write) is cut off before anything is appended; an unreadable line is
  skipped and reported, and its clip redone.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import math
import os
import shutil
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import ncaer
from ncaer.atomic import write_text

from .clip import ClipJob, ClipResult
from .config import BuildConfig
from .pool import Outcome

STATE_DIR = ".ncaer"
LOCK = "lock"
OUTPUT_ITEMS = ("images", "crop", "faces", "context", "manifest.parquet", "manifest.csv", "build.json",
                "failures.csv", STATE_DIR)
COMMIT_EVERY_S = 1.0


class BuildError(RuntimeError):
    """The build cannot start or must stop (bad output folder, --strict failure, full disk...)."""


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse, before writing anything, a non-empty folder that holds no ncaer build."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"{out} is a file; --out must be a folder")
    if (out.exists() and any(out.iterdir()) and not overwrite
            and not (out / STATE_DIR / "config.json").is_file()):
        raise BuildError(f"{out} is not empty and holds no ncaer build; choose another --out or pass --overwrite")


class BuildLock:
    """An exclusive lock on OUT for the length of a build (released by the OS if the process dies)."""

    def __init__(self, out: Path):
        self.path = out / STATE_DIR / LOCK
        self._fd: int | None = None

    def __enter__(self) -> BuildLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise BuildError(f"another ncaer build is writing to {self.path.parent.parent} ({holder}); "
                             "wait for it to finish, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}, since "
                     f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def prepare_out(config: BuildConfig, overwrite: bool) -> Path:
    """Create or reopen OUT (its lock held); refuse to mix builds of different configurations."""
    out = Path(config.out)
    state = out / STATE_DIR
    saved = state / "config.json"
    if overwrite:
        for item in OUTPUT_ITEMS:
            p = out / item
            if item == STATE_DIR and p.is_dir():  # all but the lock this build holds
                for q in p.iterdir():
                    if q.name != LOCK:
                        shutil.rmtree(q) if q.is_dir() else q.unlink()
            elif p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    elif saved.is_file():
        previous = json.loads(saved.read_text())
        if previous.get("fingerprint") != config.fingerprint():
            changed = [k for k, v in config.to_dict().items()
                       if k not in BuildConfig.RUNTIME_ONLY and previous["config"].get(k) != v]
            if previous.get("ncaer_version") != ncaer.__version__:
                changed.append(f"ncaer version {previous.get('ncaer_version', 'unknown')} -> {ncaer.__version__}")
            raise BuildError(
                f"{out} holds a build made with other options ({', '.join(changed) or 'unknown'} differ); "
                "use another --out, the same options to resume, or --overwrite to start again"
            )
    state.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(state / "tmp", ignore_errors=True)  # leftovers of a killed run (no other build: we hold the lock)
    (state / "tmp").mkdir()
    if overwrite or not saved.is_file():
        saved_config = {"fingerprint": config.fingerprint(), "ncaer_version": ncaer.__version__,
                        "config": config.to_dict()}
        write_text(json.dumps(saved_config, indent=2), saved)
    return out


def check_provider(out: Path, provider: str) -> None:
    """Record the execution provider that detects this build's faces, or refuse one that differs from it.

    Providers do not give identical boxes (TensorRT runs in fp16), so a build resumed on another kind of
    machine would mix two detectors' outputs in one dataset."""
    saved = out / STATE_DIR / "config.json"
    state = json.loads(saved.read_text())
    recorded = state.get("provider")
    if recorded is None:
        write_text(json.dumps(dict(state, provider=provider), indent=2), saved)
    elif recorded != provider:
        raise BuildError(f"{out}'s faces so far were detected with {recorded}; this run would use {provider}, "
                         "whose boxes differ slightly. Resume on the same kind of machine (or --device), "
                         "or pass --overwrite to start again")


def sync_filesystem(fd: int) -> None:
    """Make every file written to fd's filesystem durable (syncfs on Linux, else a global sync).

    A syncfs failure (a write-back error, or ENOSPC on network and thin storage) is raised: the files of the
    clips about to be journaled may not be on disk."""
    try:
        syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        os.sync()
        return
    if syncfs(fd) != 0:
        err = ctypes.get_errno()
        if err != errno.ENOSYS:
            raise OSError(err, os.strerror(err))
        os.sync()


class Journal:
    """OUT/.ncaer/journal.jsonl: finished clips by key, read (and repaired) on open, appended in groups."""

    def __init__(self, out: Path):
        self.path = out / STATE_DIR / "journal.jsonl"
        self.records: dict[str, dict] = {}
        self.repairs: list[str] = []  # what was wrong with the journal found, for the build report
        self._pending: list[dict] = []
        self._last_commit = time.monotonic()
        self._file = None
        self.before_commit: Callable[[], None] | None = None
        self._failed: Exception | None = None  # a failed sync: nothing more is journaled in this run
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # a torn last line: cut it off now, or the next record would be glued onto it
            keep = data.rfind(b"\n") + 1
            os.truncate(self.path, keep)
            data = data[:keep]
            self.repairs.append("journal: the last record was torn (the build was killed while writing it); "
                                "its clip is redone")
        for n, line in enumerate(data.splitlines(), start=1):
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("key"), str):
                self.repairs.append(f"journal line {n}: not a clip record (skipped; the clip is redone)")
                continue
            if record.get("forget"):
                self.records.pop(record["key"], None)
            else:
                self.records[record["key"]] = record

    def __enter__(self) -> Journal:
        self._file = open(self.path, "ab")
        return self

    def add(self, record: dict) -> None:
        """Take a finished clip's record; it reaches the journal at the next commit."""
        self.records[record["key"]] = record
        self._pending.append(record)
        if time.monotonic() - self._last_commit >= COMMIT_EVERY_S:
            self.commit()

    def forget(self, key: str) -> None:
        """Drop a clip's record (the next run redoes the clip); the tombstone reaches the journal at the next
        commit."""
        self.records.pop(key, None)
        self._pending.append({"key": key, "forget": True})

    def commit(self) -> None:
        """Sync the clips' files, then append and sync their records.

        A failed sync is final for this run: its clips are never journaled (the rerun redoes them), nor is
        any later clip, since a second syncfs on the same file reports no error for the same lost pages."""
        self._last_commit = time.monotonic()
        if not self._pending:
            return
        if self._failed:
            self._pending.clear()
            raise self._failed
        try:
            sync_filesystem(self._file.fileno())
            if self.before_commit:  # files other machines wrote
                self.before_commit()
        except BaseException as e:
            self._pending.clear()
            self._failed = e if isinstance(e, Exception) else OSError("the journal's last sync was interrupted")
            raise
        self._file.write("".join(json_line(r) for r in self._pending).encode())
        self._file.flush()
        os.fsync(self._file.fileno())
        self._pending.clear()

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.commit()  # finished clips are kept even when the build stops on an error or Ctrl-C
        except Exception:
            if exc_type is None:
                raise
            # the build is stopping already (full disk, Ctrl-C): its own error says why; these clips are redone
        finally:
            self._file.close()


def job_identity(job: ClipJob) -> dict:
    """What a clip's record was made from besides the options: a rerun redoes the clip if any of it changed
    (a CSV row relabelled or moved to another split or group, the file replaced, its output name)."""
    c = job.clip
    return {"label": c.label, "label_id": job.label_id, "split": c.split, "group": c.group,
            "fingerprint": job.fingerprint, "name": job.clip_name}


def record_of(outcome: Outcome) -> dict:
    """The journal record of a finished (or given-up) clip."""
    job: ClipJob = outcome.job
    res: ClipResult | None = outcome.result
    problems = list(outcome.notes) + (res.problems if res else []) + ([outcome.error] if outcome.error else [])
    return {
        "key": job.clip.rel_path,
        "job": job_identity(job),
        "rows": res.rows if res else [],
        "problems": problems,
        "used": bool(res and res.used),
        "decoder": res.decoder if res else "",
        "frames_decoded": res.frames_decoded if res else 0,
        "no_face": res.no_face if res else 0,
        "seconds": res.seconds if res else {},
        "subject": res.subject if res else None,
    }


def json_line(record: dict) -> str:
    """JSON line with NaN written as null (a manifest float of no value)."""
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        return v

    if "rows" in record:
        record = dict(record, rows=[{k: clean(v) for k, v in r.items()} for r in record["rows"]])
    return json.dumps(record, allow_nan=False) + "\n"
