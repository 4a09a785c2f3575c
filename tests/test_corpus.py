import pytest

from ncaer.build.corpus import Clip, CorpusError, clip_names, scan


def touch(root, rel, data=b"x"):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_caer_layout_with_aliases_cases_and_junk(tmp_path):
    touch(tmp_path, "train/Happy/0001.avi")
    touch(tmp_path, "train/Happy/0002.MP4")
    touch(tmp_path, "Validation/SAD/0001.mkv")
    touch(tmp_path, "test/surprise/0001.Mov")
    touch(tmp_path, "train/Happy/.DS_Store")
    touch(tmp_path, "train/Happy/notes.txt")
    touch(tmp_path, "train/Contempt/0001.avi")
    touch(tmp_path, "test/Thumbs.db")
    touch(tmp_path, "README.md")
    corpus = scan(tmp_path)
    assert corpus.kind == "folders"
    got = {(c.rel_path, c.split, c.label) for c in corpus.clips}
    assert got == {
        ("train/Happy/0001.avi", "train", "Happy"),
        ("train/Happy/0002.MP4", "train", "Happy"),
        ("Validation/SAD/0001.mkv", "val", "Sad"),
        ("test/surprise/0001.Mov", "test", "Surprise"),
    }
    reasons = {r.path: r.reason for r in corpus.rejected}
    assert reasons["train/Happy/.DS_Store"] == "junk file"
    assert "not a video" in reasons["train/Happy/notes.txt"]
    assert "unknown class folder" in reasons["train/Contempt"]
    assert "not a split folder" in reasons["README.md"]
    assert corpus.label_id("Anger") == 0 and corpus.label_id("Surprise") == 6


def test_not_a_corpus_says_what_was_expected(tmp_path):
    touch(tmp_path, "videos/a.avi")
    with pytest.raises(CorpusError, match=r"expected either the CAER folder layout"):
        scan(tmp_path)
    touch(tmp_path, "train/readme.txt")
    with pytest.raises(CorpusError, match="no class folders"):
        scan(tmp_path)
    with pytest.raises(CorpusError, match="does not exist"):
        scan(tmp_path / "nope")


def test_two_folders_for_one_split_is_an_error(tmp_path):
    touch(tmp_path, "val/Happy/1.avi")
    touch(tmp_path, "validation/Happy/1.avi")
    with pytest.raises(CorpusError, match="same split"):
        scan(tmp_path)


def test_csv_listing(tmp_path):
    touch(tmp_path, "clips/a.mp4")
    touch(tmp_path, "clips/b.avi")
    touch(tmp_path, "clips/c.avi")
    listing = tmp_path / "list.csv"
    listing.write_text(
        "path,label,split,group\n"
        "clips/a.mp4,joy,train,show1\n"
        "clips/b.avi,anger,Validation,show2\n"
        "clips/c.avi,joy,holdout,show3\n"
        "clips/missing.avi,joy,test,show4\n"
        "clips/b.avi,fear,test,show2\n"
    )
    corpus = scan(listing)
    assert corpus.kind == "csv"
    assert corpus.classes == ("anger", "fear", "joy")
    assert [(c.rel_path, c.label, c.split, c.group) for c in corpus.clips] == [
        ("clips/a.mp4", "joy", "train", "show1"),
    ]
    conflict = "listed with conflicting label/split/group: anger/val/show2 (line 3), fear/test/show2 (line 6)"
    reasons = sorted(r.reason for r in corpus.rejected)
    assert reasons == ["file not found", conflict, conflict, "unknown split 'holdout'"]


def test_csv_without_required_columns(tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("file,emotion\na.avi,joy\n")
    with pytest.raises(CorpusError, match="lacks column"):
        scan(listing)


def test_csv_with_caer_labels_keeps_reference_order(tmp_path):
    touch(tmp_path, "a.avi")
    listing = tmp_path / "list.csv"
    listing.write_text("path,label,split\na.avi,happy,train\n")
    corpus = scan(listing)
    assert corpus.clips[0].label == "Happy" and corpus.label_id("Happy") == 3


def test_clip_names_are_unique_within_split_and_class():
    clips = [
        Clip("/x/a/1.avi", "a/1.avi", "train", "Happy"),
        Clip("/x/b/1.avi", "b/1.avi", "train", "Happy"),
        Clip("/x/c/1.avi", "c/1.avi", "test", "Happy"),
        Clip("/x/c/my clip.avi", "c/my clip.avi", "test", "Happy"),
    ]
    names = clip_names(clips)
    assert names["c/1.avi"] == "1"
    assert names["a/1.avi"] != names["b/1.avi"] and names["a/1.avi"].startswith("1-")
    assert " " not in names["c/my clip.avi"]


def scan_listing(root, *rows: str):
    """scan() of a CSV listing v/a.mp4 and v/b.mp4 in the given rows (line 2 on)."""
    touch(root, "v/a.mp4")
    touch(root, "v/b.mp4")
    (root / "list.csv").write_text("path,label,split\n" + "".join(f"{r}\n" for r in rows))
    return scan(root / "list.csv")


def test_csv_duplicate_rows_are_reported_by_line_and_listed_once(tmp_path):
    corpus = scan_listing(tmp_path, "v/a.mp4,Happy,train", "v/b.mp4,Sad,test", "./v/a.mp4,happy,train")
    assert sorted(c.rel_path for c in corpus.clips) == ["v/a.mp4", "v/b.mp4"]
    assert [(r.path, r.reason) for r in corpus.rejected] == [("v/a.mp4 (line 4)", "duplicate of line 2")]


def test_csv_path_with_two_labels_is_skipped_and_both_lines_reported(tmp_path):
    corpus = scan_listing(tmp_path, "v/a.mp4,Happy,train", "v/b.mp4,Sad,test", "v/a.mp4,Sad,train", "v/b.mp4,Sad,val")
    assert corpus.clips == []
    reasons = {r.path: r.reason for r in corpus.rejected}
    assert reasons == {
        "v/a.mp4 (line 2)": "listed with conflicting label/split: Happy/train (line 2), Sad/train (line 4)",
        "v/a.mp4 (line 4)": "listed with conflicting label/split: Happy/train (line 2), Sad/train (line 4)",
        "v/b.mp4 (line 3)": "listed with conflicting label/split: Sad/test (line 3), Sad/val (line 5)",
        "v/b.mp4 (line 5)": "listed with conflicting label/split: Sad/test (line 3), Sad/val (line 5)",
    }


def test_a_file_name_that_is_not_utf8_is_reported_and_the_rest_is_scanned(tmp_path):
    import os

    touch(tmp_path, "train/Happy/0001.avi")
    bad = os.path.join(os.fsencode(tmp_path), b"train", b"Happy", b"clip-\xe9t\xe9.avi")
    with open(bad, "wb") as f:
        f.write(b"x")
    corpus = scan(tmp_path)
    assert [c.rel_path for c in corpus.clips] == ["train/Happy/0001.avi"]
    [rejected] = corpus.rejected
    assert rejected.path == "train/Happy/clip-\\xe9t\\xe9.avi"
    assert rejected.reason == "file name is not valid UTF-8; rename it"
    rejected.path.encode("utf-8")  # printable and writable to failures.csv


def _scan_error_as_unprivileged(root) -> str:
    """scan(root)'s CorpusError message, in a forked child that drops root (whom chmod does not stop)."""
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no exec, so the interpreter's own location need not be readable
        message = "no error"
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            scan(root)
        except CorpusError as e:
            message = str(e)
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            message = f"{type(e).__name__}: {e}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        message = f.read()
    os.waitpid(pid, 0)
    return message


def test_an_unreadable_class_folder_is_a_clear_error():
    """A real permission denial. Path.rglob skips an unreadable folder in silence: the class went missing."""
    import shutil
    import tempfile
    from pathlib import Path

    root = Path(tempfile.mkdtemp())  # outside pytest's root-only temp folder, so another user can reach it
    try:
        root.chmod(0o755)
        touch(root, "train/Happy/0001.avi")
        touch(root, "train/Sad/0001.avi")
        (root / "train" / "Sad").chmod(0)
        assert _scan_error_as_unprivileged(root) == f"cannot read {root}/train/Sad: Permission denied"
    finally:
        (root / "train" / "Sad").chmod(0o755)
        shutil.rmtree(root)
