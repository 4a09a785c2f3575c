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
        ("clips/b.avi", "anger", "val", "show2"),
        ("clips/b.avi", "fear", "test", "show2"),
    ]
    reasons = sorted(r.reason for r in corpus.rejected)
    assert reasons == ["file not found", "unknown split 'holdout'"]


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
