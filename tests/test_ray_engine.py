"""`ncaer build --engine ray` against the local engine, on a local Ray cluster (2 CPUs, then a second node).

Ray starts once for the module (about 5 s); each build then costs a second or two."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from conftest import build_config, tree_digest
from ncaer.build.engine import run_build
from ncaer.build.journal import BuildError
from ncaer.build.pool import WorkerInitError
from ncaer.generated.videos import Actor, read_index, render_clip, write_video

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

TESTS = str(Path(__file__).parent)


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    ray.init(address=c.address, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": TESTS}, "worker_process_setup_hook": "ray_hooks.install"})
    yield c
    ray.shutdown()
    c.shutdown()


def ray_config(videos, out, **kw):
    return build_config(videos, out, engine="ray", **kw)


def same_build(result, reference):
    pd.testing.assert_frame_equal(result.manifest, reference.manifest)
    assert tree_digest(result.out) == tree_digest(reference.out)
    pd.testing.assert_frame_equal(result.failures, reference.failures)
    assert result.summary["counts"] == reference.summary["counts"]


@pytest.mark.parametrize("actors", [None, 2])
def test_the_ray_build_is_the_local_build(cluster, corpus, reference, tmp_path, actors):
    """Without GPUs a task does the whole clip; --detector-actors runs the GPU pipeline's stages (decode task,
    detector actor, write task) on CPU actors."""
    result = run_build(ray_config(corpus[0], tmp_path / "out", detector_actors=actors))
    same_build(result, reference)
    summary = json.loads((result.out / "build.json").read_text())
    assert summary["engine"]["name"] == "ray" and summary["engine"]["cpus"] == 2
    assert summary["detector"]["provider"] == "CPUExecutionProvider"
    assert reference.summary["engine"] == {"name": "local", "workers": 2}
    assert not (result.out / ".ncaer" / "tmp").exists()


@pytest.mark.parametrize("actors", [None, 2])
def test_group_by_identity_on_ray_is_the_local_build(cluster, actors_corpus, tmp_path, actors):
    """Both Ray modes embed in the tasks that write the files, so the identity units come out the same."""
    pytest.importorskip("dlib")
    local = run_build(build_config(actors_corpus[0], tmp_path / "local", group_by="identity", classes=("Happy",)))
    on_ray = run_build(ray_config(actors_corpus[0], tmp_path / "ray", group_by="identity", classes=("Happy",),
                                  detector_actors=actors))
    same_build(on_ray, local)
    assert on_ray.summary["identity"] == local.summary["identity"]
    assert on_ray.summary["counts"]["clips_removed_for_actor_disjointness"] == 4


def test_bad_inputs_are_reported_as_the_local_engine_reports_them(cluster, bad_corpus, tmp_path):
    local = run_build(build_config(bad_corpus, tmp_path / "local"))
    on_ray = run_build(ray_config(bad_corpus, tmp_path / "ray"))
    same_build(on_ray, local)
    assert len(on_ray.failures) > 8


def test_a_killed_ray_driver_resumes_to_the_uninterrupted_build(cluster, corpus, reference, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ncaer.cli", "build", "--videos", str(corpus[0]), "--out", str(out),
           "--engine", "ray", "--ray-address", cluster.address]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while len(list((out / "images").rglob("*.jpg"))) < 15 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)  # the driver alone: Ray itself cleans up its tasks and actors
    proc.wait()
    assert not (out / "manifest.parquet").exists()
    journaled = sum(1 for _ in open(out / ".ncaer" / "journal.jsonl")) if (out / ".ncaer/journal.jsonl").exists() else 0
    assert journaled < 12
    result = run_build(ray_config(corpus[0], out))
    assert result.summary["counts"]["clips_resumed"] == journaled
    pd.testing.assert_frame_equal(result.manifest, reference.manifest)
    assert tree_digest(out) == tree_digest(reference.out)
    assert not list(out.rglob("*.part"))


def test_a_stalled_or_crashing_decoder_hands_the_clip_to_the_fallback(cluster, corpus, reference, tmp_path):
    """decord stalls on *stall* files and kills its worker on *crash* ones (tests/ray_hooks.py): the task is
    cancelled past its deadline, or found dead, and a new task decodes the clip with PyAV."""
    root = tmp_path / "c"
    shutil.copytree(corpus[0], root)
    shutil.move(root / "train/Happy/0001.avi", root / "train/Happy/0001-stall.avi")
    shutil.move(root / "train/Sad/0004.avi", root / "train/Sad/0004-crash.avi")
    shutil.move(root / "test/Sad/0011.avi", root / "test/Sad/0011-crash-all.avi")
    started = time.monotonic()
    result = run_build(ray_config(root, tmp_path / "out", timeout=2.0))
    assert time.monotonic() - started < 60
    m = result.manifest.set_index("source_path")
    for clip in ("train/Happy/0001-stall.avi", "train/Sad/0004-crash.avi"):
        assert (m.loc[clip, "decoder"] == "pyav").all() and len(m.loc[clip]) == 5
    f = result.failures.set_index("source_path")
    assert "decord stalled for over 2 s; killed" in f.loc["train/Happy/0001-stall.avi", "reason"]
    assert "worker died" in f.loc["train/Sad/0004-crash.avi", "reason"]
    # both decoders crash: Ray does not say by which signal, so the last one is tried once more (an OOM kill
    # would pass), and its second crash is final, as a local worker's SIGSEGV is
    crashed = f.loc[["test/Sad/0011-crash-all.avi"]]
    assert list(crashed["reason"].str.extract(r"while using (\w+)")[0]) == ["decord", "pyav", "pyav"]
    assert (crashed["outcome"] == "skipped").all()
    assert result.summary["counts"]["clips_to_retry"] == 0
    assert "test/Sad/0011-crash-all.avi" not in m.index
    # the fallback's frames are the frames the manifest names
    for row in m.loc[["train/Happy/0001-stall.avi", "train/Sad/0004-crash.avi"]].itertuples():
        assert read_index(cv2.imread(str(result.out / row.image_path))) == row.frame_index


def test_a_failing_or_hung_detector_leaves_its_clips_to_the_rerun(cluster, corpus, reference, tmp_path, photos):
    """The detector actor raises on one clip and hangs on another (tests/ray_hooks.py): neither clip is
    recorded as a final failure, the hung actor is restarted, and the build ends."""
    root = tmp_path / "c"
    shutil.copytree(corpus[0], root)
    for width in (302, 304):
        frames, _ = render_clip(12, size=(width, 200), actors=(Actor(photos[0], 60, (.5, .5), (.5, .5)),))
        write_video(root / f"train/Happy/w{width}.avi", frames)
    started = time.monotonic()
    result = run_build(ray_config(root, tmp_path / "out", timeout=2.0, detector_actors=1))
    assert time.monotonic() - started < 90
    retry = result.failures[result.failures["outcome"] == "retry"].set_index("source_path")["reason"]
    assert "detector: " in retry["train/Happy/w302.avi"] and "out of memory" in retry["train/Happy/w302.avi"]
    assert "did not answer within 8 s; restarted" in retry["train/Happy/w304.avi"]
    assert result.summary["counts"]["clips_failed"] == 0
    # the clips the actor served before and after its restart are the reference's
    built = result.manifest.set_index("sample_id")
    ref = reference.manifest.set_index("sample_id").loc[built.index]
    pd.testing.assert_frame_equal(built, ref)
    # clips queued on the actor behind the hung call are left to the rerun with it, the others are built
    assert len(built) >= 5 * 8, retry.to_dict()


@pytest.mark.parametrize("actors", [None, 1])
def test_a_detector_that_cannot_start_is_a_clear_error(cluster, corpus, tmp_path, actors):
    with pytest.raises(WorkerInitError, match="detector could not start: SCRFD model '/nonexistent.onnx' not found"):
        run_build(ray_config(corpus[0], tmp_path / "out", detector="scrfd", detector_model="/nonexistent.onnx",
                             detector_actors=actors))


def test_a_node_that_cannot_see_the_corpus_is_named(cluster, corpus, tmp_path):
    from ncaer.build import ray_engine

    out = tmp_path / "out"
    (out / ".ncaer" / "tmp").mkdir(parents=True)  # as the build has prepared it
    state = ray_engine.connect(None)
    with pytest.raises(BuildError, match=r"node .*: cannot read the corpus file /nonexistent/clip\.avi"):
        ray_engine.check_nodes(ray, state, out, "/nonexistent/clip.avi")
    ray_engine.check_nodes(ray, state, out, str(corpus[0] / "train/Happy/0001.avi"))
    assert [p.name for p in (out / ".ncaer").rglob("*")] == ["tmp"]  # the token and the written probe removed


def test_two_nodes_build_the_same_dataset(cluster, corpus, reference, tmp_path, monkeypatch):
    """A second raylet on this machine stands in for a second machine. It declares a GPU, so the staged
    pipeline runs: decode tasks on both nodes, the detector actor on the second (its session on the CPU, with
    several clips per call), write tasks where Ray puts them; the second node's files are synced before
    every journal commit, the last one included."""
    from ncaer.build import journal, ray_engine

    commits, synced = [], []
    commit, sync_nodes = journal.Journal.commit, ray_engine.sync_nodes
    monkeypatch.setattr(journal.Journal, "commit", lambda self: commits.append(
        (len(self._pending), self.before_commit is not None)) or commit(self))
    monkeypatch.setattr(ray_engine, "sync_nodes", lambda ray, out, nodes, own: synced.append(
        set(nodes) - {own}) or sync_nodes(ray, out, nodes, own))
    node = cluster.add_node(num_cpus=1, num_gpus=1)
    cluster.wait_for_nodes()
    try:
        result = run_build(ray_config(corpus[0], tmp_path / "out"))
        with pytest.raises(BuildError, match="a detector actor holds a GPU and the cluster has 1"):
            run_build(ray_config(corpus[0], tmp_path / "other", detector_actors=2))
    finally:
        cluster.remove_node(node)
    assert result.summary["engine"]["nodes"] == 2 and result.summary["engine"]["gpus"] == 1
    same_build(result, reference)
    assert all(hooked for pending, hooked in commits if pending)
    assert any(remote for remote in synced)  # the second node wrote files, and they were synced


def test_an_unreachable_cluster_is_a_clear_error_at_once(cluster):
    from ncaer.build import ray_engine

    started = time.monotonic()
    with pytest.raises(BuildError, match="no Ray cluster answers at 127.0.0.1:1"):
        ray_engine.connect("127.0.0.1:1")
    with pytest.raises(BuildError, match="Ray Client"):
        ray_engine.connect("ray://127.0.0.1:10001")
    assert time.monotonic() - started < 30


def test_without_ray_the_engine_names_the_install_command(corpus, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ncaer.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    got = CliRunner().invoke(main, ["build", "--videos", str(corpus[0]), "--out", str(tmp_path / "out"),
                                    "--engine", "ray"])
    assert got.exit_code == 1 and 'pip install "ncaer[ray]"' in got.output and "Traceback" not in got.output


def test_gpu_batches_have_one_shape_and_do_not_change_a_frames_boxes(photos):
    """On a GPU every call is GPU_BATCH frames letterboxed into det_size x det_size. Run that path on the CPU
    session: frames of either aspect, in batches split and padded, get the boxes each gets alone."""
    from ncaer.faces.base import GPU_BATCH
    from ncaer.faces.detectors import create_detector
    from ncaer.generated.videos import Actor, render_clip

    detector = create_detector("centerface", device="cpu")
    shapes = []
    run = detector.session.run
    detector.session.run = lambda names, feed: shapes.append(next(iter(feed.values())).shape) or run(names, feed)
    detector.provider = "CUDAExecutionProvider"  # the GPU path, on the CPU session
    wide, _ = render_clip(3, size=(356, 200), actors=(Actor(photos[0], 60, (.4, .5), (.6, .5)),))
    tall, _ = render_clip(2, size=(240, 320), actors=(Actor(photos[1], 50, (.5, .4), (.5, .6)),))
    many = detector.detect(list(wide) * 25)  # 75 frames: a full call and a padded one
    assert len(many) == 75 and len(shapes) == 2
    together = many[:3] + detector.detect(list(tall))
    alone = [detector.detect([frame])[0] for frame in [*wide, *tall]]
    assert set(shapes) == {(GPU_BATCH, 3, 384, 384)}
    for a, b in zip(together, alone):
        assert len(a) >= 1
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(many[72], alone[0])
