"""Jobs for tests/test_pool.py; a module of its own so worker processes can import them."""

import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    key: str
    behaviour: str = "ok"  # ok | hang-first | crash-first | raise | hang-always
    decoders: tuple = ("first", "second")


class State:
    info = {"provider": "test"}


def init():
    return State()


def bad_init():
    raise FileNotFoundError("detector weights missing")


def work(state, job, report):
    decoder = job.decoders[0]
    report("decoding", decoder)
    if job.behaviour == "hang-always" or (job.behaviour == "hang-first" and decoder == "first"):
        time.sleep(600)
    if job.behaviour == "crash-first" and decoder == "first":
        os._exit(11)
    if job.behaviour == "raise":
        raise RuntimeError("boom")
    return f"{job.key}:{decoder}:{os.getpid()}"
