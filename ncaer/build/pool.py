"""Worker processes that survive hangs and crashes in native decoding code.

A decoder stuck inside C code cannot be interrupted from Python, so each job runs
in a worker process watched by the parent: a job past its deadline, or a worker
that dies (segfault, out of memory), is killed and the job is handed to a fresh
worker with the next decoder in its list. Workers are also replaced after
`max_jobs` jobs, which bounds decord's memory growth.

Each worker talks to the parent over its own pipe, with synchronous sends: a
worker killed mid-message cannot block the others (as a shared queue's lock
could), and an event sent before a crash is never lost in a feeder thread.

Jobs need a `key` and a `decoders` tuple; workers report progress through
`report(event, value)`: ("decoding", name) starts the deadline for one decoder,
("frames", n) extends it by `per_frame` seconds per frame.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Callable, Iterable, Iterator

POLL = 0.1


class WorkerInitError(RuntimeError):
    """A worker could not start (for example the detector's weights are missing)."""


@dataclass
class Outcome:
    job: Any
    result: Any = None  # what the work function returned
    error: str = ""  # why there is no result (hang, crash, exception)
    notes: tuple[str, ...] = ()  # decoders abandoned on the way, and why


def _worker_main(conn, init, init_args, work, max_jobs, log_path):
    if log_path:
        # native decoders print to the C-level stderr: keep that noise in a log, not on the console
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
    try:
        state = init(*init_args)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which stops the run
        conn.send(("fatal", None, f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None, getattr(state, "info", None)))
    for _ in range(max_jobs):
        job = conn.recv()
        if job is None:
            return
        try:
            result = work(state, job, lambda event, value, key=job.key: conn.send((event, key, value)))
        except Exception:  # noqa: BLE001 - a bug must not take the run down; the job is reported
            conn.send(("error", job.key, traceback.format_exc(limit=4)))
        else:
            conn.send(("done", job.key, result))
    conn.send(("retired", None, None))


class _Worker:
    def __init__(self, ctx, wid, init, init_args, work, max_jobs, log_dir):
        self.conn, child = ctx.Pipe(duplex=True)
        log_path = os.path.join(log_dir, f"worker-{wid}.log") if log_dir else None
        self.proc = ctx.Process(target=_worker_main, args=(child, init, init_args, work, max_jobs, log_path),
                                daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.given = 0  # the worker retires after max_jobs; give it no more than that
        self.job = None
        self.notes: tuple[str, ...] = ()
        self.decoder = ""
        self.deadline = float("inf")

    def give(self, job, notes):
        self.job, self.notes, self.decoder, self.deadline = job, notes, "", float("inf")
        self.given += 1
        self.conn.send(job)

    def stop(self):
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=5)
        self.conn.close()


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
    log_dir: str | None = None,
) -> Iterator[Outcome]:
    """Run jobs on `workers` processes; yield an Outcome per job, in completion order.

    workers=0 runs everything in this process (no protection against hangs; for
    debugging). `on_ready` receives each worker's `state.info` once it has started.
    Workers write their stdout/stderr to `log_dir`/worker-N.log when given.
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
    # forked workers then start with the work's module (for the build: numpy, OpenCV, onnxruntime) imported
    ctx.set_forkserver_preload([work.__module__])
    pending: list[tuple[Any, tuple[str, ...]]] = [(job, ()) for job in reversed(jobs)]
    pool: list[_Worker] = []
    spawned = 0

    def spawn():
        nonlocal spawned
        pool.append(_Worker(ctx, spawned, init, init_args, work, max_jobs, log_dir))
        spawned += 1

    def retire(w: _Worker):
        w.stop()
        pool.remove(w)
        if pending or any(x.job is not None for x in pool):
            spawn()

    def abandon(w: _Worker, why: str) -> Outcome | None:
        """Kill a stuck or dead worker; requeue its job with the next decoder, or give it up."""
        job, notes = w.job, w.notes + (why,)
        tried = w.decoder or job.decoders[0]
        retire(w)
        left = tuple(d for d in job.decoders if d != tried)
        if left:
            pending.append((dataclasses.replace(job, decoders=left), notes))
            return None
        return Outcome(job, error=why, notes=notes)

    for _ in range(min(workers, len(jobs))):
        spawn()
    try:
        while pending or any(w.job is not None for w in pool):
            for w in pool:
                if w.ready and w.job is None and pending and w.given < max_jobs:
                    w.give(*pending.pop())
            ready_conns = wait([w.conn for w in pool], timeout=POLL)
            for w in [w for w in pool if w.conn in ready_conns]:
                try:
                    event, key, value = w.conn.recv()
                except (EOFError, OSError):  # the worker died; handled below
                    continue
                if event == "fatal":
                    raise WorkerInitError(value)
                if event == "ready":
                    w.ready = True
                    if on_ready:
                        on_ready(value)
                elif event == "retired":
                    retire(w)
                elif w.job is not None and key == w.job.key:
                    if event == "decoding":
                        w.decoder, w.deadline = value, time.monotonic() + timeout
                    elif event == "frames":
                        w.deadline = time.monotonic() + timeout + per_frame * int(value)
                    elif event in ("done", "error"):
                        out = (Outcome(w.job, result=value, notes=w.notes) if event == "done" else
                               Outcome(w.job, error=value.strip().splitlines()[-1], notes=w.notes))
                        w.job = None
                        yield out
            now = time.monotonic()
            for w in list(pool):
                if w.proc.is_alive() and now <= w.deadline:
                    continue
                if w.job is None:
                    if not w.proc.is_alive():
                        if not w.ready:
                            raise WorkerInitError(f"a worker exited (code {w.proc.exitcode}) before it started; "
                                                  f"see its log in {log_dir or 'stderr'}")
                        retire(w)
                    continue
                name = w.decoder or w.job.decoders[0]
                if w.proc.is_alive():
                    outcome = abandon(w, f"{name} stalled for over {timeout:.0f} s; killed")
                else:
                    outcome = abandon(w, f"worker died (exit code {w.proc.exitcode}) while using {name}")
                if outcome is not None:
                    yield outcome
    finally:
        for w in pool:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in pool:
            w.proc.join(timeout=2)
            w.stop()
