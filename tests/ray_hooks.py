"""Runs in every Ray worker of tests/test_ray_engine.py (worker_process_setup_hook): decord stalls on
files named *stall* and crashes its worker (SIGSEGV) on files named *crash*, as native decoders do on bad
input; PyAV, the fallback, decodes them. The detector actor raises on frames 302 pixels wide and hangs on
frames 304 wide, as a GPU session may (out of memory, a driver fault)."""

import os
import signal
import time

import ncaer.build.clip as clip
import ncaer.build.ray_engine as ray_engine

_decode = clip.decode_samples
_detect = ray_engine.DetectorActor.detect


def _misbehaving(path, backend, choose):
    name = os.path.basename(path)
    if backend == "decord" and "stall" in name:
        time.sleep(3600)
    if "crash" in name and (backend == "decord" or "crash-all" in name):
        os.kill(os.getpid(), signal.SIGSEGV)
    return _decode(path, backend, choose)


def _failing_detect(self, *clips):
    widths = {decoded.frames[0].shape[1] for decoded in clips}
    if 302 in widths:
        raise RuntimeError("CUDA out of memory (simulated)")
    if 304 in widths:
        time.sleep(3600)
    return _detect(self, *clips)


def install():
    clip.decode_samples = _misbehaving
    ray_engine.DetectorActor.detect = _failing_detect
