import contextlib
import signal
import time

import pytest

from ncaer.build.pool import WorkerInitError, run_jobs
from pool_jobs import Job, bad_init, init, stuck_init, work


@contextlib.contextmanager
def hang_guard(seconds=15):
    """A pool that hangs fails the test after `seconds` instead of hanging the suite."""
    def hung(*_):
        raise TimeoutError(f"run_jobs still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run(jobs, pause=0.0, **kw):
    """Outcomes by key; `pause` seconds after each outcome play a slow consumer."""
    kw.setdefault("workers", 2)
    kw.setdefault("timeout", 1.5)
    out = {}
    with hang_guard(), contextlib.closing(run_jobs(jobs, init=init, init_args=(), work=work, **kw)) as outcomes:
        for o in outcomes:
            out[o.job.key] = o
            time.sleep(pause)
    return out


def test_hangs_and_crashes_fall_back_to_the_next_decoder_and_the_run_goes_on():
    jobs = [Job("ok1"), Job("hang", "first=hang"), Job("crash", "first=exit"), Job("raise", "first=raise"),
            Job("stuck", "first=hang,second=hang"), Job("ok2")]
    out = run(jobs)
    assert set(out) == {j.key for j in jobs}
    assert out["ok1"].result.startswith("ok1:first") and out["ok2"].result.startswith("ok2:first")
    assert out["hang"].result.startswith("hang:second")
    assert "first stalled" in out["hang"].notes[0]
    assert out["crash"].result.startswith("crash:second")
    assert out["crash"].notes[0] == "worker died (exit code 11) while using first"
    assert out["raise"].result is None and "RuntimeError: boom" in out["raise"].error
    assert out["stuck"].result is None and "second stalled" in out["stuck"].error
    assert len(out["stuck"].notes) == 1 and "first stalled" in out["stuck"].notes[0]  # the error, once


@pytest.mark.parametrize("acts", ["first=exit", "first=hang"])
def test_the_last_job_running_is_retried_when_its_worker_was_the_only_one(acts):
    # --workers 1, --limit 1, or a resume with one clip left: the job's worker is gone and none is running
    out = run([Job("only", acts)], workers=1, timeout=0.5)
    assert out["only"].result.startswith("only:second")


def test_a_slow_consumer_does_not_time_out_jobs_that_finished_meanwhile():
    # "slow" finishes while the caller still holds the first outcome, long before its deadline is looked at
    out = run([Job("fast", seconds=0.1), Job("slow", seconds=0.3)], timeout=0.5, pause=1.0)
    assert [out[k].result.split(":")[1] for k in ("fast", "slow")] == ["first", "first"]
    assert out["slow"].notes == ()


def test_a_worker_retiring_after_max_jobs_while_the_consumer_is_slow_keeps_its_last_result():
    # each worker exits after its one job, while the caller holds another outcome
    jobs = [Job(f"j{i}", seconds=0.1 * (i % 2)) for i in range(4)]
    out = run(jobs, max_jobs=1, timeout=5, pause=0.3)
    assert {k: (o.result.split(":")[1], o.notes) for k, o in out.items()} == {j.key: ("first", ()) for j in jobs}


def test_decoders_the_worker_already_tried_are_not_tried_again_after_a_stall():
    # the worker gave up on "first" itself (a DecodeError) and stalled in "second": nothing is left to try
    out = run([Job("two", "first=fail,second=hang"),
               Job("three", "first=fail,second=hang", decoders=("first", "second", "third"))], timeout=0.5)
    assert out["two"].result is None and "second stalled" in out["two"].error
    assert out["three"].result.startswith("three:third")
    assert [len(out[k].notes) for k in ("two", "three")] == [0, 1]  # "two": the stall is its error, once


def test_retry_is_set_when_a_job_is_given_up_after_an_environment_failure():
    # the last abandonment decides: a stall (a loaded machine) or SIGKILL (the OOM killer) may pass on a rerun;
    # other signals and exceptions come from the file's content
    retry = {"stall": "first=hang,second=hang", "oom": "first=kill,second=kill",
             "segv-then-stall": "first=segv,second=hang"}
    final = {"stall-then-segv": "first=hang,second=segv", "oom-then-abort": "first=kill,second=abort",
             "raise": "first=raise", "all-failed": "first=fail,second=fail"}
    out = run([Job(k, acts) for k, acts in {**retry, **final}.items()], timeout=0.5)
    assert {k: o.retry for k, o in out.items()} == {**dict.fromkeys(retry, True), **dict.fromkeys(final, False)}
    assert out["oom"].error == "worker died (exit code -9) while using second"


def test_workers_are_replaced_after_max_jobs():
    out = run([Job(f"j{i}") for i in range(7)], max_jobs=2)
    pids = {o.result.split(":")[2] for o in out.values()}
    assert len(out) == 7 and len(pids) >= 4


def test_a_worker_that_cannot_start_stops_the_run():
    with hang_guard(), pytest.raises(WorkerInitError, match="detector weights missing"):
        list(run_jobs([Job("a")], workers=1, init=bad_init, init_args=(), work=work))


def test_a_worker_that_never_starts_stops_the_run():
    with hang_guard(), pytest.raises(WorkerInitError, match="did not start within 1 s"):
        list(run_jobs([Job("a")], workers=1, init=stuck_init, init_args=(), work=work, startup_timeout=1))


def test_in_process_mode():
    out = run([Job("a"), Job("b", "first=raise")], workers=0)
    assert out["a"].result.startswith("a:first")
    assert "boom" in out["b"].error
