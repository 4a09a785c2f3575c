"""`ncaer predict` and `ncaer export`: a trained model on pictures and videos, and its ONNX file."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from .common import InverseTemperature, out_console


@click.command()
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--run", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory of `ncaer train` (PyTorch).")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Model exported by `ncaer export` (onnxruntime; no torch needed).")
@click.option("--checkpoint", default="best", show_default=True, help="With --run: best, last or a .pt path.")
@click.option("--out", type=click.Path(path_type=Path), default="predictions", show_default=True,
              help="Folder for predictions.json and annotated images/videos.")
@click.option("--subject-only", is_flag=True, help="Images: only the most prominent face (videos always follow "
                                                   "one subject).")
@click.option("--frames", default=None, type=click.IntRange(1),
              help="Videos: frames analysed (middles of equal-duration segments) [default: a clip model's own, "
                   "else 16].")
@click.option("--beta", default=None, type=InverseTemperature(),
              help="Videos: temporal softmax pooling's inverse temperature: a frame model's frame probabilities "
                   "[5]; a clip model's frame logits, beside its own pooling [its own].")
@click.option("--attention", is_flag=True, help="Overlay the context attention on annotated outputs.")
@click.option("--no-annotate", is_flag=True, help="Only write predictions.json.")
@click.option("--detector", default="centerface", show_default=True, type=click.Choice(["centerface", "scrfd"]))
@click.option("--detector-model", default=None, help="scrfd: .onnx file, insightface pack directory or name.")
@click.option("--threshold", default=0.5, show_default=True, type=click.FloatRange(0, 1))
@click.option("--device", default="auto", show_default=True, help="Where the model and detector run.")
def predict(target, run, onnx_path, checkpoint, out, subject_only, frames, beta, attention, no_annotate, detector,
            detector_model, threshold, device):
    """Recognise emotions in an image, a folder of images and videos, or a video.

    Faces are detected; each face (or, in videos, one subject followed over the clip)
    is classified: in its context by frame models, alone by face-image models (FERAtt,
    PreActResNet-18). Clip models (video-*) classify videos only, with their own
    pooling over the subject's faces. Prints a table and writes OUT/predictions.json (per
    face: box, label, probabilities; per video: per-frame results and the clip label
    pooled by mean, max and temporal softmax) and annotated copies of the inputs.
    """
    from glamor_model.serve.predict import OnnxPredictor, PredictError, TorchPredictor, run_predict
    from ncaer.faces.detectors import create_detector
    from ncaer.faces.runtime import DetectorError

    if (run is None) == (onnx_path is None):
        raise click.UsageError("give exactly one of --run RUN or --onnx MODEL")
    try:
        predictor = TorchPredictor(run, checkpoint, device) if run else OnnxPredictor(onnx_path, device)
        face_detector = create_detector(detector, detector_model, "cpu" if device == "cpu" else "auto",
                                        threshold=threshold)
        summary = run_predict(target, predictor, face_detector, out, subject_only, frames, beta, attention,
                              not no_annotate)
    except (PredictError, DetectorError) as e:
        raise click.ClickException(str(e)) from e
    table = Table(title=f"predictions ({summary['runtime']}; {summary['frames_analysed']} frames in "
                        f"{summary['seconds']:.1f} s, {summary['frames_per_s'] or 0:.1f} frames/s)")
    for col in ("input", "face / frame", "box", "label", "p"):
        table.add_column(col)
    found = False
    for rec in summary["inputs"]:
        name = Path(rec["input"]).name
        if "error" in rec:
            table.add_row(name, "", "", f"[red]{rec['error']}", "")
        elif rec["kind"] == "image":
            for k, f in enumerate(rec["faces"]):
                table.add_row(name, str(k), ",".join(map(str, f["box"])), f["label"],
                              f"{f['probabilities'][f['label']]:.2f}")
            if not rec["faces"]:
                table.add_row(name, "", "", "[yellow]no face found", "")
            found |= bool(rec["faces"])
        elif "clip" in rec:
            found = True
            c = rec["clip"]
            kinds = [k for k in ("model", "softmax", "mean", "max") if k in c]  # a clip model's own pooling first
            labels = " / ".join(f"{c[k]['label']} ({summary['model'] if k == 'model' else k})" for k in kinds)
            table.add_row(name, f"clip ({rec['frames_with_face']}/{rec['frames_sampled']} frames)", "", labels,
                          f"{c[kinds[0]]['scores'][c[kinds[0]]['label']]:.2f}")
        else:
            table.add_row(name, "clip", "", "[yellow]no face found", "")
    out_console.print(table)
    out_console.print(f"written to {out / 'predictions.json'}")
    if not found:
        raise click.ClickException(f"no face found in {target}")


@click.command()
@click.option("--run", required=True, type=click.Path(exists=True, file_okay=False), help="Run directory.")
@click.option("--onnx", "onnx_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output .onnx file.")
@click.option("--checkpoint", default="best", show_default=True)
def export(run, onnx_path, checkpoint):
    """Export a trained frame model to ONNX (dynamic batch), checking that onnxruntime reproduces
    PyTorch. The file carries the classes and preprocessing, so `ncaer predict --onnx` needs nothing else.
    Face-image and clip models are not exported: `ncaer predict --run` serves them."""
    from glamor_model.serve.export import export_onnx

    try:
        info = export_onnx(run, onnx_path, checkpoint)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from e
    out_console.print(f"exported {info['model']} to {info['path']} (outputs: {', '.join(info['outputs'])}); "
                      f"onnxruntime vs PyTorch max abs difference {info['max_abs_diff']:.2e}")
