"""`ncaer build` end to end on generated corpora whose frames and faces are known."""

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

from conftest import box_iou, make_corpus, tree_digest
from conftest import build_config as config
from ncaer.build.engine import run_build
from ncaer.build.journal import BuildError
from ncaer.dataset.manifest import COLUMNS, read_manifest
from ncaer.generated.videos import Actor, read_index, render_clip, write_video

REQUIRED = ["sample_id", "split", "label", "label_id", "video_id", "group", "source_path", "segment", "n_segments",
            "frame_index", "timestamp_s", "width", "height", "face_x1", "face_y1", "face_x2", "face_y2",
            "face_score", "n_faces", "detector", "image_path", "face_path", "context_path"]


def test_every_sample_is_the_frame_and_face_the_manifest_names(corpus, reference):
    _, truth = corpus
    out, m = reference.out, reference.manifest
    assert list(m.columns) == list(COLUMNS) and set(REQUIRED) <= set(m.columns)
    assert len(m) == 12 * 5 and m["has_face"].all()
    assert sorted(m["split"].unique()) == ["test", "train", "val"]
    for row in m.itertuples():
        image = cv2.imread(str(out / row.image_path))
        assert read_index(image) == row.frame_index
        assert row.timestamp_s == pytest.approx(row.frame_index / 30.0, abs=1e-3)
        true_box = truth[row.source_path][row.frame_index][0]
        box = (row.face_x1, row.face_y1, row.face_x2, row.face_y2)
        assert box_iou(box, true_box) >= 0.5
        assert (out / row.crop_path).read_text().strip() == ",".join(map(str, box))
        face = cv2.imread(str(out / row.face_path))
        assert face.shape[:2] == (row.face_y2 - row.face_y1, row.face_x2 - row.face_x1)
        context = cv2.imread(str(out / row.context_path))
        masked = context[row.face_y1:row.face_y2, row.face_x1:row.face_x2].astype(int)
        assert masked[3:-3, 3:-3].max() <= 12 and masked.mean() < 4  # black, up to JPEG ringing at the edge
        assert 0 <= row.segment < row.n_segments == 5
    # segments are in order in time within each clip
    for _, clip in m.groupby("video_id"):
        assert clip.sort_values("segment")["frame_index"].is_monotonic_increasing


def test_outputs_next_to_the_manifest(reference):
    out = reference.out
    pd.testing.assert_frame_equal(read_manifest(out), reference.manifest)
    csv = pd.read_csv(out / "manifest.csv")
    assert list(csv.columns) == list(COLUMNS) and len(csv) == len(reference.manifest)
    summary = json.loads((out / "build.json").read_text())
    assert summary["counts"]["per_split"] == {"train": 30, "val": 10, "test": 20}
    assert summary["detector"]["provider"] == "CPUExecutionProvider"
    assert summary["config"]["segments"] == 5 and "decord" in summary["versions"]
    assert pd.read_csv(out / "failures.csv").empty
    assert not (out / ".ncaer" / "tmp").exists()


@pytest.mark.parametrize("workers", [0, 1])
def test_same_dataset_whatever_the_worker_count(corpus, reference, tmp_path, workers):
    root, _ = corpus
    result = run_build(config(root, tmp_path / "out", workers=workers))
    pd.testing.assert_frame_equal(result.manifest, reference.manifest)
    assert tree_digest(result.out) == tree_digest(reference.out)


def test_seed_and_pick_change_the_frames(corpus, reference, tmp_path):
    root, _ = corpus
    other = run_build(config(root, tmp_path / "s1", seed=1, workers=0)).manifest
    assert (other["frame_index"].values != reference.manifest["frame_index"].values).any()
    middle = run_build(config(root, tmp_path / "mid", pick="middle", workers=0)).manifest
    assert set(middle["frame_index"]) == {3, 9, 15, 21, 27}


def _journal_lines(out: Path) -> int:
    path = out / ".ncaer" / "journal.jsonl"
    return sum(1 for _ in open(path)) if path.exists() else 0


@pytest.mark.parametrize("kill_after", [1, 6])
def test_killed_build_resumes_to_the_same_result(corpus, reference, tmp_path, kill_after):
    """Killed once `kill_after` clips have their images: some of them journaled, some (finished within the last
    second, not yet committed) only on disk, to be redone."""
    root, _ = corpus
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ncaer.cli", "build", "--videos", str(root), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while (len(list((out / "images").rglob("*.jpg"))) < 5 * kill_after and proc.poll() is None
           and time.time() < deadline):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: parent, fork server and workers
    proc.wait()
    assert not (out / "manifest.parquet").exists()
    done_before = _journal_lines(out)
    assert done_before < 12
    with open(out / ".ncaer" / "journal.jsonl", "a") as f:
        f.write("null\n")  # not a record: reported and skipped
        f.write('{"key": "torn line of a killed write')  # cut off before anything is appended
    result = run_build(config(root, out))
    assert result.summary["counts"]["clips_resumed"] == done_before
    assert [r.split(":")[0] for r in result.summary["journal_repairs"]] == [
        "journal", f"journal line {done_before + 1}"]
    pd.testing.assert_frame_equal(result.manifest, reference.manifest)
    assert tree_digest(out) == tree_digest(reference.out)
    assert not list(out.rglob("*.part"))
    # no record of the resumed run was glued onto the torn line and lost: a rerun has every clip journaled
    again = run_build(config(root, out))
    assert again.summary["counts"]["clips_resumed"] == 12
    pd.testing.assert_frame_equal(again.manifest, reference.manifest)


def test_a_second_build_on_the_same_folder_is_refused_while_the_first_runs(corpus, reference, tmp_path):
    root, _ = corpus
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ncaer.cli", "build", "--videos", str(root), "--out", str(out), "--workers", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not list((out / "images").rglob("*.jpg")) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the first build ended before the second started"
        with pytest.raises(BuildError, match=f"another ncaer build is writing to {out} \\(pid {proc.pid} "):
            run_build(config(root, out))
        with pytest.raises(BuildError, match="another ncaer build"):
            run_build(config(root, out), overwrite=True)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert tree_digest(out) == tree_digest(reference.out)
    pd.testing.assert_frame_equal(read_manifest(out), reference.manifest)
    run_build(config(root, out))  # the lock went with the first build


def test_a_build_of_another_ncaer_version_is_not_resumed(corpus, reference, monkeypatch):
    import ncaer

    monkeypatch.setattr(ncaer, "__version__", "9.9.9")
    with pytest.raises(BuildError, match="ncaer version .* differ"):
        run_build(config(corpus[0], reference.out))


def test_outputs_follow_the_umask(corpus, tmp_path):
    """Not 0600 (what mkstemp makes): a shared training job, or a colleague, must be able to read the dataset.
    Run as users run it, a fresh process with its own umask (this process's fork server keeps the umask of
    the moment it started)."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "ncaer.cli", "build", "--videos", str(corpus[0]), "--out", str(out), "--limit", "1"]
    subprocess.run(cmd, check=True, capture_output=True, preexec_fn=lambda: os.umask(0o002))
    files = [p for p in out.rglob("*") if p.is_file() and ".ncaer" not in p.parts]
    assert len(files) > 10
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o664)}


def test_resume_refuses_a_build_with_other_options(corpus, reference):
    root, _ = corpus
    with pytest.raises(BuildError, match="segments"):
        run_build(config(root, reference.out, segments=3))


def test_out_folder_that_is_not_a_build_is_refused(corpus, tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(BuildError, match="not empty"):
        run_build(config(corpus[0], tmp_path))
    assert (tmp_path / "thesis.tex").exists()


def test_bad_inputs_are_reported_and_the_build_goes_on(bad_corpus, tmp_path):
    result = run_build(config(bad_corpus, tmp_path / "out"))
    f = result.failures
    by_file = {p: g for p, g in f.groupby("source_path")}
    for name in ("empty", "corrupt", "text", "tiny"):
        rows = by_file[f"train/Happy/{name}.{'mp4' if name == 'text' else 'avi'}"]
        assert (rows["outcome"] == "skipped").all() and rows["reason"].str.len().min() > 5
    assert "unreadable" in by_file["train/Happy/unreadable.avi"]["reason"].iloc[0]
    assert "not valid UTF-8" in by_file["train/Happy/caf\\xe9.avi"]["reason"].iloc[0]
    assert "frames too small" in " ".join(by_file["train/Happy/tiny.avi"]["reason"])
    one = by_file["train/Happy/one_frame.avi"]
    assert (one["outcome"] == "used").all() and "only 1 frame" in one["reason"].iloc[0]
    truncated = by_file["train/Happy/truncated.avi"]
    assert truncated["reason"].str.contains("truncated|stopped|damaged|fewer", regex=True).any()
    m = result.manifest.set_index("source_path")
    assert len(m.loc[["train/Happy/one_frame.avi"]]) == 1
    odd = m.loc["train/Happy/odd_size.avi"]
    assert (odd["width"] == 301).all() and (odd["height"] == 177).all() and len(odd) == 5
    image = cv2.imread(str(result.out / odd["image_path"].iloc[0]))
    assert image.shape[:2] == (177, 301)
    assert read_index(image) == odd["frame_index"].iloc[0]
    assert len(m.loc[["train/Happy/0001.avi"]]) == 5  # good clips are untouched


def test_strict_stops_at_the_first_failure(bad_corpus, tmp_path):
    shutil.copytree(bad_corpus, tmp_path / "c", symlinks=True)
    (tmp_path / "c" / "train" / "Happy" / "unreadable.avi").unlink()
    with pytest.raises(BuildError, match="--strict"):
        run_build(config(tmp_path / "c", tmp_path / "out", strict=True))


def test_split_conflicts_are_resolved_and_reported(corpus, tmp_path):
    root = tmp_path / "c"
    shutil.copytree(corpus[0], root)
    # a copy of a training clip hidden in test, and two clips of "show7" in train and val
    shutil.copy(root / "train/Happy/0001.avi", root / "test/Happy/copy.avi")
    shutil.move(root / "train/Sad/0004.avi", root / "train/Sad/show7_a.avi")
    shutil.move(root / "validation/Sad/0008.avi", root / "validation/Sad/show7_b.avi")
    result = run_build(config(root, tmp_path / "out", group_by=r"(show\d+)_"))
    split_rows = result.failures[result.failures["stage"] == "split"].set_index("source_path")
    assert set(split_rows.index) == {"test/Happy/copy.avi", "validation/Sad/show7_b.avi"}
    assert "same file content" in split_rows.loc["test/Happy/copy.avi", "reason"]
    assert "'show7' also gives frames to train" in split_rows.loc["validation/Sad/show7_b.avi", "reason"]
    m = result.manifest
    assert (m.groupby("group")["split"].nunique() == 1).all()
    assert (m.groupby("source_fingerprint")["split"].nunique() == 1).all()
    assert result.summary["counts"]["clips_removed_for_disjointness"] == 2


@pytest.fixture(scope="module")
def faceless_corpus(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("faceless")
    make_corpus(root, {"train": {"Happy": 1}}, photos)
    frames, _ = render_clip(30, size=(356, 200))  # scenery only
    write_video(root / "train" / "Happy" / "empty_room.avi", frames)
    return root


def test_no_face_keep(faceless_corpus, tmp_path):
    result = run_build(config(faceless_corpus, tmp_path / "out", no_face="keep", workers=0))
    m = result.manifest
    room = m[m["source_path"] == "train/Happy/empty_room.avi"]
    assert len(room) == 5 and not room["has_face"].any() and room["face_x1"].isna().all()
    assert (room["face_path"] == "").all() and room["face_score"].isna().all()
    row = room.iloc[0]
    assert (result.out / row["crop_path"]).read_text() == ""
    image = cv2.imread(str(result.out / row["image_path"]))
    context = cv2.imread(str(result.out / row["context_path"]))
    assert np.abs(image.astype(int) - context).max() == 0  # context left unmasked


def test_no_face_drop(faceless_corpus, tmp_path):
    result = run_build(config(faceless_corpus, tmp_path / "out", no_face="drop", workers=0))
    assert result.manifest["has_face"].all() and len(result.manifest) == 5
    reason = result.failures.set_index("source_path").loc["train/Happy/empty_room.avi", "reason"]
    assert "no face found" in reason
    assert result.summary["counts"]["frames_without_face_dropped"] == 5


def test_csv_corpus(corpus, tmp_path):
    root, _ = corpus
    listing = tmp_path / "list.csv"
    listing.write_text("path,label,split,group\n"
                       f"{root}/train/Happy/0001.avi,joy,train,s1\n"
                       f"{root}/train/Sad/0004.avi,gloom,train,s2\n"
                       f"{root}/test/Sad/0011.avi,gloom,test,s2\n"
                       f"{root}/test/Happy/0009.avi,joy,test,s3\n")
    result = run_build(config(listing, tmp_path / "out", workers=0))
    m = result.manifest
    assert sorted(m["label"].unique()) == ["gloom", "joy"]
    assert dict(zip(m["label"], m["label_id"])) == {"gloom": 0, "joy": 1}
    assert set(m["group"]) == {"s1", "s2", "s3"} and len(m) == 15  # 0011 shares s2 with train: removed
    assert (result.out / "images" / "test" / "joy").is_dir()


def test_the_subject_is_the_person_the_clip_is_about_not_a_poster(photos, tmp_path):
    """A 150 px subject who leaves the frame for the last fifth of the clip, and a small poster face on the
    wall in every frame: the subject is chosen where visible, and where not, no face is masked (not the poster)."""
    subject = Actor(photos[1], 150.0, (0.35, 0.5), (0.45, 0.5))
    poster = Actor(photos[0], 50.0, (0.85, 0.2), (0.85, 0.2))
    n = 60
    with_subject, boxes = render_clip(n, actors=(poster, subject), seed=3)
    without, _ = render_clip(n, actors=(poster,), seed=3)
    gone = range(4 * n // 5, n)  # the subject is off screen for the last fifth
    frames = [without[i] if i in gone else with_subject[i] for i in range(n)]
    video = tmp_path / "videos" / "test" / "Happy" / "0001.mp4"
    video.parent.mkdir(parents=True)
    write_video(video, frames, codec="h264")
    result = run_build(config(tmp_path / "videos", tmp_path / "out", pick="middle", workers=0))
    m = result.manifest.sort_values("frame_index")
    # both faces are found where both are on screen, the poster alone in the last fifth
    assert list(m["n_faces"]) == [2, 2, 2, 2, 1]
    for row in m.itertuples():
        if row.frame_index in gone:
            assert not row.has_face, "the poster was taken for the subject"
        else:
            poster_box, subject_box = boxes[row.frame_index]
            found = (row.face_x1, row.face_y1, row.face_x2, row.face_y2)
            assert box_iou(found, subject_box) > 0.5, f"frame {row.frame_index}: not the subject"


def _mount_tmpfs(path: Path, size: int) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def _disk_usage(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_a_full_disk_stops_the_build_and_the_rerun_after_freeing_space_ends_as_an_uninterrupted_one(
        corpus, reference, tmp_path):
    """On a real full filesystem (a tmpfs a little over half the dataset's size), with worker processes."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, _disk_usage(reference.out) // 2):
        pytest.skip("needs root and tmpfs to make a small filesystem (the next test injects the failure instead)")
    try:
        out = disk / "out"
        with pytest.raises(BuildError, match="No space left on device.*run the same command again"):
            run_build(config(corpus[0], out))
        assert _journal_lines(out) < 12  # the clips finished in its last second may not fit in the journal either
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        result = run_build(config(corpus[0], out))
        pd.testing.assert_frame_equal(result.manifest, reference.manifest)
        assert tree_digest(out) == tree_digest(reference.out)
        assert not list(out.rglob("*.part")) and result.failures.empty
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_failed_write_stops_the_build_and_the_rerun_ends_as_an_uninterrupted_one(
        corpus, reference, tmp_path, monkeypatch):
    """The same in this process, wherever a small filesystem cannot be made: the 23rd file write fails."""
    import errno

    import ncaer.build.clip

    real = ncaer.build.clip.write_bytes
    calls = []

    def fills_up(path, data, tmp_dir):
        calls.append(path)
        if len(calls) > 22:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(path, data, tmp_dir)

    out = tmp_path / "out"
    monkeypatch.setattr(ncaer.build.clip, "write_bytes", fills_up)
    with pytest.raises(BuildError, match="No space left on device.*run the same command again"):
        run_build(config(corpus[0], out, workers=0))
    assert len(calls) == 23 and _journal_lines(out) == 1  # one clip is 20 files; the second was cut short
    monkeypatch.setattr(ncaer.build.clip, "write_bytes", real)
    result = run_build(config(corpus[0], out, workers=0))
    assert result.summary["counts"]["clips_resumed"] == 1
    pd.testing.assert_frame_equal(result.manifest, reference.manifest)
    assert tree_digest(out) == tree_digest(reference.out)


def test_clips_the_machine_failed_are_not_journaled_and_the_rerun_builds_them(corpus, reference, tmp_path,
                                                                              monkeypatch):
    """The pool gives up a clip with `retry` when its last decoder stalled or its worker was SIGKILLed
    (tests/test_pool.py); such a clip is reported, left out of the journal, and built by the next run."""
    import ncaer.build.engine
    from ncaer.build.pool import Outcome, run_jobs

    stalled = "train/Happy/0001.avi"

    def loaded_machine(jobs, *args, **kw):
        jobs = list(jobs)
        yield Outcome(next(j for j in jobs if j.key == stalled), error="pyav stalled for over 30 s; killed",
                      notes=("decord stalled for over 30 s; killed",), retry=True)
        yield from run_jobs([j for j in jobs if j.key != stalled], *args, **kw)

    out = tmp_path / "out"
    monkeypatch.setattr(ncaer.build.engine, "run_jobs", loaded_machine)
    first = run_build(config(corpus[0], out))
    assert first.summary["counts"]["clips_to_retry"] == 1 and stalled not in set(first.manifest["source_path"])
    retry = first.failures[first.failures["outcome"] == "retry"]
    assert set(retry["source_path"]) == {stalled} and len(retry) == 2
    monkeypatch.setattr(ncaer.build.engine, "run_jobs", run_jobs)
    second = run_build(config(corpus[0], out))
    assert second.summary["counts"]["clips_resumed"] == 11 and second.summary["counts"]["clips_to_retry"] == 0
    pd.testing.assert_frame_equal(second.manifest, reference.manifest)
    assert tree_digest(out) == tree_digest(reference.out) and second.failures.empty


def test_a_resume_on_another_execution_provider_is_refused(corpus, reference):
    """The provider the first worker reported is recorded; TensorRT (fp16) boxes differ from the CPU's."""
    from ncaer.build.journal import check_provider

    saved = json.loads((reference.out / ".ncaer" / "config.json").read_text())
    assert saved["provider"] == "CPUExecutionProvider"
    check_provider(reference.out, "CPUExecutionProvider")
    with pytest.raises(BuildError, match="detected with CPUExecutionProvider; this run would use Tensorrt"):
        check_provider(reference.out, "TensorrtExecutionProvider")


def test_a_clip_relabelled_in_the_csv_is_redone_on_resume(corpus, tmp_path):
    """The rerun after a CSV edit ends as a fresh build of the edited CSV, with no file of the old label left."""
    root, _ = corpus
    rows = [f"{root}/train/Happy/0001.avi,joy,train", f"{root}/train/Sad/0004.avi,gloom,train",
            f"{root}/test/Happy/0009.avi,joy,test"]
    listing = tmp_path / "list.csv"
    listing.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    run_build(config(listing, out, workers=0))
    rows[2] = rows[2].replace(",joy,", ",gloom,")
    listing.write_text("path,label,split\n" + "\n".join(rows) + "\n")
    resumed = run_build(config(listing, out, workers=0))
    assert resumed.summary["counts"]["clips_resumed"] == 2
    fresh = run_build(config(listing, tmp_path / "fresh", workers=0))
    pd.testing.assert_frame_equal(resumed.manifest, fresh.manifest)
    assert tree_digest(out) == tree_digest(fresh.out)  # the files written under test/joy are gone


def test_an_output_folder_that_cannot_be_written_is_a_clear_error(corpus, tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BuildError, match="cannot write .*afile"):
        run_build(config(corpus[0], tmp_path / "afile" / "out"))


def test_after_a_failed_sync_nothing_more_is_journaled(tmp_path):
    """syncfs reports a write-back error once: a commit after a failed one would journal clips whose files
    may be lost. The failed commit's clips, and any later ones, are left to the rerun."""
    from ncaer.build.journal import Journal

    (tmp_path / ".ncaer").mkdir()
    failures = [OSError(5, "Input/output error")]

    def sync_other_nodes():
        if failures:
            raise failures.pop()

    with pytest.raises(OSError, match="Input/output"), Journal(tmp_path) as journal:
        journal.before_commit = sync_other_nodes
        journal.add({"key": "a", "rows": []})
        with pytest.raises(OSError, match="Input/output"):
            journal.commit()
        journal.add({"key": "b", "rows": []})
        journal.commit()  # the other nodes sync now, but this run's syncs can no longer be trusted
    assert (tmp_path / ".ncaer" / "journal.jsonl").read_text() == ""
