"""`ncaer export`, `ncaer predict`, and clip-level evaluation, on the demo corpus."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import box_iou
from glamor_model.data.batches import Batches, ClipBatches, ImageBatches
from glamor_model.data.preprocess import Preprocess
from glamor_model.data.stores import cache_store, clip_store, image_store
from glamor_model.engine.checkpoint import load_run
from glamor_model.engine.config import TrainConfig
from glamor_model.engine.loop import train
from glamor_model.eval.evaluate import evaluate_run
from glamor_model.models import model_family
from glamor_model.models.resnet import ResNet18
from glamor_model.pooling import pool
from learnability import make_clip_dataset, make_dataset
from ncaer.build.config import BuildConfig
from ncaer.build.engine import run_build
from ncaer.cli import main
from ncaer.dataset.layout import CAER_CLASSES
from ncaer.generated.demo import make_demo_corpus
from ncaer.video.decode import decode_samples
from ncaer.video.sampling import sample_segments
from untrained_runs import write_run

SMALL = dict(face_size=48, context_height=64, context_width=86, crop=56)
CLASSES = list(CAER_CLASSES)
ATOL = 2e-5  # predictions.json rounds probabilities to 5 decimals

# a comparison at ATOL sees a skew (another crop, resize, channel order or scaling) only if the probabilities
# move well beyond it when the input is one pixel off: each such test checks they move this far
SEES_SKEW = 10 * ATOL


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    base = tmp_path_factory.mktemp("demo")
    videos = make_demo_corpus(base / "CAER", n_frames=12, clips_per_class={"train": 2, "validation": 1, "test": 1})
    build = run_build(BuildConfig(videos=str(videos), out=str(base / "NCAER-S"), workers=2)).out
    cache = str(base / "cache")
    run = base / "run"
    train(TrainConfig(data=str(build), out=str(run), epochs=1, cache_dir=cache, **SMALL))
    return {"videos": videos, "build": build, "run": run, "cache": cache, "base": base}


@pytest.fixture(scope="module")
def sharp_run(demo):
    """GLAMOR untrained, its probabilities moving with every pixel, so comparisons of its outputs see a skew
    (after the demo run's one epoch, a one-pixel shift of its inputs moved them by 1e-5)."""
    return write_run(demo["base"] / "sharp", "glamor", demo["build"], CLASSES, **SMALL)


@pytest.fixture(scope="module")
def exported(demo, sharp_run):
    path = demo["base"] / "model.onnx"
    result = CliRunner().invoke(main, ["export", "--run", str(sharp_run), "--onnx", str(path)])
    assert result.exit_code == 0, result.output
    assert "max abs difference" in result.output
    return path


@pytest.fixture(scope="module")
def inputs(demo, photos):
    folder = demo["base"] / "inputs"
    folder.mkdir()
    cv2.imwrite(str(folder / "astronaut.png"), cv2.cvtColor(photos[0].image, cv2.COLOR_RGB2BGR))
    shutil.copy(next((demo["videos"] / "test" / "Happy").glob("*.avi")), folder / "clip.avi")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not an image")
    return folder


def test_export_verifies_onnxruntime_against_pytorch(exported):
    from glamor_model.serve.predict import read_metadata

    meta = read_metadata(exported)
    assert meta["classes"][0] == "Anger" and meta["outputs"] == ["probs", "attention"]
    assert meta["prep"]["face_size"] == 48


def test_predict_image_folder_and_video_with_onnx(exported, inputs, photos, tmp_path):
    out = tmp_path / "pred"
    result = CliRunner().invoke(main, ["predict", str(inputs), "--onnx", str(exported), "--out", str(out),
                                       "--attention", "--frames", "6"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "predictions.json").read_text())
    by_name = {r["input"].split("/")[-1]: r for r in summary["inputs"]}
    face = by_name["astronaut.png"]["faces"]
    assert len(face) == 1 and box_iou(face[0]["box"], photos[0].box) >= 0.6
    assert face[0]["label"] in summary["classes"] and sum(face[0]["probabilities"].values()) == pytest.approx(1, 1e-3)
    assert "not a readable image" in by_name["broken.jpg"]["error"]
    clip = by_name["clip.avi"]
    assert clip["frames_sampled"] == 6 and clip["frames_with_face"] == 6
    assert set(clip["clip"]) >= {"mean", "max", "softmax"}
    assert all("label" in f for f in clip["frames"])
    assert (out / "astronaut_annotated.jpg").is_file()
    with __import__("av").open(str(out / "clip_annotated.mp4")) as v:
        assert v.streams.video[0].frames == 12 or sum(1 for _ in v.decode(video=0)) == 12
    assert summary["runtime"].startswith("onnxruntime") and summary["frames_per_s"] > 0


@pytest.mark.parametrize("runtime", ["pytorch", "pytorch, normalised inputs", "onnx"])
def test_predict_gives_what_evaluation_computes_for_the_same_picture(demo, sharp_run, exported, inputs, runtime,
                                                                    tmp_path):
    """No train/serve skew: `ncaer predict` on a picture gives the probabilities that the evaluation path
    (cache_store + Batches, as `ncaer evaluate` reads a dataset) computes for the same file and face box. A
    resize, crop, scaling, normalisation or channel order of its own in predict shows here."""
    run = sharp_run
    if runtime == "pytorch, normalised inputs":
        run = write_run(tmp_path / "normalised", "glamor", demo["build"], CLASSES, normalize=True, **SMALL)
    image = inputs / "astronaut.png"
    model_flag = ["--onnx", str(exported)] if runtime == "onnx" else ["--run", str(run)]
    result = CliRunner().invoke(main, ["predict", str(image), *model_flag, "--out", str(tmp_path / "out"),
                                       "--no-annotate"])
    assert result.exit_code == 0, result.output
    face = json.loads((tmp_path / "out" / "predictions.json").read_text())["inputs"][0]["faces"][0]
    model, ckpt = load_run(run)
    prep = Preprocess(**ckpt["prep"])
    store = cache_store(pd.DataFrame({"path": [str(image)], "box": [tuple(face["box"])], "label_id": [0]}), prep,
                        tmp_path / "cache")
    faces, contexts, *_ = next(iter(Batches(store, prep, 1, False, normalize=ckpt["normalize"]).epoch(0)))
    with torch.no_grad():
        want, shifted = (torch.softmax(model.forward_all(f, c)["logits"], 1)[0].numpy()
                         for f, c in ((faces, contexts), (faces.roll(1, -1), contexts.roll(1, -1))))
    assert np.abs(shifted - want).max() > SEES_SKEW
    np.testing.assert_allclose([face["probabilities"][c] for c in ckpt["classes"]], want, atol=ATOL)


def test_onnx_prediction_needs_no_torch(exported, inputs, tmp_path):
    code = ("import sys; sys.modules['torch'] = None\n"
            "from ncaer.cli import main\n"
            f"main(['predict', {str(inputs / 'astronaut.png')!r}, '--onnx', {str(exported)!r}, "
            f"'--out', {str(tmp_path / 'p')!r}])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "p" / "predictions.json").read_text())["inputs"][0]["faces"]


def test_clear_errors(demo, exported, tmp_path):
    runner = CliRunner()
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 300, 3), 90, np.uint8))
    result = runner.invoke(main, ["predict", str(blank), "--onnx", str(exported), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "no face found" in result.output
    empty_run = tmp_path / "run"
    empty_run.mkdir()
    result = runner.invoke(main, ["predict", str(blank), "--run", str(empty_run)])
    assert result.exit_code == 1 and "best.pt not found" in result.output
    result = runner.invoke(main, ["predict", str(blank)])
    assert result.exit_code == 2 and "exactly one of --run" in result.output
    result = runner.invoke(main, ["predict", str(tmp_path / "missing.mp4"), "--onnx", str(exported),
                                  "--out", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "does not exist" in result.output
    assert not (tmp_path / "missing").exists()  # a failed command leaves no output folder
    result = runner.invoke(main, ["predict", str(blank), "--onnx", str(tmp_path / "none.onnx")])
    assert result.exit_code == 1 and "ncaer export" in result.output


def test_video_level_evaluation(demo):
    results = evaluate_run(demo["run"], video=True, beta=5.0, cache_dir=demo["cache"])
    v = results["video_level"]
    assert v["clips"] == 7 and set(v) >= {"mean", "max", "softmax"}
    assert len(v["softmax"]["confusion_matrix"]) == 7
    assert (demo["run"] / "eval-test" / "clip_predictions.csv").is_file()


def test_video_model_trains_from_the_videos_directly(demo, tmp_path):
    run = tmp_path / "video"
    result = CliRunner().invoke(main, ["train", "--model", "video-tsp", "--data", str(demo["videos"]), "--frames", "4",
                                       "--face-size", "48", "--epochs", "1", "--out", str(run), "--cache-dir",
                                       demo["cache"], "--workers", "2"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["evaluate", "--run", str(run)])
    assert result.exit_code == 0, result.output
    results = json.loads((run / "eval-test" / "results.json").read_text())
    assert results["unit"] == "clip" and results["samples"] == 7
    assert set(results["pooling_comparison"]) >= {"video-tsp (trained pooling)", "mean pooling of its frame logits"}
    assert results["inverse_temperature"] == 1.0


def test_video_model_trains_on_the_resnet18_face_branch_and_is_evaluated_without_the_weights_file(demo, tmp_path):
    weights = tmp_path / "r18.pth"
    torch.save(ResNet18().state_dict(), weights)
    run = tmp_path / "video-r18"
    result = CliRunner().invoke(main, ["train", "--model", "video-mean", "--backbone", "resnet18", "--face-weights",
                                       str(weights), "--data", str(demo["videos"]), "--frames", "4", "--face-size",
                                       "48", "--epochs", "1", "--out", str(run), "--cache-dir", demo["cache"]])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((run / "config.yaml").read_text())["model_kwargs"]["backbone"] == "resnet18"
    weights.unlink()  # the checkpoint holds the weights
    assert evaluate_run(run, cache_dir=demo["cache"])["unit"] == "clip"


def _refused(result, *phrases):
    """Exit status 1 with a message, not a traceback."""
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    for phrase in phrases:
        assert phrase in result.output


@pytest.mark.parametrize("model", ["preactresnet18", "video-mean"])
def test_export_refuses_face_image_and_clip_models(demo, model, tmp_path):
    run = write_run(tmp_path / "run", model, demo["build"], CLASSES, image_size=32, face_size=48, frames=4)
    onnx = tmp_path / "model.onnx"
    result = CliRunner().invoke(main, ["export", "--run", str(run), "--onnx", str(onnx)])
    _refused(result, f"{model} is a {model_family(model)} model", "frame models", f"ncaer predict --run {run}")
    assert not onnx.exists()


def test_a_clip_model_refuses_pictures(demo, inputs, tmp_path):
    run = write_run(tmp_path / "run", "video-tsp", demo["build"], CLASSES, face_size=48, frames=4)
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["predict", str(inputs / "astronaut.png"), "--run", str(run), "--out", str(out)])
    _refused(result, "video-tsp is a clip model", "classifies videos")
    assert not out.exists()


def test_a_clip_model_classifies_a_video_as_evaluation_would(demo, inputs, tmp_path):
    """`ncaer predict` runs a clip model once on the subject's face crops in the run's number of frames, and
    gives what the evaluation path (clip_store + ClipBatches) computes from the same frames and boxes."""
    run = write_run(tmp_path / "run", "video-tsp", demo["build"], CLASSES, face_size=48, frames=5, normalize=True)
    video = inputs / "clip.avi"
    result = CliRunner().invoke(main, ["predict", str(video), "--run", str(run), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "(video-tsp)" in result.output
    assert (tmp_path / "out" / "clip_annotated.mp4").is_file()
    record = json.loads((tmp_path / "out" / "predictions.json").read_text())["inputs"][0]
    assert record["frames_sampled"] == record["frames_with_face"] == 5  # the run's frames per clip
    # the same frames as a one-clip build, read as the evaluation reads a split
    decoded = decode_samples(str(video), "decord",
                             lambda info: sample_segments(info.timestamps, info.end_time, 5, "middle"))
    build, rows = tmp_path / "build", []
    (build / "images").mkdir(parents=True)
    for t, (pick, rgb, frame) in enumerate(zip(decoded.picks, decoded.frames, record["frames"])):
        assert frame["frame_index"] == pick.frame_index
        cv2.imwrite(str(build / "images" / f"{t}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        rows.append({"split": "test", "video_id": "clip", "segment": t, "label_id": 0, "has_face": True,
                     "image_path": f"images/{t}.png",
                     **dict(zip(["face_x1", "face_y1", "face_x2", "face_y2"], frame["box"]))})
    pd.DataFrame(rows).to_parquet(build / "manifest.parquet")
    model, ckpt = load_run(run)
    store = clip_store(build, "test", 5, Preprocess(**ckpt["prep"]), tmp_path / "cache")
    clips, mask, *_ = next(iter(ClipBatches(store, 1, False, normalize=True).epoch(0)))
    with torch.no_grad():
        out = model.forward_all(clips, mask)
        shifted = torch.softmax(model.forward_all(clips.roll(1, -1), mask)["logits"], 1)[0].numpy()
    want = torch.softmax(out["logits"], 1)[0].numpy()
    assert np.abs(shifted - want).max() > SEES_SKEW
    assert record["clip"]["model"]["label"] == CLASSES[want.argmax()]
    np.testing.assert_allclose([record["clip"]["model"]["scores"][c] for c in CLASSES], want, atol=ATOL)
    for frame, probs in zip(record["frames"], out["frame_probs"][0].numpy()):
        np.testing.assert_allclose([frame["probabilities"][c] for c in CLASSES], probs, atol=ATOL)
    # the comparison pools the frame logits at the model's inverse temperature, as `ncaer evaluate` does
    assert (record["clip"]["beta"], record["clip"]["pooled"]) == (1.0, "frame logits")
    # as probabilities over the classes, on clip.model's scale; video-tsp's own pooling is this one
    softmax = torch.softmax(torch.from_numpy(pool(out["frame_logits"][0].numpy(), "softmax", 1.0)), 0).numpy()
    np.testing.assert_allclose([record["clip"]["softmax"]["scores"][c] for c in CLASSES], softmax, atol=ATOL)
    np.testing.assert_allclose(softmax, want, atol=ATOL)


@pytest.mark.parametrize("model,grayscale", [("preactresnet18", False), ("preactresnet18", True), ("feratt", False)])
def test_a_face_image_model_classifies_the_face_crop_as_evaluation_would(demo, inputs, model, grayscale, tmp_path):
    """A face-image model is given the detected face alone, at the run's image size and channels: what the
    evaluation path (image_store + ImageBatches) makes of the same file and face box. Videos are classified
    frame by frame, as with frame models."""
    run = write_run(tmp_path / "run", model, demo["build"], CLASSES, image_size=48, grayscale=grayscale)
    result = CliRunner().invoke(main, ["predict", str(inputs), "--run", str(run), "--out", str(tmp_path / "out"),
                                       "--frames", "3", "--no-annotate"])
    assert result.exit_code == 0, result.output
    records = {Path(r["input"]).name: r for r in
               json.loads((tmp_path / "out" / "predictions.json").read_text())["inputs"]}
    assert records["clip.avi"]["frames_with_face"] == 3 and "softmax" in records["clip.avi"]["clip"]
    image = inputs / "astronaut.png"
    face = records[image.name]["faces"][0]
    samples = pd.DataFrame({"path": [str(image)], "box": [tuple(face["box"])], "target": [None], "label_id": [0]})
    store = image_store(samples, 48, grayscale, tmp_path / "cache")
    images, *_ = next(iter(ImageBatches(store, 1, False).epoch(0)))
    net, _ = load_run(run)
    with torch.no_grad():
        # an untrained FERAtt's output hardly moves with a 1-pixel shift (9e-5); it sees a channel swap (6e-4)
        changed = images.flip(1) if model == "feratt" else images.roll(1, -1)
        want, shifted = (torch.softmax(net(x)["logits"], 1)[0].numpy() for x in (images, changed))
    assert np.abs(shifted - want).max() > SEES_SKEW
    np.testing.assert_allclose([face["probabilities"][c] for c in CLASSES], want, atol=ATOL)


@pytest.mark.parametrize("model", ["glamor", "preactresnet18", "video-mean"])
def test_every_evaluator_refuses_data_with_other_classes(model, tmp_path):
    data = (make_clip_dataset(tmp_path / "data", {"test": 1}, frames=2) if model_family(model) == "video"
            else make_dataset(tmp_path / "data", "face", {"test": 1}))
    run = write_run(tmp_path / "run", model, data, ["x", "y", "z"], frames=2, image_size=32,
                    cache_dir=str(tmp_path / "cache"), **SMALL)
    result = CliRunner().invoke(main, ["evaluate", "--run", str(run)])
    _refused(result, "has classes ['a', 'b', 'c'], the model was trained on ['x', 'y', 'z']")


def test_checkpoints_load_without_unpickling_code(demo, tmp_path):
    """Every key `ncaer train` stores loads with weights_only; a checkpoint that would run code when
    unpickled is refused, and the code never runs."""
    _, ckpt = load_run(demo["run"], str(demo["run"] / "last.pt"))
    assert {"optimizer", "scheduler", "history"} <= set(ckpt)
    marker = tmp_path / "ran"
    torch.save({**ckpt, "payload": _RunsOnLoad(marker)}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="refused"):
        load_run(tmp_path, str(tmp_path / "evil.pt"))
    assert not marker.exists()
    result = CliRunner().invoke(main, ["evaluate", "--run", str(tmp_path), "--checkpoint", str(tmp_path / "evil.pt")])
    _refused(result, "evil.pt")
    assert not marker.exists()


class _RunsOnLoad:
    """Unpickled, it creates `marker`: stands in for code a crafted checkpoint would run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)
