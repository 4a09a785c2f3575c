import pytest

from ncaer.build.pool import WorkerInitError, run_jobs
from pool_jobs import Job, bad_init, init, work


def run(jobs, **kw):
    kw.setdefault("workers", 2)
    kw.setdefault("timeout", 1.5)
    return {o.job.key: o for o in run_jobs(jobs, init=init, init_args=(), work=work, **kw)}


def test_hangs_and_crashes_fall_back_to_the_next_decoder_and_the_run_goes_on():
    jobs = [Job("ok1"), Job("hang", "hang-first"), Job("crash", "crash-first"), Job("raise", "raise"),
            Job("stuck", "hang-always"), Job("ok2")]
    out = run(jobs)
    assert set(out) == {j.key for j in jobs}
    assert out["ok1"].result.startswith("ok1:first") and out["ok2"].result.startswith("ok2:first")
    assert out["hang"].result.startswith("hang:second")
    assert "first stalled" in out["hang"].notes[0]
    assert out["crash"].result.startswith("crash:second")
    assert out["crash"].notes[0] == "worker died (exit code 11) while using first"
    assert out["raise"].result is None and "RuntimeError: boom" in out["raise"].error
    assert out["stuck"].result is None and "second stalled" in out["stuck"].error
    assert len(out["stuck"].notes) == 2


def test_workers_are_replaced_after_max_jobs():
    out = run([Job(f"j{i}") for i in range(7)], max_jobs=2)
    pids = {o.result.split(":")[2] for o in out.values()}
    assert len(out) == 7 and len(pids) >= 4


def test_a_worker_that_cannot_start_stops_the_run():
    with pytest.raises(WorkerInitError, match="detector weights missing"):
        list(run_jobs([Job("a")], workers=1, init=bad_init, init_args=(), work=work))


def test_in_process_mode():
    out = run([Job("a"), Job("b", "raise")], workers=0)
    assert out["a"].result.startswith("a:first")
    assert "boom" in out["b"].error
