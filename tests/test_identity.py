"""Identity embeddings and actor clusters on real face photos that ship inside packages: insightface's
sample images (a group photo of six people, and Tom Hanks), scikit-image's astronaut and matplotlib's
Grace Hopper: nine people. Each person appears in three generated "clips" of three samples, every sample
the photo rescaled, shifted, relit and sometimes mirrored."""

import importlib.util
import os

import cv2
import numpy as np
import pytest

pytest.importorskip("dlib")
from ncaer.faces.detectors import create_detector  # noqa: E402
from ncaer.generated.videos import face_photos  # noqa: E402
from ncaer.identity.cluster import identities, pair_scores, subject_embeddings  # noqa: E402
from ncaer.identity.embed import DLIB_THRESHOLD, DlibEmbedder  # noqa: E402


def people() -> list[tuple[str, np.ndarray, tuple[int, int, int, int]]]:
    spec = importlib.util.find_spec("insightface")
    if spec is None:
        pytest.skip("insightface's sample photos are not installed")
    images = os.path.join(spec.submodule_search_locations[0], "data", "images")
    found = []
    detector = create_detector("centerface", device="cpu")
    for name in ("t1.jpg", "Tom_Hanks_54745.png"):
        image = cv2.cvtColor(cv2.imread(os.path.join(images, name)), cv2.COLOR_BGR2RGB)
        for k, det in enumerate(detector.detect([image])[0]):
            found.append((f"{name}#{k}", image, tuple(int(v) for v in det[:4])))
    found += [(p.name, p.image, p.box) for p in face_photos()]
    return found


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


def portraits() -> list:
    """The nine people as FacePhotos a generated clip can show (a margin around each face)."""
    from ncaer.generated.videos import FacePhoto

    out = []
    for name, image, (x1, y1, x2, y2) in people():
        w, h = x2 - x1, y2 - y1
        cx1, cy1 = max(0, x1 - w // 2), max(0, y1 - h // 2)
        cx2, cy2 = min(image.shape[1], x2 + w // 2), min(image.shape[0], y2 + h // 2)
        out.append(FacePhoto(name, np.ascontiguousarray(image[cy1:cy2, cx1:cx2]),
                             (x1 - cx1, y1 - cy1, x2 - cx1, y2 - cy1)))
    return out


def test_check_leakage_identity_finds_the_actors_shared_between_splits(tmp_path):
    """Nine people in 15 clips: people 0 and 1 appear in train and test, 2 in train and val, the others in
    one split each."""
    import json

    import pandas as pd
    from click.testing import CliRunner

    from ncaer.build.config import BuildConfig
    from ncaer.build.engine import run_build
    from ncaer.cli import main
    from ncaer.generated.videos import Actor, make_clip

    faces = portraits()
    plan = [(p, "train") for p in range(6)] + [(0, "test"), (1, "test"), (2, "validation")] + \
        [(p, "test") for p in (6, 7, 8)] + [(3, "train"), (4, "train"), (5, "train")]
    truth = {}
    for n, (person, split) in enumerate(plan):
        (tmp_path / "c" / split / "Happy").mkdir(parents=True, exist_ok=True)
        rel = f"{split}/Happy/{n:03d}.avi"
        make_clip(tmp_path / "c" / rel, n_frames=20, size=(356, 200),
                  actors=(Actor(faces[person], 90, (0.4, 0.5), (0.6, 0.5)),), seed=n)
        truth[rel] = person
    built = run_build(BuildConfig(videos=str(tmp_path / "c"), out=str(tmp_path / "b"), workers=2,
                                  classes=("Happy",)))
    got = CliRunner().invoke(main, ["check-leakage", str(tmp_path / "b"), "--out", str(tmp_path / "r"),
                                    "--identity"])
    assert got.exit_code == 1, got.output
    clips = pd.read_csv(tmp_path / "r" / "identities.csv")
    clips["person"] = clips["video_id"].map(
        dict(zip(built.manifest["video_id"], built.manifest["source_path"].map(truth))))
    # one identity per person, and the shared ones are people 0, 1 and 2 (train and test or val)
    assert clips.groupby("person")["identity"].nunique().eq(1).all()
    assert clips.groupby("identity")["person"].nunique().eq(1).all()
    shared = set(clips.groupby("identity").filter(lambda g: g["split"].nunique() > 1)["person"])
    assert shared == {0, 1, 2}
    report = json.loads((tmp_path / "r" / "report.json").read_text())["identity"]
    assert report["shared_identities"] == 3 and report["identities"] == 9
    assert report["test_samples_with_an_actor_seen_in_train"] == 2 * 5
    assert (tmp_path / "r" / "identities.png").is_file()
    assert "ACTORS SHARED BETWEEN SPLITS" in got.output
