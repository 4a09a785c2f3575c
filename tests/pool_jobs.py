"""Jobs for tests/test_pool.py; a module of its own so worker processes can import them."""

import os
import signal
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    key: str
    acts: str = ""  # what each decoder does, "first=hang,second=segv"; unnamed decoders succeed
    decoders: tuple = ("first", "second")
    seconds: float = 0.0  # how long a successful decode takes


SIGNALS = {"segv": signal.SIGSEGV, "abort": signal.SIGABRT, "kill": signal.SIGKILL}


class State:
    info = {"provider": "test"}


def init():
    return State()


def stuck_init():
    time.sleep(600)  # a detector that never loads (a stalled mount, a stuck GPU driver)


def bad_init():
    raise FileNotFoundError("detector weights missing")


def work(state, job, report):
    """Try the decoders in turn as process_clip does: a "fail" moves on to the next one inside the worker."""
    acts = dict(a.split("=") for a in job.acts.split(",") if a)
    for decoder in job.decoders:
        report("decoding", decoder)
        act = acts.get(decoder, "ok")
        if act == "fail":  # a DecodeError, caught and noted inside the worker
            continue
        if act == "hang":
            time.sleep(600)
        if act == "exit":
            os._exit(11)
        if act in SIGNALS:  # a native crash; SIGKILL is what the OOM killer sends
            os.kill(os.getpid(), SIGNALS[act])
            time.sleep(600)
        if act == "raise":
            raise RuntimeError("boom")
        time.sleep(job.seconds)
        report("frames", 10)  # more than one message in the pipe, as process_clip sends
        return f"{job.key}:{decoder}:{os.getpid()}"
    return f"{job.key}:none:{os.getpid()}"
