"""Shared fixtures: generated videos whose frames carry their own index and known face boxes."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ncaer.build.config import BuildConfig
from ncaer.build.engine import run_build
from ncaer.faces.detectors import create_detector
from ncaer.generated.videos import CODECS, Actor, face_photos, make_clip, render_clip, write_video


def box_iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def pytest_configure(config):
    """NCAER_TORCH_THREADS=N runs the suite with torch.set_num_threads(N): another thread count sums in another
    order, as another CPU does, so the accuracy bars can be checked against it (docs/train.md#tests)."""
    threads = os.environ.get("NCAER_TORCH_THREADS")
    if threads:
        if not threads.isdigit() or int(threads) < 1:
            raise pytest.UsageError(f"NCAER_TORCH_THREADS must be a positive integer, not {threads!r}")
        import torch

        torch.set_num_threads(int(threads))


@pytest.fixture(autouse=True)
def _seeded_global_rngs():
    """Every test starts from the same global random state, so no outcome depends on which
    tests ran before it (a network built without an explicit seed is the same in every run)."""
    np.random.seed(0)
    if "torch" in sys.modules:  # torch starts from a fixed seed when it is first imported
        sys.modules["torch"].manual_seed(0)


@pytest.fixture(scope="session")
def photos():
    return face_photos()


@pytest.fixture(scope="session")
def codec_videos(tmp_path_factory, photos):
    """One 90-frame clip per codec, with a face; returns {codec: (path, true boxes per frame)}."""
    root = tmp_path_factory.mktemp("codecs")
    videos = {}
    for i, (codec, (ext, _, _)) in enumerate(CODECS.items()):
        actor = Actor(photos[i % 2], 90.0, (0.3, 0.5), (0.6, 0.45))
        path = root / f"{codec}.{ext}"
        boxes = make_clip(path, n_frames=90, codec=codec, actors=(actor,), seed=i)
        videos[codec] = (path, boxes)
    return videos


@pytest.fixture(scope="session")
def vfr_video(tmp_path_factory):
    """A variable-frame-rate H.264 clip: the first half at 10 fps, the second at 60 fps."""
    path = tmp_path_factory.mktemp("vfr") / "vfr.mkv"
    times = [i * 0.1 for i in range(30)] + [3.0 + i / 60 for i in range(60)]
    frames, _ = render_clip(len(times), size=(320, 240))
    write_video(path, frames, codec="h264", timestamps=times)
    return path, np.array(times)


def ffmpeg(*args: str) -> bytes:
    """Run the ffmpeg command line (the static binary of the dev dependency imageio-ffmpeg); return its output."""
    import imageio_ffmpeg

    return subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True,
                          capture_output=True).stdout


# name -> (ffmpeg options before and after the input): how users cut and turn clips
FFMPEG_EDITS = {
    # stream copy cuts at the key frame before the cut point; an edit list hides the frames before it
    "cut": (["-ss", "1.5"], ["-c", "copy"]),
    "cut-mid-frame": (["-ss", "1.234"], ["-c", "copy"]),
    "cut-both-ends": (["-ss", "1.5", "-t", "1"], ["-c", "copy"]),
    # no edit list: every frame from the key frame on is shown, the first one 2 frames (the B-frame delay) after 0
    "cut-without-edit-list": (["-ss", "1.5"], ["-c", "copy", "-use_editlist", "0"]),
    # a display matrix in the container; the frames stay as they were encoded
    "rotate-90": (["-display_rotation", "90"], ["-c", "copy"]),
    "rotate-180": (["-display_rotation", "180"], ["-c", "copy"]),
    "rotate-270": (["-display_rotation", "270"], ["-c", "copy"]),
    "mirror": (["-display_hflip"], ["-c", "copy"]),
    "rotate-90-mirror": (["-display_rotation", "90", "-display_hflip"], ["-c", "copy"]),
    "cut-rotate-90": (["-display_rotation", "90", "-ss", "1.5"], ["-c", "copy"]),
    # the H.264 stream itself says how to turn it (a display orientation SEI, with the first frame only)
    "rotate-90-by-codec": ([], ["-c", "copy", "-bsf:v", "h264_metadata=display_orientation=insert:rotate=90"]),
    "rotate-180-by-codec": ([], ["-c", "copy", "-bsf:v", "h264_metadata=display_orientation=insert:rotate=180"]),
    # re-encoding turns the frames upright and drops the matrix
    "rotate-90-reencoded": (["-display_rotation", "90"], ["-c:v", "libx264", "-bf", "3", "-g", "30"]),
}


@pytest.fixture(scope="session")
def ffmpeg_clips(tmp_path_factory):
    """A 120-frame 30 fps H.264 clip with B-frames (320x240, frames carry their index) and the files
    FFMPEG_EDITS make of it with the ffmpeg command line: {"source" or edit name: path}."""
    root = tmp_path_factory.mktemp("ffmpeg")
    frames, _ = render_clip(120, size=(320, 240))
    clips = {"source": write_video(root / "source.mp4", frames, codec="h264")}
    for name, (before, after) in FFMPEG_EDITS.items():
        clips[name] = root / f"{name}.mp4"
        ffmpeg(*before, "-i", str(clips["source"]), *after, str(clips[name]))
    return clips


def make_corpus(root: Path, layout: dict[str, dict[str, int]], photos, n_frames: int = 30,
                size=(356, 200), seed: int = 0) -> dict[str, list]:
    """CAER-layout corpus: layout = {split_folder: {Class: n_clips}}; returns true face boxes per rel path."""
    rng = np.random.default_rng(seed)
    truth = {}
    number = 0
    for split, classes in layout.items():
        for label, n in classes.items():
            for _ in range(n):
                number += 1
                rel = f"{split}/{label}/{number:04d}.avi"
                (root / split / label).mkdir(parents=True, exist_ok=True)
                actor = Actor(photos[number % 2], float(rng.uniform(50, 70)), (0.35, 0.5), (0.6, 0.5))
                truth[rel] = make_clip(root / rel, n_frames=n_frames, size=size, actors=(actor,),
                                                 seed=int(rng.integers(1 << 30)))
    return truth


BUILD_LAYOUT = {"train": {"Happy": 3, "Sad": 3}, "validation": {"Happy": 1, "Sad": 1}, "test": {"Happy": 2, "Sad": 2}}


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("caer")
    return root, make_corpus(root, BUILD_LAYOUT, photos)


def build_config(videos, out, **kw):
    kw.setdefault("workers", 2)
    return BuildConfig(videos=str(videos), out=str(out), **kw)


@pytest.fixture(scope="session")
def reference(corpus, tmp_path_factory):
    root, _ = corpus
    return run_build(build_config(root, tmp_path_factory.mktemp("ref") / "out"))


def tree_digest(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha1(p.read_bytes()).hexdigest()
            for sub in ("images", "crop", "faces", "context") for p in sorted((out / sub).rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="session")
def bad_corpus(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("bad")
    make_corpus(root, {"train": {"Happy": 2}, "test": {"Happy": 1}}, photos)
    happy = root / "train" / "Happy"
    good = (happy / "0001.avi").read_bytes()
    (happy / "empty.avi").write_bytes(b"")
    (happy / "corrupt.avi").write_bytes(np.random.default_rng(0).bytes(50_000))
    (happy / "truncated.avi").write_bytes(good[: len(good) * 6 // 10])
    (happy / "text.mp4").write_text("not a video at all")
    os.symlink(happy / "missing-target.avi", happy / "unreadable.avi")
    frames, _ = render_clip(1, size=(356, 200), actors=(Actor(photos[0], 60, (.5, .5), (.5, .5)),))
    write_video(happy / "one_frame.avi", frames)
    frames, _ = render_clip(12, size=(301, 177), actors=(Actor(photos[1], 60, (.5, .5), (.5, .5)),))
    write_video(happy / "odd_size.avi", frames, codec="mjpeg")
    write_video(happy / "tiny.avi", [np.full((8, 8, 3), 100, np.uint8)] * 8, codec="mjpeg")
    with open(os.fsencode(happy) + b"/caf\xe9.avi", "wb") as f:  # a Latin-1 file name: not UTF-8
        f.write(good)
    return root


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


# person, corpus split: people 0 and 1 in train and test, 2 in train and val, 6 in val and test, the others in
# one split each; None: a clip with nobody in it
CAST = [(p, "train") for p in range(6)] + [(0, "test"), (1, "test"), (2, "validation")] + \
    [(p, "test") for p in (6, 7, 8)] + [(3, "train"), (4, "train"), (5, "train"), (6, "validation"), (None, "test")]
SPLIT = {"train": "train", "validation": "val", "test": "test"}


@pytest.fixture(scope="session")
def actors_corpus(tmp_path_factory):
    """The nine people in 17 generated clips (CAST); returns the corpus folder and each clip's person."""
    root = tmp_path_factory.mktemp("actors")
    faces = portraits()
    truth = {}
    for n, (person, split) in enumerate(CAST):
        (root / split / "Happy").mkdir(parents=True, exist_ok=True)
        rel = f"{split}/Happy/{n:03d}.avi"
        cast = () if person is None else (Actor(faces[person], 90, (0.4, 0.5), (0.6, 0.5)),)
        make_clip(root / rel, n_frames=20, size=(356, 200), actors=cast, seed=n)
        truth[rel] = person
    return root, truth
