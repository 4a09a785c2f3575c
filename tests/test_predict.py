"""`ncaer export`, `ncaer predict`, and clip-level evaluation, on the demo corpus."""

import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from conftest import box_iou
from glamor_model.engine.config import TrainConfig
from glamor_model.engine.loop import train
from glamor_model.eval.evaluate import evaluate_run
from glamor_model.models.resnet import ResNet18
from ncaer.build.config import BuildConfig
from ncaer.build.engine import run_build
from ncaer.cli import main
from ncaer.generated.demo import make_demo_corpus

SMALL = dict(face_size=48, context_height=64, context_width=86, crop=56)


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
def exported(demo):
    path = demo["base"] / "model.onnx"
    result = CliRunner().invoke(main, ["export", "--run", str(demo["run"]), "--onnx", str(path)])
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


def test_pytorch_and_onnx_runtimes_agree(demo, exported, inputs, tmp_path):
    image = inputs / "astronaut.png"
    runs = {}
    for name, flag in (("torch", ["--run", str(demo["run"])]), ("onnx", ["--onnx", str(exported)])):
        result = CliRunner().invoke(main, ["predict", str(image), *flag, "--out", str(tmp_path / name),
                                           "--no-annotate"])
        assert result.exit_code == 0, result.output
        runs[name] = json.loads((tmp_path / name / "predictions.json").read_text())["inputs"][0]["faces"][0]
    assert runs["torch"]["label"] == runs["onnx"]["label"]
    for c, p in runs["torch"]["probabilities"].items():
        assert p == pytest.approx(runs["onnx"]["probabilities"][c], abs=1e-4)


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
    assert set(results["pooling_comparison"]) >= {"video-tsp (trained pooling)", "mean pooling of its frame scores"}
    assert "learned_beta" in results


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
