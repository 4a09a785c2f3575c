"""The Ray engine (`ncaer build --engine ray`): the clips of a build on a Ray cluster, or on one GPU machine.

A clip goes through three stages, on whichever nodes Ray chooses:

1. a decode task (one CPU) samples the clip's frames, trying its decoders in order;
2. a detector actor detects the faces. There is one actor per GPU, each holding one
   onnxruntime session (CUDA or TensorRT) and fed the frames of as many clips as fit
   in a batch of GPU_BATCH (padded to it), in one fixed letterboxed shape;
3. a render-and-write task (one CPU) chooses the subject and writes the files.

Without GPUs a task does all three for its clip, as a local worker does: the frames
then never enter Ray's object store (`--detector-actors` runs the stages on CPU
actors instead).

The driver (this process) only schedules: it never touches frames. It yields one
`Outcome` per clip, as the local pool does, and `engine` journals it, so resume,
failures and the manifest are the local engine's. What the pool does against hangs
is done here with Ray's means:
- a decode task is a generator that reports ("decoding", decoder) and ("frames", n),
  like a pool worker, and is held to the same deadline (--timeout, plus 0.05 s per
  frame); past it, the task is cancelled with force (its worker process is killed)
  and the clip goes to a new task with the decoders it has not tried;
- a task whose worker died (a decoder's crash, the OOM killer, a lost node) is
  treated the same way: Ray does not say which signal killed it, so a clip whose
  last decoder died is left to the rerun (`retry`), never recorded as final.

The output is made durable before it is journaled: the driver's node by the
journal's syncfs, every other node that wrote since the last commit by a sync task
run there.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

from ncaer.faces.base import GPU_BATCH
from ncaer.faces.runtime import DetectorError

from .clip import ClipJob, ClipResult, decode_clip, detect_and_write, start_detector, write_clip
from .config import BuildConfig
from .journal import BuildError, sync_filesystem
from .pool import Outcome, WorkerInitError

RAY_MISSING = 'the Ray engine needs Ray, which is not installed: pip install "ncaer[ray]"'
PER_FRAME = 0.05  # seconds added to a decode deadline per frame of the clip, as in the local pool
POLL = 0.05
STARTUP_TIMEOUT = 900.0  # a detector actor's start: a first TensorRT engine build takes minutes
SYNC_TIMEOUT = 300.0
MAX_CALLS = 500  # clips a task worker runs before Ray replaces it (decord's memory grows), as locally


def import_ray():
    try:
        import ray
    except ImportError:
        raise BuildError(RAY_MISSING) from None
    return ray


@dataclass
class RayCluster:
    """The connection this build uses, and what the build report says about it."""

    address: str
    started_here: bool  # a local Ray instance started by this build (shut down at its end)
    nodes: list[dict] = field(default_factory=list)
    cpus: int = 0
    gpus: int = 0

    def describe(self) -> dict:
        return {"name": "ray", "address": self.address, "nodes": len(self.nodes), "cpus": self.cpus,
                "gpus": self.gpus}


def connect(address: str | None) -> RayCluster:
    """Join the cluster at `address` ("auto": the one this machine belongs to), or start Ray on this machine."""
    ray = import_ray()
    started = False
    if address and address.startswith("ray://"):
        raise BuildError("run `ncaer build` on a node of the cluster, with --ray-address auto or HOST:PORT: "
                         "a Ray Client (ray://) driver cannot see --out, where it keeps the build's journal")
    if address and address != "auto":
        _check_reachable(address)
    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING,
                      configure_logging=True)
        try:
            # "local": a new instance on this machine, never a cluster named by RAY_ADDRESS or a `ray start`
            ray.init(address=address or "local", **kwargs)
            started = not address
        except (ConnectionError, RuntimeError, ValueError) as e:
            if not address:
                raise BuildError(f"Ray could not start on this machine: {e}") from e
            raise BuildError(f"cannot reach a Ray cluster at {address}: {e}. Start one with `ray start --head` "
                             "(see docs/build.md), or leave out --ray-address to run Ray on this machine") from e
    resources = ray.cluster_resources()
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return RayCluster(address=address or "local", started_here=started, nodes=nodes,
                      cpus=int(resources.get("CPU", 0)), gpus=int(resources.get("GPU", 0)))


def _check_reachable(address: str) -> None:
    """A HOST:PORT that answers: Ray itself retries an unreachable address for minutes."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except (OSError, ValueError) as e:
        raise BuildError(f"no Ray cluster answers at {address} ({e}). Start one with `ray start --head` on that "
                         "machine (docs/build.md), or leave out --ray-address to run Ray on this machine") from None


def disconnect(cluster: RayCluster) -> None:
    import ray

    if cluster.started_here:
        ray.shutdown()


# ---- tasks and actors (module functions: Ray ships them to workers by reference to this module)

def _node_view(out: str, token_name: str, token: str, probe: str, identity_model: str | None) -> dict:
    """What one node sees of the build's folders (the driver's token in --out, a clip of the corpus) and
    whether it can load the identity model of --group-by identity."""
    import ncaer

    view = {"host": socket.gethostname(), "ncaer": ncaer.__version__, "problems": []}
    try:
        seen = (Path(out) / token_name).read_text()
        if seen != token:
            view["problems"].append(f"{out} is another folder there (the driver's token differs)")
    except OSError as e:
        view["problems"].append(f"cannot read {out} ({e.strerror or e})")
    try:  # write as the build writes: through its tmp folder
        probe_file = Path(out) / ".ncaer" / "tmp" / f"node-check-{socket.gethostname()}-{os.getpid()}"
        probe_file.write_bytes(b"")
        probe_file.unlink()
    except OSError as e:
        view["problems"].append(f"cannot write in {out} ({e.strerror or e})")
    if not os.access(probe, os.R_OK):
        view["problems"].append(f"cannot read the corpus file {probe}")
    if identity_model:
        from ncaer.identity.embed import IdentityError
        from ncaer.identity.models import load_embedder

        try:
            load_embedder(identity_model, "cpu")
        except IdentityError as e:
            view["problems"].append(str(e))
    return view


def _decode_task(config: BuildConfig, job: ClipJob, tmp_dir: str | None = None):
    """Yield the decode's progress events, then ("result", ClipResult, frame count, frame shape, node, info).

    With frames decoded and no `tmp_dir`, the Decoded frames follow as a last, separate object, which the
    driver hands to a detector actor without fetching it. With `tmp_dir` (CPU clusters) the task detects
    and writes the clip itself, as a local worker does, and the result is final (frame count 0)."""
    events: queue.Queue = queue.Queue()

    def run():
        try:
            result, decoded = decode_clip(config, job, lambda event, value: events.put((event, value)))
            info = None
            if tmp_dir is not None and decoded is not None:
                try:
                    detector, info = _worker_detector(config)
                except DetectorError as e:  # this node cannot detect: no clip is to blame, the build stops
                    events.put(("fatal", f"the detector could not start on {socket.gethostname()}: {e}"))
                    return
                result, decoded = detect_and_write(config, tmp_dir, detector, job, result, decoded), None
            events.put(("end", (result, decoded, info)))
        except Exception:  # noqa: BLE001 - a bug is reported for the clip, as a pool worker does
            events.put(("error", traceback.format_exc(limit=4)))

    threading.Thread(target=run, daemon=True).start()
    while True:
        kind, value = events.get()
        if kind == "end":
            result, decoded, info = value
            if decoded is None:
                yield "result", result, 0, None, node_id(), info
            else:
                yield "result", result, len(decoded.frames), decoded.frames[0].shape, None, None
                yield decoded
            return
        yield kind, value
        if kind in ("error", "fatal"):
            return


_DETECTORS: dict = {}  # a Ray worker's detector, kept between the whole-clip tasks it runs


def _worker_detector(config: BuildConfig):
    key = (config.detector, config.detector_model, config.device, config.det_size, config.threshold)
    if key not in _DETECTORS:
        _DETECTORS[key] = start_detector(config)
    return _DETECTORS[key]


def _detector_probe(config: BuildConfig) -> dict:
    """Start the detector in one worker: a missing model is one clear error before any clip."""
    return _worker_detector(config)[1]


def node_id() -> str:
    """The Ray node this process runs on."""
    import ray

    return ray.get_runtime_context().get_node_id()


def _write_task(config: BuildConfig, tmp_dir: str, detector_name: str, job: ClipJob, result: ClipResult,
                decoded, detected) -> tuple[ClipResult, str]:
    dets, seconds = detected
    result.seconds["detect"] = seconds
    return write_clip(config, tmp_dir, detector_name, job, result, decoded, dets), node_id()


def _sync_task(out: str) -> None:
    fd = os.open(out, os.O_RDONLY)
    try:
        sync_filesystem(fd)
    finally:
        os.close(fd)


class DetectorActor:
    """One detector session (per GPU, or per CPU) that detects the frames of several clips per call."""

    def __init__(self, config: BuildConfig):
        self.detector, self.info = start_detector(config)

    def describe(self) -> dict:
        return self.info

    def detect(self, *clips):
        """The faces of each clip's frames, and the detector seconds charged to it (by frame share)."""
        frames = [f for decoded in clips for f in decoded.frames]
        t = time.perf_counter()
        dets = self.detector.detect(frames)
        seconds = time.perf_counter() - t
        out, start = [], 0
        for decoded in clips:
            n = len(decoded.frames)
            out.append((dets[start:start + n], seconds * n / len(frames)))
            start += n
        return out[0] if len(out) == 1 else tuple(out)


# ---- the driver

@dataclass
class _Decoding:
    job: ClipJob
    notes: tuple[str, ...]
    tried: list[str] = field(default_factory=list)
    deadline: float = float("inf")
    result: Any = None  # the ("result", ...) event, once seen; the frames ref follows it


@dataclass
class _Decoded:
    job: ClipJob
    notes: tuple[str, ...]
    result: ClipResult
    frames_ref: Any
    n_frames: int
    shape: tuple
    deadline: float = float("inf")  # for its detection and writing, once submitted
    call: Any = None  # its detector call (the call's first return)
    detect_ref: Any = None  # its own return of that call


def check_nodes(ray, cluster: RayCluster, out: Path, probe: str, identity_model: str | None = None) -> None:
    """Every node must see --out and the corpus at the same paths, run this ncaer version and load the
    identity model where one is used."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    import ncaer

    token_name = f".ncaer/node-check-{os.getpid()}"
    token = f"{socket.gethostname()}:{time.time()}"
    (out / token_name).write_text(token)
    try:
        view = ray.remote(_node_view)
        refs = {n["NodeID"]: view.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
            n["NodeID"], soft=False)).remote(str(out), token_name, token, probe, identity_model) for n in cluster.nodes
            if n.get("Resources", {}).get("CPU", 0) > 0}
        problems = []
        for node_id, ref in refs.items():
            try:
                seen = ray.get(ref, timeout=120)
            except Exception as e:  # noqa: BLE001 - a node that cannot run a task is named, whatever the cause
                problems.append(f"node {node_id[:8]}: could not run a task: {_last_line(e)}")
                continue
            where = f"node {seen['host']} ({node_id[:8]})"
            problems += [f"{where}: {p}" for p in seen["problems"]]
            if seen["ncaer"] != ncaer.__version__:
                problems.append(f"{where}: runs ncaer {seen['ncaer']}, this driver {ncaer.__version__}")
    finally:
        (out / token_name).unlink(missing_ok=True)
    if problems:
        raise BuildError("every node of the Ray cluster must see --out and --videos at the same paths (a shared "
                         "filesystem), run the same ncaer version and have its extras:\n  " + "\n  ".join(problems))


def run_on_ray(
    jobs: list[ClipJob],
    config: BuildConfig,
    tmp_dir: str,
    cluster: RayCluster,
    on_ready: Callable[[dict], None] | None = None,
    dirty_nodes: set[str] | None = None,
) -> Iterator[Outcome]:
    """Run the clips on the connected cluster; yield an Outcome per clip, in completion order.

    `dirty_nodes` collects the ids of the nodes that wrote files since the caller last synced them."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError, TaskCancelledError

    dirty_nodes = dirty_nodes if dirty_nodes is not None else set()
    use_gpu = cluster.gpus > 0 and config.device != "cpu"
    # Without GPUs a task does the whole clip, as a local worker does, unless --detector-actors asks for
    # CPU actors: moving the frames to an actor costs CPU time and gains nothing (docs/build.md, measured).
    whole_clips = not use_gpu and not config.detector_actors
    n_actors = 0 if whole_clips else config.detector_actors or cluster.gpus
    if use_gpu and n_actors > cluster.gpus:
        raise BuildError(f"--detector-actors {n_actors}: a detector actor holds a GPU and the cluster has "
                         f"{cluster.gpus}")
    actor_class = ray.remote(DetectorActor).options(
        num_gpus=1 if use_gpu else 0, num_cpus=0, max_restarts=3, max_task_retries=0,
        scheduling_strategy="SPREAD")
    actors: list = []
    # workers are replaced every MAX_CALLS clips, as local ones are: decord's memory grows
    decode = ray.remote(num_cpus=1, max_retries=0, max_calls=MAX_CALLS)(_decode_task)
    write = ray.remote(num_cpus=1, max_retries=0, max_calls=MAX_CALLS)(_write_task)
    write_timeout = 4 * config.timeout  # a clip's detection (its actor call) and writing
    batch_frames = GPU_BATCH if use_gpu else 1  # a CPU session gains nothing from bigger batches
    seen_info: list[dict] = []

    decoding: dict[Any, _Decoding] = {}
    waiting: list[_Decoded] = []  # decoded, not yet sent to a detector
    calls: dict[Any, tuple[int, float]] = {}  # a detector call (its first return) -> (actor index, deadline)
    writing: dict[Any, _Decoded] = {}  # a clip's write task, submitted with its detection call
    calls_in_flight = [0] * n_actors
    pending: list[tuple[ClipJob, tuple[str, ...]]] = [(job, ()) for job in reversed(jobs)]
    decode_slots = max(1, cluster.cpus)
    max_held = 4 * decode_slots + 2 * batch_frames  # clips decoded and not yet written: bounds memory

    def started(info: dict | None) -> None:
        if info and info not in seen_info:
            seen_info.append(info)
            if on_ready:
                on_ready(info)

    crashed: set[str] = set()  # clips whose last decoder's worker has died once

    try:
        actors += [actor_class.remote(config) for _ in range(n_actors)]
        starting = [a.describe.remote() for a in actors] if actors else [
            ray.remote(_detector_probe).options(num_cpus=1, max_retries=0).remote(config)]
        try:
            infos = ray.get(starting, timeout=STARTUP_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            raise WorkerInitError(f"the detector did not start within {STARTUP_TIMEOUT:g} s "
                                  "(Ray's resources: is a GPU free?)") from None
        except (RayActorError, RayTaskError) as e:
            raise WorkerInitError(_actor_failure(e)) from None
        for info in infos:
            started(info)

        def abandon(d: _Decoding, why: str, crash: bool = False) -> Outcome | None:
            """Give a stalled or dead decode the decoders it has not tried, or give the clip up.

            Ray does not say what killed a worker (a decoder's SIGSEGV, or the OOM killer), so a clip whose
            last decoder crashed is tried once more with it; a second crash is final, as a local worker's
            SIGSEGV is. A stall, Ray's out-of-memory kill or a lost node leave the clip to the rerun."""
            used = d.tried or [d.job.decoders[0]]
            left = tuple(x for x in d.job.decoders if x not in used)
            if not left and crash and d.job.key not in crashed:
                crashed.add(d.job.key)
                left = (used[-1],)
            if left:
                pending.append((replace(d.job, decoders=left), d.notes + (why,)))
                return None
            return Outcome(d.job, error=why, notes=d.notes, retry=not crash)

        def read_decode(gen, d: _Decoding) -> Outcome | None:
            """Take what the decode task has yielded so far; an Outcome when the clip ends at this stage."""
            while True:
                ready, _ = ray.wait([gen], timeout=0)
                if not ready:
                    return None
                try:
                    ref = next(gen)
                except StopIteration:
                    del decoding[gen]
                    return Outcome(d.job, error="the decode task ended without a result", notes=d.notes)
                if d.result is not None:  # the frames that follow a result
                    _, result, n, shape, _, _ = d.result
                    del decoding[gen]
                    waiting.append(_Decoded(d.job, d.notes, result, ref, n, shape))
                    return None
                try:
                    event = ray.get(ref)
                except TaskCancelledError:
                    return None
                except RayTaskError as e:
                    del decoding[gen]
                    return Outcome(d.job, error=_last_line(e), notes=d.notes)
                except ray.exceptions.RayError as e:  # its worker or node died
                    del decoding[gen]
                    used = d.tried[-1] if d.tried else d.job.decoders[0]
                    return abandon(d, f"worker died ({type(e).__name__}) while using {used}",
                                   crash=type(e) is ray.exceptions.WorkerCrashedError)
                kind = event[0]
                if kind == "decoding":
                    d.tried.append(event[1])
                    d.deadline = time.monotonic() + config.timeout
                elif kind == "frames":
                    d.deadline = time.monotonic() + config.timeout + PER_FRAME * int(event[1])
                elif kind == "error":
                    del decoding[gen]
                    return Outcome(d.job, error=event[1].strip().splitlines()[-1], notes=d.notes)
                elif kind == "fatal":
                    raise WorkerInitError(event[1])
                elif kind == "result":
                    d.deadline = float("inf")
                    _, result, n, _, node, info = event
                    if n == 0:  # written by the task itself, or nothing decoded: the clip ends here
                        del decoding[gen]
                        started(info)
                        if node and result.rows:
                            dirty_nodes.add(node)
                        return Outcome(d.job, result=result, notes=d.notes)
                    d.result = event

        def detector_failed(c: _Decoded) -> bool:
            """Whether the clip's detector call failed (its write task only passed that error on)."""
            try:
                ray.get(c.detect_ref, timeout=10)
            except ray.exceptions.RayError:  # its exception, or its actor died (Ray restarts it)
                return True
            return False

        def send_batches(draining: bool) -> None:
            """Hand waiting clips to the least busy detector actors, grouped by frame shape."""
            by_shape: dict[tuple, list[_Decoded]] = defaultdict(list)
            for c in waiting:
                by_shape[c.shape].append(c)
            for clips in by_shape.values():
                while clips:
                    free = min(range(n_actors), key=lambda i: calls_in_flight[i])
                    if calls_in_flight[free] >= 2:
                        return
                    batch, frames = [], 0  # as many clips as fit in the batch (padded up to it)
                    while clips and (not batch or frames + clips[0].n_frames <= batch_frames):
                        batch.append(clips.pop(0))
                        frames += batch[-1].n_frames
                    if not clips and frames < batch_frames and not draining:
                        break  # wait for more frames of this shape; other shapes may be ready
                    refs = actors[free].detect.options(num_returns=len(batch)).remote(
                        *[c.frames_ref for c in batch])
                    refs = refs if isinstance(refs, list) else [refs]
                    calls[refs[0]] = free, time.monotonic() + write_timeout  # a call's returns come together
                    calls_in_flight[free] += 1
                    for c, ref in zip(batch, refs):  # each write starts once its clip's faces are found
                        waiting.remove(c)
                        c.deadline, c.call, c.detect_ref = time.monotonic() + write_timeout, refs[0], ref
                        writing[write.remote(config, tmp_dir, detector_name, c.job, c.result, c.frames_ref,
                                             ref)] = c

        detector_name = infos[0]["detector"]
        while True:
            outcomes: list[Outcome] = []
            held = len(waiting) + len(writing)
            while pending and len(decoding) < decode_slots and held < max_held:
                job, notes = pending.pop()
                decoding[decode.remote(config, job, tmp_dir if whole_clips else None)] = _Decoding(job, notes)
                held += 1
            # a partial batch goes when no more frames are coming soon: nothing left to decode but what runs
            send_batches(draining=not pending or held >= max_held)
            if not (decoding or waiting or writing or pending):
                return
            refs = list(decoding) + list(calls) + list(writing)
            ready: set = set()
            if ray.wait(refs, num_returns=1, timeout=POLL, fetch_local=False)[0]:
                ready = set(ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)[0])
            now = time.monotonic()  # a deadline is judged after reading what the task sent before this moment
            for gen, d in list(decoding.items()):
                outcome = read_decode(gen, d) if gen in ready else None
                if outcome is not None:
                    outcomes.append(outcome)
                elif gen in decoding and d.result is None and now > d.deadline:
                    ray.cancel(gen, force=True)
                    del decoding[gen]
                    outcome = abandon(d, f"{d.tried[-1] if d.tried else d.job.decoders[0]} stalled for over "
                                         f"{config.timeout:g} s; killed")
                    if outcome is not None:
                        outcomes.append(outcome)
            for ref, (actor, deadline) in list(calls.items()):
                if ref in ready:
                    del calls[ref]
                    calls_in_flight[actor] -= 1
                elif now > deadline and ref in calls:  # a hung session: restart the actor, its clips to the rerun
                    ray.kill(actors[actor], no_restart=False)
                    stuck = {r for r, (a, _) in calls.items() if a == actor}
                    for r in stuck:
                        del calls[r]
                    calls_in_flight[actor] = 0
                    for w, c in list(writing.items()):
                        if c.call in stuck:
                            ray.cancel(w, force=True)
                            del writing[w]
                            outcomes.append(Outcome(c.job, error=f"the detector did not answer within "
                                                    f"{write_timeout:g} s; restarted", notes=c.notes, retry=True))
            for ref, c in list(writing.items()):
                if ref not in ready:
                    if now > c.deadline:  # a hung detector call or write (a stuck mount): left to the rerun
                        ray.cancel(ref, force=True)
                        del writing[ref]
                        outcomes.append(Outcome(c.job, error=f"detection and writing took over {write_timeout:g} "
                                                f"s; cancelled", notes=c.notes, retry=True))
                    continue
                del writing[ref]
                try:
                    result, node = ray.get(ref)
                except RayTaskError as e:
                    # the detector's failure fails every clip of its call: none of them is to blame for sure
                    detector = detector_failed(c)
                    outcomes.append(Outcome(c.job, error=("detector: " if detector else "") + _last_line(e),
                                            notes=c.notes, retry=detector))
                    continue
                except ray.exceptions.RayError as e:  # its worker, node or detector actor died
                    outcomes.append(Outcome(c.job, error=f"worker died ({type(e).__name__}) while detecting or "
                                            "writing", notes=c.notes, retry=True))
                    continue
                dirty_nodes.add(node)
                outcomes.append(Outcome(c.job, result=result, notes=c.notes))
            yield from outcomes
    finally:
        running = list(decoding) + list(writing)
        for ref in running:
            ray.cancel(ref, force=True)
        for actor in actors:
            ray.kill(actor)
        if running:  # cancelled tasks end (their workers killed) before the build's lock is released
            ray.wait(running, num_returns=len(running), timeout=10)


def _last_line(e: Exception) -> str:
    lines = [line for line in str(e).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(e).__name__


def _actor_failure(e: Exception) -> str:
    """The detector's own error (missing weights, no GPU...) from a dead actor's report."""
    text = str(e)
    for marker in ("DetectorError: ", "Error: "):
        if marker in text:
            return "the detector could not start: " + text.split(marker, 1)[1].strip().splitlines()[0]
    return f"a detector actor died: {_last_line(e)}. Run the same command again to go on"


def sync_nodes(ray, out: str, nodes: set[str], own_node: str) -> None:
    """Make what other nodes wrote durable before it is journaled."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = [n for n in nodes if n != own_node]
    if remote:
        sync = ray.remote(_sync_task)
        refs = [sync.options(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
                .remote(out) for n in remote]
        try:
            ray.get(refs, timeout=SYNC_TIMEOUT)
        except Exception as e:  # noqa: BLE001 - a node gone, its disk failing: the clips it wrote are redone
            raise BuildError(f"the files written on another node could not be made durable ({_last_line(e)}). "
                             "The build stopped; run the same command again: it redoes those clips") from e
    nodes.clear()
