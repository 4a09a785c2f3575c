"""Worker processes that survive hangs and crashes in native decoding code.

A decoder stuck inside C code cannot be interrupted from Python, so each job runs
in a worker process watched by the parent: a job past its deadline, or a worker
that dies (segfault, out of memory), is killed and the job is handed to a fresh
worker with the decoders it has not tried yet. Workers are also replaced after
`max_jobs` jobs, which bounds decord's memory growth.

Each worker talks to the parent over its own pipe, with synchronous sends: a
worker killed mid-message cannot block the others (as a shared queue's lock
could), and an event sent before a crash is never lost in a feeder thread.

Jobs need a `key` and a `decoders` tuple; workers report progress through
`report(event, value)`: ("decoding", name) starts the deadline for one decoder,
("frames", n) extends it by `per_frame` seconds per frame.

Invariants that keep the pool from hanging or misjudging a worker:
- every round starts workers until each pending or running job has one (up to
  `workers`), so a requeued job is picked up even when its worker was the last;
- a worker is judged dead, or past its deadline, only after its pipe has been read
  to the end of what it had sent when it was found dead or late: a result sent just
  before a worker retires, or while the caller held an earlier outcome, counts;
- outcomes are yielded between rounds, once idle workers have their next job, so
  workers go on while the caller works, and the time it takes is never charged to
  a job whose result is already in its pipe.

Why not a library: pebble.ProcessPool (5.2.3) has a per-task timeout that kills
only that worker, max_tasks recycling and an initializer. A prototype of run_jobs
on it passed tests/test_pool.py and cost the same: benchmarks/bench_build.py, 60
clips, 2 workers, 10.3-12.6 clips/s with either pool (run-to-run noise), and
0.34-0.37 ms of pool time per trivial job against 0.23-0.32 ms here. It was not kept:
- its timeout is fixed per task, while ours runs per decoder and grows with the
  frame count: the prototype still needed its own event channel (a socket per
  worker, a thread to accept them), deadlines and requeueing, 143 lines of code
  against this module's 177;
- it stops a timed-out worker with SIGTERM and waits 3 s before SIGKILL, one
  worker at a time; a decoder looping in C ignores SIGTERM, so two stalled jobs
  came back after 7.4 s instead of 1.2 s;
- its workers share one task and result channel behind process-shared locks,
  which a worker SIGKILLed inside them (the OOM killer) leaves held, stalling the
  others (upstream issues #163, #97): the hang this module exists to prevent.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import signal
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
    # Given up (no decoder left) after a failure of the machine rather than of the file: its last decoder
    # stalled (a loaded machine) or its worker was SIGKILLed (the OOM killer). Worth trying again on a rerun;
    # a crash by another signal (SIGSEGV, SIGABRT: the decoder choked on the content) or an exception is final.
    retry: bool = False


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
    for _ in range(max_jobs):  # then exit: the parent replaces a worker when it reads its last result
        job = conn.recv()
        if job is None:
            return
        try:
            result = work(state, job, lambda event, value, key=job.key: conn.send((event, key, value)))
        except Exception:  # noqa: BLE001 - a bug must not take the run down; the job is reported
            conn.send(("error", job.key, traceback.format_exc(limit=4)))
        else:
            conn.send(("done", job.key, result))


class _Worker:
    def __init__(self, ctx, wid, init, init_args, work, max_jobs, log_dir):
        self.conn, child = ctx.Pipe(duplex=True)
        log_path = os.path.join(log_dir, f"worker-{wid}.log") if log_dir else None
        self.proc = ctx.Process(target=_worker_main, args=(child, init, init_args, work, max_jobs, log_path),
                                daemon=True)
        self.proc.start()
        child.close()
        self.ready = False
        self.given = 0  # the worker exits after max_jobs
        self.job = None
        self.notes: tuple[str, ...] = ()
        self.tried: list[str] = []  # decoders this worker has started on its job, in order
        self.deadline = float("inf")

    def give(self, job, notes) -> bool:
        try:
            self.conn.send(job)
        except OSError:  # it died while idle: found dead below, and the job goes to another worker
            return False
        self.job, self.notes, self.tried, self.deadline = job, notes, [], float("inf")
        self.given += 1
        return True

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
    startup_timeout: float = 600.0,
) -> Iterator[Outcome]:
    """Run jobs on `workers` processes; yield an Outcome per job, in completion order.

    workers=0 runs everything in this process (no protection against hangs; for
    debugging). `on_ready` receives each worker's `state.info` once it has started.
    Workers write their stdout/stderr to `log_dir`/worker-N.log when given. A worker
    not started within `startup_timeout` seconds (generous: a first TensorRT engine
    build takes minutes) stops the run, as a worker that cannot start does.
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

    def drop(w: _Worker):
        w.stop()
        pool.remove(w)

    def read(w: _Worker) -> list[Outcome]:
        """Everything the worker has sent so far (stops at its end of file, or once it has retired)."""
        outcomes = []
        while w.conn.poll():
            try:
                event, key, value = w.conn.recv()
            except (EOFError, OSError):  # it died; judged from its exit code
                break
            if event == "fatal":
                raise WorkerInitError(value)
            if event == "ready":
                w.ready, w.deadline = True, float("inf")
                if on_ready:
                    on_ready(value)
            elif w.job is not None and key == w.job.key:
                if event == "decoding":
                    w.tried.append(value)
                    w.deadline = time.monotonic() + timeout
                elif event == "frames":
                    w.deadline = time.monotonic() + timeout + per_frame * int(value)
                elif event in ("done", "error"):
                    outcomes.append(Outcome(w.job, result=value, notes=w.notes) if event == "done" else
                                    Outcome(w.job, error=value.strip().splitlines()[-1], notes=w.notes))
                    w.job, w.deadline = None, float("inf")
                    if w.given >= max_jobs:  # it exits now; a fresh worker is started next round if needed
                        drop(w)
                        break
        return outcomes

    def abandon(w: _Worker, stalled: bool) -> Outcome | None:
        """Kill a stuck or dead worker; requeue its job with the decoders it has not tried, or give it up."""
        job, code = w.job, w.proc.exitcode
        tried = w.tried or [job.decoders[0]]  # it died before reporting one: the first is to blame
        if stalled:
            why, retry = f"{tried[-1]} stalled for over {timeout:g} s; killed", True
        else:
            why, retry = f"worker died (exit code {code}) while using {tried[-1]}", code == -signal.SIGKILL
        drop(w)
        left = tuple(d for d in job.decoders if d not in tried)
        if left:
            pending.append((dataclasses.replace(job, decoders=left), w.notes + (why,)))
            return None
        return Outcome(job, error=why, notes=w.notes, retry=retry)  # the error is the last reason, once

    outcomes: list[Outcome] = []
    try:
        while True:
            busy = sum(w.job is not None for w in pool)
            while len(pool) < min(workers, busy + len(pending)):
                pool.append(_Worker(ctx, spawned, init, init_args, work, max_jobs, log_dir))
                pool[-1].deadline = time.monotonic() + startup_timeout
                spawned += 1
            for w in pool:
                if w.ready and w.job is None and pending and w.give(*pending[-1]):
                    pending.pop()
            yield from outcomes  # once idle workers have their next job: they work while the caller does
            if not pending and not any(w.job is not None for w in pool):
                return
            wait([w.conn for w in pool] + [w.proc.sentinel for w in pool], timeout=POLL)
            # what is judged is the state before reading: a worker dead by now has all its messages in the
            # pipe, and a result that reached the pipe by now, however long ago, is read before any deadline
            now = time.monotonic()
            dead = [w for w in pool if not w.proc.is_alive()]
            outcomes = [o for w in list(pool) for o in read(w)]
            for w in [w for w in pool if w in dead or now > w.deadline]:
                if w.job is None:
                    if not w.ready and w in dead:
                        raise WorkerInitError(f"a worker exited (code {w.proc.exitcode}) before it started; "
                                              f"see its log in {log_dir or 'stderr'}")
                    if not w.ready:
                        raise WorkerInitError(f"a worker did not start within {startup_timeout:g} s (loading the "
                                              f"detector); see its log in {log_dir or 'stderr'}")
                    drop(w)
                    continue
                outcome = abandon(w, stalled=w not in dead)
                if outcome is not None:
                    outcomes.append(outcome)
    finally:
        for w in pool:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in pool:
            w.proc.join(timeout=2)
            w.stop()
