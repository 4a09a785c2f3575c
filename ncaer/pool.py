"""Worker processes that survive hangs and crashes in native decoding code.

A decoder stuck inside C code cannot be interrupted from Python, so each job runs
in a worker process watched by the parent: a job past its deadline, or a worker
that dies (segfault, out of memory), is killed and the job is handed to a fresh
worker with the next decoder in its list. Workers are also replaced after
`max_jobs` jobs, which bounds decord's memory growth.

Jobs need a `key` and a `decoders` tuple; workers report progress through
`report(event, value)`: ("decoding", name) starts the deadline for one decoder,
("frames", n) extends it by `per_frame` seconds per frame.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import queue
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

POLL = 0.05


class WorkerInitError(RuntimeError):
    """A worker could not start (for example the detector's weights are missing)."""


@dataclass
class Outcome:
    job: Any
    result: Any = None  # what the work function returned
    error: str = ""  # why there is no result (hang, crash, exception)
    notes: tuple[str, ...] = ()  # decoders abandoned on the way, and why


def _worker_main(wid, init, init_args, work, inbox, outbox, max_jobs):
    try:
        state = init(*init_args)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which stops the build
        outbox.put(("fatal", wid, None, f"{type(e).__name__}: {e}"))
        return
    outbox.put(("ready", wid, None, getattr(state, "info", None)))
    for _ in range(max_jobs):
        job = inbox.get()
        if job is None:
            return
        try:
            result = work(state, job, lambda event, value, key=job.key: outbox.put((event, wid, key, value)))
        except Exception:  # noqa: BLE001 - a bug must not take the build down; the job is reported
            outbox.put(("error", wid, job.key, traceback.format_exc(limit=4)))
        else:
            outbox.put(("done", wid, job.key, result))
    outbox.put(("retired", wid, None, None))


class _Worker:
    def __init__(self, ctx, wid, init, init_args, work, outbox, max_jobs):
        self.wid = wid
        self.inbox = ctx.Queue()
        self.proc = ctx.Process(target=_worker_main, args=(wid, init, init_args, work, self.inbox, outbox, max_jobs),
                                daemon=True)
        self.proc.start()
        self.ready = False
        self.given = 0  # the worker retires after max_jobs; give it no more than that
        self.job = None
        self.notes: tuple[str, ...] = ()
        self.decoder = ""
        self.deadline = float("inf")

    def give(self, job, notes):
        self.job, self.notes, self.decoder, self.deadline = job, notes, "", float("inf")
        self.given += 1
        self.inbox.put(job)

    def kill(self):
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.inbox.close()


def run_jobs(
    jobs: Iterable,
    workers: int,
    init: Callable,
    init_args: tuple,
    work: Callable,
    timeout: float = 30.0,
    per_frame: float = 0.05,
    max_jobs: int = 500,
    on_ready: Callable[[Any], None] | None = None,
) -> Iterator[Outcome]:
    """Run jobs on `workers` processes; yield an Outcome per job, in completion order.

    workers=0 runs everything in this process (no protection against hangs; for
    debugging). `on_ready` receives each worker's `state.info` once it has started.
    """
    jobs = list(jobs)
    if workers <= 0:
        state = init(*init_args)
        if on_ready:
            on_ready(getattr(state, "info", None))
        for job in jobs:
            try:
                yield Outcome(job, result=work(state, job, lambda event, value: None))
            except Exception:  # noqa: BLE001
                yield Outcome(job, error=traceback.format_exc(limit=4))
        return

    ctx = mp.get_context("forkserver")
    # forked workers then start with these modules (numpy, OpenCV, onnxruntime) already imported
    ctx.set_forkserver_preload(["ncaer.extract"])
    outbox = ctx.Queue()
    pending: list[tuple[Any, tuple[str, ...]]] = [(job, ()) for job in reversed(jobs)]
    pool: dict[int, _Worker] = {}
    next_id = 0

    def spawn():
        nonlocal next_id
        pool[next_id] = _Worker(ctx, next_id, init, init_args, work, outbox, max_jobs)
        next_id += 1

    def abandon(w: _Worker, why: str) -> Outcome | None:
        """Kill a stuck or dead worker; requeue its job with the next decoder, or give it up."""
        job, notes = w.job, w.notes + (why,)
        w.kill()
        del pool[w.wid]
        spawn()
        tried = w.decoder or (job.decoders[0] if job.decoders else "")
        left = tuple(d for d in job.decoders if d != tried)
        if left:
            pending.append((dataclasses.replace(job, decoders=left), notes))
            return None
        return Outcome(job, error=why, notes=notes)

    for _ in range(min(workers, len(jobs))):
        spawn()
    try:
        while pending or any(w.job is not None for w in pool.values()):
            for w in list(pool.values()):
                if w.ready and w.job is None and not w.proc.is_alive():  # died while idle
                    w.kill()
                    del pool[w.wid]
                    spawn()
                elif w.ready and w.job is None and pending and w.given < max_jobs:
                    w.give(*pending.pop())
            try:
                event, wid, key, value = outbox.get(timeout=POLL)
            except queue.Empty:
                event = None
            now = time.monotonic()
            w = pool.get(wid) if event else None
            if event == "fatal":
                raise WorkerInitError(value)
            if w is not None and event == "ready":
                w.ready = True
                if on_ready:
                    on_ready(value)
            elif w is not None and w.job is not None and key == w.job.key:
                if event == "decoding":
                    w.decoder, w.deadline = value, now + timeout
                elif event == "frames":
                    w.deadline = now + timeout + per_frame * int(value)
                elif event in ("done", "error"):
                    out = Outcome(w.job, result=value, notes=w.notes) if event == "done" else \
                        Outcome(w.job, error=value.strip().splitlines()[-1], notes=w.notes)
                    w.job = None
                    yield out
            elif w is not None and event == "retired":
                w.kill()
                del pool[wid]
                if pending:
                    spawn()
            for w in list(pool.values()):
                if w.job is None:
                    continue
                if now > w.deadline:
                    outcome = abandon(w, f"{w.decoder or 'worker'} stalled for over {timeout:.0f} s; killed")
                elif not w.proc.is_alive():
                    outcome = abandon(w, f"worker died (exit code {w.proc.exitcode}) while using {w.decoder}")
                else:
                    continue
                if outcome is not None:
                    yield outcome
    finally:
        for w in pool.values():
            try:
                w.inbox.put(None)
            except (OSError, ValueError):
                pass
        for w in pool.values():
            w.proc.join(timeout=2)
            w.kill()
        outbox.close()
