"""Identity embeddings and actor clusters on real face photos that ship inside packages: insightface's
sample images (a group photo of six people, and Tom Hanks), scikit-image's astronaut and matplotlib's
Grace Hopper: nine people. Each person appears in three generated "clips" of three samples, every sample
the photo rescaled, shifted, relit and sometimes mirrored."""


import cv2
import numpy as np
import pytest

pytest.importorskip("dlib")
from conftest import CAST, SPLIT, people  # noqa: E402
from ncaer.identity.cluster import identities, pair_scores, subject_embeddings  # noqa: E402
from ncaer.identity.embed import DLIB_THRESHOLD, DlibEmbedder  # noqa: E402


def sample(image, box, rng):
    """The photo as a clip's frame might show it: rescaled, shifted, relit, maybe mirrored."""
    scale = rng.uniform(0.6, 1.3)
    out = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    box = [int(v * scale) for v in box]
    gain = rng.uniform(0.75, 1.25)
    out = np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        out = out[:, ::-1]
        box = [out.shape[1] - box[2], box[1], out.shape[1] - box[0], box[3]]
    dx, dy = rng.integers(-3, 4, size=2)
    return out, (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)


@pytest.fixture(scope="module")
def clip_subjects():
    rng = np.random.default_rng(0)
    embedder = DlibEmbedder()
    rows, clip_of, truth = [], [], []
    for person, (name, image, box) in enumerate(people()):
        for clip in range(3):
            for _ in range(3):
                rows.append(embedder.embed(*sample(image, box, rng)))
                clip_of.append(f"{name}/{clip}")
            truth.append(person)
    names, subjects = subject_embeddings(np.stack(rows), clip_of)
    return names, subjects, np.array(truth)


def test_nine_people_are_found(clip_subjects):
    names, _, truth = clip_subjects
    assert len(set(truth)) == 9 and len(names) == 27


def test_clips_of_one_person_cluster_together_and_apart_from_others(clip_subjects):
    names, subjects, truth = clip_subjects
    predicted = identities(subjects, DLIB_THRESHOLD)
    precision, recall = pair_scores(predicted, truth)
    print(f"dlib at {DLIB_THRESHOLD}: pairwise precision {precision:.3f}, recall {recall:.3f}, "
          f"{len(set(predicted))} identities for 9 people")
    assert precision >= 0.9 and recall >= 0.9


def test_components_link_through_the_clips_in_between():
    # a-b and b-c are close, a-c is not: one identity; d is alone
    points = np.array([[0.0, 0], [0.5, 0], [1.0, 0], [5.0, 0]])
    assert list(identities(points, 0.6)) == [0, 0, 0, 1]
    assert pair_scores(np.array([0, 0, 1]), np.array([0, 0, 0])) == (1.0, pytest.approx(1 / 3))


def expected_removals() -> tuple[dict[str, int], list[str]]:
    """Clips the earliest-split rule removes when every person is one unit: per split, and which."""
    order = {"train": 0, "val": 1, "test": 2}
    first = {}
    for person, split in CAST:
        if person is not None:
            first[person] = min(first.get(person, "test"), SPLIT[split], key=order.get)
    removed, clips = {"train": 0, "val": 0, "test": 0}, []
    for n, (person, split) in enumerate(CAST):
        if person is not None and SPLIT[split] != first[person]:
            removed[SPLIT[split]] += 1
            clips.append(f"{split}/Happy/{n:03d}.avi")
    return removed, sorted(clips)


def test_check_leakage_identity_finds_the_actors_shared_between_splits(actors_corpus, tmp_path):
    import json

    import pandas as pd
    from click.testing import CliRunner

    from ncaer.build.config import BuildConfig
    from ncaer.build.engine import run_build
    from ncaer.cli import main

    corpus, truth = actors_corpus
    built = run_build(BuildConfig(videos=str(corpus), out=str(tmp_path / "b"), workers=2, classes=("Happy",)))
    got = CliRunner().invoke(main, ["check-leakage", str(tmp_path / "b"), "--out", str(tmp_path / "r"),
                                    "--identity"])
    assert got.exit_code == 1, got.output
    clips = pd.read_csv(tmp_path / "r" / "identities.csv")
    clips["person"] = clips["video_id"].map(
        dict(zip(built.manifest["video_id"], built.manifest["source_path"].map(truth))))
    # one identity per person, and the shared ones are people 0, 1, 2 and 6
    assert clips.groupby("person")["identity"].nunique().eq(1).all()
    assert clips.groupby("identity")["person"].nunique().eq(1).all()
    shared = set(clips.groupby("identity").filter(lambda g: g["split"].nunique() > 1)["person"])
    assert shared == {0, 1, 2, 6}
    report = json.loads((tmp_path / "r" / "report.json").read_text())["identity"]
    assert report["shared_identities"] == 4 and report["identities"] == 9
    assert report["test_samples_with_an_actor_seen_in_train"] == 2 * 5
    assert (tmp_path / "r" / "identities.png").is_file()
    assert "ACTORS SHARED BETWEEN SPLITS" in got.output


def identity_build(corpus, out, **options):
    from ncaer.build.config import BuildConfig
    from ncaer.build.engine import run_build

    return run_build(BuildConfig(videos=str(corpus), out=str(out), classes=("Happy",), group_by="identity",
                                 **{"workers": 2, **options}))


def test_group_by_identity_makes_the_splits_actor_disjoint(actors_corpus, tmp_path):
    import json

    import pandas as pd
    from click.testing import CliRunner

    from ncaer.cli import main

    corpus, truth = actors_corpus
    built = identity_build(corpus, tmp_path / "b")
    m = built.manifest
    m["person"] = m["source_path"].map(truth)
    faces = m[m["person"].notna()]
    # no person in two splits, each person one split unit, every unit in one split
    assert faces.groupby("person")["split"].nunique().eq(1).all()
    assert faces.groupby("person")["group"].nunique().eq(1).all()
    assert m.groupby("group")["split"].nunique().eq(1).all()
    # exactly the clips of a later split than the person's first are gone; the empty clip stays
    summary = built.summary["identity"]
    per_split, clips = expected_removals()
    assert summary["clips_removed"] == per_split == {"train": 0, "val": 1, "test": 3}
    assert summary["clips_moved"] == {"train": 0, "val": 0, "test": 0}
    assert summary["identities"] == 9 and summary["largest_identity"]["clips"] == 2
    assert built.summary["counts"]["clips_removed_for_actor_disjointness"] == 4
    assert m["source_path"].nunique() == len(CAST) - 4 and (m["person"].isna()).sum() == 5
    # the removed clips are named with the reason, and their files are gone
    removed = built.failures[built.failures["reason"].str.contains("the same person")]
    assert sorted(removed["source_path"]) == clips
    assert not list((tmp_path / "b" / "images" / "test" / "Happy").glob("006_*"))
    assert len(list((tmp_path / "b" / "images").rglob("*.jpg"))) == len(m)
    table = pd.read_csv(tmp_path / "b" / "identities.csv")
    assert (~table["kept"]).sum() == 4 and table["identity"].notna().sum() == len(CAST) - 1
    # the check agrees: nobody is in two splits
    got = CliRunner().invoke(main, ["check-leakage", str(tmp_path / "b"), "--out", str(tmp_path / "r"),
                                    "--identity"])
    assert json.loads((tmp_path / "r" / "report.json").read_text())["identity"]["shared_identities"] == 0, got.output


def test_group_by_identity_rerun_redoes_nothing_and_a_returning_clip_is_rebuilt(actors_corpus, tmp_path):
    import shutil

    corpus, truth = actors_corpus
    first = identity_build(corpus, tmp_path / "b")
    again = identity_build(corpus, tmp_path / "b")
    assert again.summary["counts"]["clips_resumed"] == len(CAST)
    assert again.summary["timings"]["clips_processed_this_run"] == 0
    assert again.manifest.equals(first.manifest)
    # person 0's train clip leaves the corpus: its test clip, removed and deleted before, is now kept
    copy = tmp_path / "c"
    shutil.copytree(corpus, copy)
    (copy / "train" / "Happy" / "000.avi").unlink()
    identity_build(copy, tmp_path / "b2")
    shutil.copytree(tmp_path / "b2", tmp_path / "b3")
    (copy / "train" / "Happy" / "000.avi").write_bytes((corpus / "train" / "Happy" / "000.avi").read_bytes())
    identity_build(copy, tmp_path / "b3")  # put back: person 0's test clip is removed (withdrawn) again
    (copy / "train" / "Happy" / "000.avi").unlink()
    back = identity_build(copy, tmp_path / "b3")
    assert back.summary["counts"]["clips_to_retry"] == 1
    assert "test/Happy/006.avi" not in set(back.manifest["source_path"])
    rebuilt = identity_build(copy, tmp_path / "b3")
    assert rebuilt.summary["timings"]["clips_processed_this_run"] == 1
    assert rebuilt.manifest.equals(identity_build(copy, tmp_path / "b2").manifest)


def test_identity_units_join_videos_groups_and_people_transitively():
    from ncaer.build.actors import Subject, split_by_actor

    a, b = [0.0, 0.0], [10.0, 0.0]
    subjects = [
        Subject("t/1", "train", "show-x", 5, a),  # person a in train
        Subject("s/2", "test", "show-y", 5, a),  # person a again, in another show's test clip
        Subject("s/3", "test", "show-y", 5, b),  # person b shares show-y with it: the same unit
        Subject("s/4", "test", "show-y", 5, None),  # nobody's face, but show-y's
        Subject("s/5", "test", "s/5", 4, None),  # nobody's face, its own unit
        Subject("v/6", "val", "v/6", 5, b),  # person b in val: joins the train unit through s/3
    ]
    split = split_by_actor(subjects, 0.5, "test-model")
    assert set(split.removed) == {"s/2", "s/3", "s/4", "v/6"}
    assert len({split.unit[k] for k in ("t/1", "s/2", "s/3", "s/4", "v/6")}) == 1
    assert split.unit["s/5"] == "s/5" and split.unit["t/1"] == "actor-0000"
    assert split.summary["clips_removed"] == {"train": 0, "val": 1, "test": 3}
    assert split.summary["samples_removed"] == {"train": 0, "val": 5, "test": 15}
    assert split.summary["largest_identity"] == {"clips": 2, "per_split": {"train": 1, "val": 0, "test": 1}}


def test_actor_verification_names_an_identity_in_two_splits():
    from ncaer.build.actors import Subject, verify_actor_disjoint
    from ncaer.build.units import LeakageError

    kept = [Subject("a", "train", "a", 5, [0.0, 0.0]), Subject("b", "test", "b", 5, [0.1, 0.0])]
    verify_actor_disjoint(kept[:1] + [Subject("b", "test", "b", 5, [3.0, 0.0])], 0.5)
    with pytest.raises(LeakageError, match="identity 0 in test, train"):
        verify_actor_disjoint(kept, 0.5)


def test_build_cli_prints_what_actor_disjointness_cost(actors_corpus, tmp_path):
    from click.testing import CliRunner

    from ncaer.cli import main

    got = CliRunner().invoke(main, ["build", "--videos", str(actors_corpus[0]), "--out", str(tmp_path / "b"),
                                    "--classes", "Happy", "--workers", "2", "--group-by", "identity"])
    assert got.exit_code == 0, got.output
    text = " ".join(got.output.split())
    assert "actor-disjoint splits (dlib-resnet-v1, distance < 0.5)" in text
    assert "9 identities in 16 clips with a face; largest identity: 2 clips" in text
    assert "│ test │ 6 │ 3 │ 3 │ 15 │" in text


def test_identity_options_and_a_missing_extra_are_clear_errors(actors_corpus, tmp_path, monkeypatch):
    import sys

    from click.testing import CliRunner

    from ncaer.cli import main
    from ncaer.identity.models import load_embedder

    args = ["build", "--videos", str(actors_corpus[0]), "--out", str(tmp_path / "b"), "--classes", "Happy"]
    got = CliRunner().invoke(main, args + ["--identity-threshold", "0.4"])
    assert got.exit_code == 1 and "options of --group-by identity" in got.output
    monkeypatch.setitem(sys.modules, "dlib", None)
    load_embedder.cache_clear()
    try:
        got = CliRunner().invoke(main, args + ["--group-by", "identity"])
    finally:
        load_embedder.cache_clear()
    assert got.exit_code == 1 and 'pip install "ncaer[identity]"' in got.output, got.output
    assert not (tmp_path / "b" / "images").exists()


def test_a_sample_the_model_cannot_embed_is_reported_and_the_check_goes_on(actors_corpus, tmp_path):
    import json

    from click.testing import CliRunner

    from ncaer.cli import main

    built = identity_build(actors_corpus[0], tmp_path / "b")
    lost = built.manifest[built.manifest["has_face"]].iloc[0]
    (tmp_path / "b" / lost["image_path"]).unlink()
    got = CliRunner().invoke(main, ["check-leakage", str(tmp_path / "b"), "--out", str(tmp_path / "r"),
                                    "--identity"])
    assert got.exit_code == 0, got.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())["identity"]
    assert report["samples_not_embedded"] == 1
    assert report["not_embedded"] == [{"image_path": lost["image_path"], "reason": "missing or unreadable"}]
    assert report["samples_embedded"] == int(built.manifest["has_face"].sum()) - 1


def test_a_missing_arcface_pack_stops_both_commands_before_any_work(corpus, reference, tmp_path):
    from click.testing import CliRunner

    from ncaer.cli import main

    got = CliRunner().invoke(main, ["check-leakage", str(reference.out), "--out", str(tmp_path / "r"),
                                    "--identity", "--identity-model", str(tmp_path / "nowhere")])
    assert got.exit_code == 2 and "never downloads" in got.output, got.output
    assert not (tmp_path / "r").exists()
    got = CliRunner().invoke(main, ["check-leakage", str(reference.out), "--out", str(tmp_path / "r"),
                                    "--identity-model", str(tmp_path / "nowhere")])
    assert got.exit_code == 2 and "options of --identity" in got.output, got.output
    got = CliRunner().invoke(main, ["build", "--videos", str(corpus[0]), "--out", str(tmp_path / "b"),
                                    "--group-by", "identity", "--identity-model", "no_such_pack"])
    assert got.exit_code == 1 and "ArcFace model 'no_such_pack' not found" in got.output, got.output
    assert not (tmp_path / "b").exists()


def test_the_identity_check_of_a_build_without_any_embeddable_face_is_empty_not_a_crash(tmp_path):
    import pandas as pd

    from ncaer.identity.check import check_identities

    class Refuses:
        name, dim = "refuses", 3

        def embed(self, image, box):
            raise ValueError("no landmarks")

    manifest = pd.DataFrame({"has_face": [True, False], "image_path": ["a.jpg", "b.jpg"], "video_id": ["v1", "v2"],
                             "split": ["train", "test"], "label": ["A", "A"], "face_path": ["f.jpg", ""],
                             **{c: pd.array([1, None], dtype="Int64") for c in ("face_x1", "face_y1")},
                             **{c: pd.array([5, None], dtype="Int64") for c in ("face_x2", "face_y2")}})
    (tmp_path / "a.jpg").write_bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    report = check_identities(manifest, tmp_path, Refuses(), 0.5)
    assert not report.leaked and report.counts["clips"] == 0 and report.counts["samples_not_embedded"] == 1
    assert report.not_embedded == [{"image_path": "a.jpg", "reason": "no landmarks"}]


def test_a_face_the_model_cannot_embed_leaves_the_clip_in_its_identity(actors_corpus, tmp_path, monkeypatch):
    """The first face embedded (test/Happy/006.avi, person 0, also in train) fails: the clip's other faces
    still place it, so it is removed, and the failure is reported."""
    from ncaer.identity.embed import DlibEmbedder

    calls = []
    embed = DlibEmbedder.embed

    def first_fails(self, image, box):
        calls.append(box)
        if len(calls) == 1:
            raise RuntimeError("dlib refused")
        return embed(self, image, box)

    monkeypatch.setattr(DlibEmbedder, "embed", first_fails)
    built = identity_build(actors_corpus[0], tmp_path / "b", workers=0)
    assert built.summary["identity"]["clips_removed"] == expected_removals()[0]
    failed = built.failures[built.failures["reason"].str.contains("identity embedding failed")]
    assert list(failed["source_path"]) == ["test/Happy/006.avi"] and "dlib refused" in failed["reason"].iloc[0]
