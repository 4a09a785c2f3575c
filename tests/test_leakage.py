"""`ncaer check-leakage`: index correctness, hash behaviour, detection quality, outputs, exit codes."""

import json
import shutil
import tracemalloc

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ncaer.build.config import BuildConfig
from ncaer.build.engine import run_build
from ncaer.cli import main
from ncaer.dataset.imageset import DatasetError, load_imageset
from ncaer.generated.demo import make_demo_corpus
from ncaer.generated.leak_benchmark import leak_benchmark
from ncaer.generated.videos import Actor, background, render_clip
from ncaer.leakage.check import LeakConfig, check_leakage, clusters
from ncaer.leakage.fix import write_fix
from ncaer.leakage.hamming_index import MAX_RADIUS, HammingIndex
from ncaer.leakage.hashing import HashJob, dhash, hash_one, phash


@pytest.mark.parametrize("budget", [1 << 20, 2000])
@pytest.mark.parametrize("radius", [0, 3, 10, 13, 16, 20, MAX_RADIUS])
def test_index_finds_exactly_the_pairs_brute_force_finds(radius, budget):
    # budget 2000 cuts the candidates of the group of 2500 equal hashes below, and of neighbouring queries:
    # a pair may be neither lost at a cut nor found twice (once per close chunk)
    rng = np.random.default_rng(radius)
    base = rng.integers(0, np.iinfo(np.int64).max, 300, dtype=np.int64).astype(np.uint64)
    noise = [np.uint64(sum(1 << int(b) for b in rng.choice(64, rng.integers(0, 16), replace=False)))
             for _ in range(800)]
    codes = base[rng.integers(0, 300, 800)] ^ np.array(noise, dtype=np.uint64)
    # chunk values 0x0000 and 0xFFFF are the first and last slots of the tables
    edges = np.array([0, 2**64 - 1, 0xFFFF_0000_FFFF_0000], dtype=np.uint64)
    db = np.concatenate([codes[:650], np.full(2500, codes[0]), edges[:2]])
    queries = np.concatenate([codes[650:], edges])
    qi, di, dist = HammingIndex(db).search(queries, radius, budget=budget)
    bq, bd = np.nonzero(np.bitwise_count(queries[:, None] ^ db[None, :]) <= radius)
    assert list(zip(qi.tolist(), di.tolist())) == list(zip(bq.tolist(), bd.tolist()))  # sorted, no repeats
    assert (dist == np.bitwise_count(queries[qi] ^ db[di])).all()


def test_search_memory_is_bounded_by_the_budget_not_the_radius():
    rng = np.random.default_rng(0)
    db = rng.integers(0, np.iinfo(np.int64).max, 4000, dtype=np.int64).astype(np.uint64)
    queries = rng.integers(0, np.iinfo(np.int64).max, 1000, dtype=np.int64).astype(np.uint64)
    # 3000 stored hashes share a chunk value with 100 queries (far on the other chunks): one probe's
    # candidates outnumber the budget
    db[:3000] = db[0]
    queries[:100] = (queries[:100] & ~np.uint64(0xFFFF)) | (db[0] & np.uint64(0xFFFF))
    index = HammingIndex(db)
    budget = 1 << 12
    peaks = {}
    for radius in (10, MAX_RADIUS):
        tracemalloc.start()
        try:
            qi, di, dist = index.search(queries, radius, budget=budget)
            peaks[radius] = tracemalloc.get_traced_memory()[1], qi.nbytes + di.nbytes + dist.nbytes
        finally:
            tracemalloc.stop()
    # beyond the result, a few arrays of `budget` items; without pieces, the probes alone at radius 23
    # (1000 queries x 6885 masks) take 200 MB
    assert all(peak < 100 * budget + 3 * result + (1 << 20) for peak, result in peaks.values()), peaks


def test_threshold_above_the_cap_is_a_usage_error(tmp_path):
    with pytest.raises(ValueError, match=f"at most {MAX_RADIUS}"):
        LeakConfig(threshold=MAX_RADIUS + 1)
    with pytest.raises(ValueError, match=f"at most {MAX_RADIUS}"):
        HammingIndex(np.zeros(3, np.uint64)).search(np.zeros(1, np.uint64), MAX_RADIUS + 1)
    assert LeakConfig(threshold=MAX_RADIUS).threshold == MAX_RADIUS
    for split in ("train", "test"):  # a dataset the check would run on
        (tmp_path / split / "Happy").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / split / "Happy" / "a.png"), np.zeros((80, 80, 3), np.uint8))
    for threshold in (MAX_RADIUS + 1, 32, 64):
        result = CliRunner().invoke(main, ["check-leakage", str(tmp_path), "--threshold", str(threshold),
                                           "--out", str(tmp_path / "r")])
        assert result.exit_code == 2, result.output
        assert f"--threshold must be at most {MAX_RADIUS}" in " ".join(result.output.split())
        assert not (tmp_path / "r").exists()
    usage = CliRunner().invoke(main, ["check-leakage", "--help"])
    assert f"at most {MAX_RADIUS}" in " ".join(usage.output.split())


def test_perceptual_hashes_tolerate_reencoding_but_not_other_scenes(photos):
    frames, _ = render_clip(2, actors=(Actor(photos[0], 100, (.4, .5), (.5, .5)),), seed=1)
    other, _ = render_clip(1, actors=(Actor(photos[1], 100, (.6, .5), (.6, .5)),), seed=2)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (frames[0], other[0])]
    ok, buf = cv2.imencode(".jpg", gray[0], [cv2.IMWRITE_JPEG_QUALITY, 60])
    again = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    for h in (phash, dhash):
        assert int(np.bitwise_count(h(gray[0]) ^ h(again))) <= 4
        assert int(np.bitwise_count(h(gray[0]) ^ h(gray[1]))) > 14


def test_context_region_hashes_without_the_face(tmp_path):
    scene = background(200, 300, np.random.default_rng(0))
    a, b = scene.copy(), scene.copy()
    a[40:160, 100:200] = 255
    b[40:160, 100:200] = np.random.default_rng(1).integers(0, 255, (120, 100, 3))
    for name, img in (("a", a), ("b", b)):
        cv2.imwrite(str(tmp_path / f"{name}.png"), img)
    box = (100, 40, 200, 160)
    whole = [hash_one(HashJob(str(tmp_path / f"{n}.png"))) for n in "ab"]
    context = [hash_one(HashJob(str(tmp_path / f"{n}.png"), box)) for n in "ab"]
    assert whole[0][0] != whole[1][0]
    assert context[0][:2] == context[1][:2]


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    root = tmp_path_factory.mktemp("leakbench")
    truth = leak_benchmark(root, n_scenes=12, unseen_scenes=4)
    return root, truth


def test_near_duplicate_precision_and_recall_on_the_labelled_benchmark(benchmark):
    root, truth = benchmark
    report = check_leakage(load_imageset(root), LeakConfig())
    flagged = set(report.pairs.loc[report.pairs["check"] == "near", "image_b"])
    positives = {k for k, v in truth.items() if v}
    tp = len(flagged & positives)
    recall, precision = tp / len(positives), tp / max(len(flagged), 1)
    print(f"near-duplicates at the default threshold: recall {recall:.3f}, precision {precision:.3f}")
    assert recall >= 0.95 and precision >= 0.95
    assert report.summary.set_index("check").loc["exact", "leaking"] == 0  # every test frame was re-encoded


def test_exact_duplicates_match_on_pixels_not_bytes(benchmark, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(benchmark[0], root)
    src = sorted((root / "train").rglob("*.jpg"))[0]
    # the same pixels in another file format: different bytes, identical decoded pixels
    cv2.imwrite(str(root / "test" / src.parent.name / "copy.png"), cv2.imread(str(src)))
    report = check_leakage(load_imageset(root), LeakConfig())
    exact = report.pairs[report.pairs["check"] == "exact"]
    assert list(exact["image_b"]) == [f"test/{src.parent.name}/copy.png"]
    assert list(exact["image_a"]) == [src.relative_to(root).as_posix()]


@pytest.fixture(scope="module")
def demo_build(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    videos = make_demo_corpus(base / "CAER", n_frames=15, clips_per_class={"train": 2, "validation": 1, "test": 1})
    return run_build(BuildConfig(videos=str(videos), out=str(base / "NCAER-S"), workers=2)).out


def test_ncaer_build_output_has_no_leak(demo_build, tmp_path):
    result = CliRunner().invoke(main, ["check-leakage", str(demo_build), "--out", str(tmp_path / "r"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert not summary["leaked"] and summary["layout"] == "manifest"
    source = [c for c in summary["checks"] if c["check"] == "source"]
    assert len(source) == 3 and all(c["leaking"] == 0 for c in source)
    assert (tmp_path / "r" / "leaks.csv").is_file() and not (tmp_path / "r" / "leaks.png").exists()


def caer_s_style(build, dest, seed=0):
    """The same frames split at random, as CAER-S did: frames of one clip end up on both sides."""
    rng = np.random.default_rng(seed)
    for p in sorted((build / "images").rglob("*.jpg")):
        split = "train" if rng.random() < 0.7 else "test"
        target = dest / split / p.parent.name / f"{p.parent.parent.name}_{p.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
    return dest


def test_random_frame_split_is_reported_as_leaking(demo_build, tmp_path):
    folder = caer_s_style(demo_build, tmp_path / "CAER-S")
    out = tmp_path / "r"
    result = CliRunner().invoke(main, ["check-leakage", str(folder), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "LEAKAGE FOUND" in result.output
    leaks = pd.read_csv(out / "leaks.csv")
    assert (leaks.loc[leaks["check"] == "near", "split_b"] == "test").all()
    # a test frame is caught when another frame of its clip is in train: clip name is in the file name
    clip = lambda name: name.split("/")[-1].rsplit("_", 1)[0]  # noqa: E731
    train_clips = {clip(p.as_posix()) for p in (folder / "train").rglob("*.jpg")}
    test_frames = [p.relative_to(folder).as_posix() for p in (folder / "test").rglob("*.jpg")]
    should = {t for t in test_frames if clip(t) in train_clips}
    caught = set(leaks.loc[leaks["check"] == "near", "image_b"])
    assert len(caught & should) >= 0.9 * len(should) and len(should) > 10
    assert (out / "leaks.png").is_file() and cv2.imread(str(out / "leaks.png")) is not None
    cl = pd.read_csv(out / "clusters.csv")
    assert cl.groupby("cluster")["split"].nunique().min() == 2


def test_fix_writes_a_clean_split_and_touches_no_source_file(demo_build, tmp_path):
    folder = caer_s_style(demo_build, tmp_path / "CAER-S")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    report = check_leakage(load_imageset(folder), LeakConfig())
    removed = write_fix(report, tmp_path / "fixed")
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    kept_test = (tmp_path / "fixed" / "test.txt").read_text().split()
    assert set(removed["image"]) == report.leaking_images() and len(removed) > 0
    assert not {str(folder / r) for r in removed["image"]} & set(kept_test)
    cleaned = check_leakage(load_imageset(folder), LeakConfig())
    assert cleaned.leaked  # the source folder itself is unchanged


def test_fix_on_a_manifest_keeps_paths_usable(demo_build, tmp_path):
    report = check_leakage(load_imageset(demo_build), LeakConfig())
    # pretend two test images leak, to check what --fix writes for a manifest dataset
    leaking = report.imageset.images[report.imageset.images["split"] == "test"]["image"].iloc[:2].tolist()
    report.pairs = pd.DataFrame({"image_a": ["x", "x"], "split_a": "train", "image_b": leaking, "split_b": "test",
                                 "distance": 0.0, "check": "near"})
    write_fix(report, tmp_path / "fixed")
    m = pd.read_parquet(tmp_path / "fixed" / "manifest.parquet")
    assert len(m) == len(report.imageset.images) - 2
    assert all((tmp_path / "fixed" / p).is_file() for p in m["image_path"])


def test_embedding_mode_says_what_it_used(benchmark, tmp_path):
    import torch

    from glamor_model.models.resnet import ResNet18

    root, _ = benchmark
    report = check_leakage(load_imageset(root), LeakConfig(embedding=True))
    assert report.embedding_used.startswith("16x16 colour thumbnail")
    assert "embedding" in set(report.summary["check"])
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(ResNet18().state_dict(), weights)
    small = tmp_path / "small"
    for p in sorted(root.rglob("*.jpg"))[::8]:
        (small / p.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, small / p.relative_to(root))
    # the command line passes the ResNet-18 embedder of glamor_model (ncaer's library never imports it)
    result = CliRunner().invoke(main, ["check-leakage", str(small), "--weights", str(weights), "--out",
                                       str(tmp_path / "r"), "--json"])
    assert result.exit_code in (0, 1), result.output
    assert json.loads(result.output)["config"]["embedding"] == f"ResNet-18 features from {weights}"


def test_unreadable_images_are_listed_and_skipped(benchmark, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(benchmark[0], root)
    (root / "test" / "scene00" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (root / "test" / "scene00" / "notes.txt").write_text("x")
    report = check_leakage(load_imageset(root), LeakConfig())
    assert list(report.unreadable["image"]) == ["test/scene00/broken.jpg"]
    assert "not a readable image" in report.unreadable["reason"].iat[0]
    assert ("test/scene00/notes.txt", "not an image file (extension)") in load_imageset(root).ignored


def test_not_a_dataset_and_single_split_are_usage_errors(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(DatasetError, match="not a dataset"):
        load_imageset(tmp_path)
    (tmp_path / "train" / "Happy").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "train" / "Happy" / "a.png"), np.zeros((80, 80, 3), np.uint8))
    (tmp_path / "test").mkdir()
    with pytest.raises(DatasetError, match="only one split"):
        check_leakage(load_imageset(tmp_path), LeakConfig())
    result = CliRunner().invoke(main, ["check-leakage", str(tmp_path), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "only one split" in result.output
    result = CliRunner().invoke(main, ["check-leakage", str(tmp_path), "--region", "context"])
    assert result.exit_code == 2


def test_clusters_join_linked_pairs():
    pairs = pd.DataFrame({"image_a": ["t1", "t1", "t5"], "split_a": "train", "image_b": ["v1", "v2", "v9"],
                          "split_b": ["val", "test", "test"], "distance": 1.0, "check": "near"})
    cl = clusters(pairs)
    assert cl.groupby("cluster")["image"].apply(set).tolist() == [{"t1", "v1", "v2"}, {"t5", "v9"}]
