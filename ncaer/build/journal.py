"""The output folder's private state: the configuration it was built with, and the journal
of finished clips that makes a build resumable.

Each finished clip is appended to OUT/.ncaer/journal.jsonl after its files are in
place. A rerun skips journaled clips and rebuilds the manifest from the journal, so
an interrupted build ends exactly like an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from ncaer.atomic import write_text

from .clip import ClipJob, ClipResult
from .config import BuildConfig
from .pool import Outcome

STATE_DIR = ".ncaer"
OUTPUT_ITEMS = ("images", "crop", "faces", "context", "manifest.parquet", "manifest.csv", "build.json",
                "failures.csv", STATE_DIR)


class BuildError(RuntimeError):
    """The build cannot start or must stop (bad output folder, --strict failure...)."""


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


def record_of(outcome: Outcome) -> dict:
    """The journal record of a finished (or given-up) clip."""
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


def json_line(record: dict) -> str:
    """JSON line with NaN written as null (a manifest float of no value)."""
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        return v

    record = dict(record, rows=[{k: clean(v) for k, v in r.items()} for r in record["rows"]])
    return json.dumps(record, allow_nan=False) + "\n"
