import pandas as pd
import pytest

from ncaer.build.corpus import Clip, Corpus
from ncaer.build.units import LeakageError, assign_groups, fingerprint, resolve_conflicts, verify_disjoint


def clip(rel, split, group=""):
    return Clip(f"/c/{rel}", rel, split, "Happy", group)


def corpus_of(clips, kind="folders", columns=None):
    return Corpus(root="/c", kind=kind, classes=("Happy",), clips=clips, csv_columns=columns or {})


def test_default_unit_is_the_video():
    clips, warnings = assign_groups(corpus_of([clip("train/Happy/0001.avi", "train")]), None)
    assert clips[0].group == "train/Happy/0001" and not warnings


def test_group_by_regex_capture_group():
    c = corpus_of([clip("train/Happy/showA_ep1_0001.avi", "train"), clip("test/Happy/0002.avi", "test")])
    clips, warnings = assign_groups(c, r"/(show\w+?)_ep")
    assert clips[0].group == "showA"
    assert clips[1].group == "test/Happy/0002" and "did not match" in warnings[0]


def test_group_by_csv_column():
    rows = {"a.avi": {"path": "a.avi", "show": "S1"}, "b.avi": {"path": "b.avi", "show": ""}}
    c = corpus_of([clip("a.avi", "train"), clip("b.avi", "test")], kind="csv", columns=rows)
    clips, warnings = assign_groups(c, "show")
    assert [x.group for x in clips] == ["S1", "b"]
    assert len(warnings) == 1


def test_bad_regex_is_reported():
    with pytest.raises(ValueError, match="regular expression"):
        assign_groups(corpus_of([clip("a.avi", "train")]), "(")


def test_unit_in_train_is_removed_from_val_and_test():
    clips = [clip("1.avi", "train", "S1"), clip("2.avi", "test", "S1"), clip("3.avi", "val", "S1"),
             clip("4.avi", "val", "S2"), clip("5.avi", "test", "S2"), clip("6.avi", "test", "S3")]
    kept, conflicts = resolve_conflicts(clips, {})
    assert [c.rel_path for c in kept] == ["1.avi", "4.avi", "6.avi"]
    removed = {k.clip.rel_path: k for k in conflicts}
    assert set(removed) == {"2.avi", "3.avi", "5.avi"}
    assert removed["2.avi"].kept_in == "train" and "S1" in removed["2.avi"].reason
    assert removed["5.avi"].kept_in == "val"


def test_identical_files_are_one_unit_whatever_their_names(tmp_path):
    (tmp_path / "a.avi").write_bytes(b"same video" * 100)
    (tmp_path / "b.avi").write_bytes(b"same video" * 100)
    (tmp_path / "c.avi").write_bytes(b"other video" * 100)
    prints = {n: fingerprint(str(tmp_path / n)) for n in ("a.avi", "b.avi", "c.avi")}
    assert prints["a.avi"] == prints["b.avi"] != prints["c.avi"]
    clips = [clip("a.avi", "train", "a"), clip("b.avi", "test", "b"), clip("c.avi", "test", "c")]
    kept, conflicts = resolve_conflicts(clips, prints)
    assert [c.rel_path for c in kept] == ["a.avi", "c.avi"]
    assert "same file content" in conflicts[0].reason


def test_fingerprint_reads_head_and_tail_of_large_files(tmp_path):
    body = bytearray(300_000)
    (tmp_path / "x").write_bytes(bytes(body))
    body[-1] = 1
    (tmp_path / "y").write_bytes(bytes(body))
    assert fingerprint(str(tmp_path / "x")) != fingerprint(str(tmp_path / "y"))


def test_verify_disjoint():
    ok = pd.DataFrame({"split": ["train", "train", "test"], "video_id": ["a", "a", "b"], "group": ["g", "g", "h"]})
    verify_disjoint(ok)
    leaky = ok.assign(group=["g", "g", "g"])
    with pytest.raises(LeakageError, match="group 'g' in test, train"):
        verify_disjoint(leaky)
