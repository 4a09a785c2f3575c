"""Run a trained model on pictures and videos: detect faces, classify each face in its context.

Two runtimes with one interface: a run directory (PyTorch) or an exported ONNX
file (onnxruntime, CUDA when a GPU is present). This module imports torch only
for the PyTorch runtime, so ONNX inference works where torch is not installed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from glamor_model.data.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess, face_image, model_inputs, preprocess
from glamor_model.eval.plots import attention_overlay
from glamor_model.pooling import POOLINGS, PROBABILITY_BETA, pool
from ncaer.dataset.layout import IMAGE_EXTENSIONS
from ncaer.dataset.layout import VIDEO_EXTENSIONS as CORPUS_VIDEO_EXTENSIONS
from ncaer.faces.render import pixel_box
from ncaer.faces.subject import choose_subject
from ncaer.video.decode import DecodeError, container_index, decode_samples, upright_frames
from ncaer.video.sampling import sample_segments

METADATA_KEY = "ncaer"
VIDEO_EXTENSIONS = CORPUS_VIDEO_EXTENSIONS + (".webm",)


class PredictError(RuntimeError):
    """The input cannot be used (unreadable, no model...)."""


class Predictor:
    classes: list[str]
    prep: Preprocess
    normalize: bool
    runtime: str
    name: str  # the model's registry name
    family = "frame"  # what the model takes (glamor_model.models.registry): frame, face-image or video
    frames: int | None = None  # clip models: the frames per clip they were trained on

    def face_inputs(self, rgb: np.ndarray, box) -> tuple[np.ndarray, ...]:
        """One face's uint8 model inputs: its crop and the frame with it masked (frame models)."""
        return preprocess(rgb, box, self.prep)

    def __call__(self, *inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Stacked face_inputs -> probabilities (N, C), attention over the context crop (N, HW) or None."""
        raise NotImplementedError


class TorchPredictor(Predictor):
    """A run's model in PyTorch: a frame model (face and context), a face-image model (FERAtt,
    PreActResNet-18: the face alone) or a clip model (`clip`: the subject's faces over a video)."""

    def __init__(self, run: str | Path, checkpoint: str = "best", device: str = "auto"):
        import torch

        from glamor_model.engine.checkpoint import load_run
        from glamor_model.engine.device import pick_device
        from glamor_model.models import model_family

        self.torch, self.device = torch, pick_device(device)
        try:
            self.model, ckpt = load_run(run, checkpoint, self.device)
        except (FileNotFoundError, ValueError) as e:
            raise PredictError(str(e)) from e
        self.classes, self.normalize = ckpt["classes"], ckpt["normalize"]
        self.prep = Preprocess.from_saved(ckpt["prep"])
        self.name, self.family, config = ckpt["model_name"], model_family(ckpt["model_name"]), ckpt["config"]
        if self.family == "face-image":
            self.image_size, self.grayscale = config["image_size"], config["grayscale"]
        elif self.family == "video":
            self.frames = config["frames"]
        self.runtime = f"pytorch on {self.device}"

    def face_inputs(self, rgb, box):
        if self.family == "face-image":
            return (face_image(rgb, box, self.image_size, self.grayscale),)
        return super().face_inputs(rgb, box)

    def _scaled(self, x: np.ndarray, normalize: bool):
        """uint8 (..., H, W, C) -> float (..., C, H, W) on the device, as the training batches scale them."""
        t = self.torch.from_numpy(x).to(self.device).movedim(-1, -3).float().div(255)
        if normalize:
            t = (t - t.new_tensor(IMAGENET_MEAN)[:, None, None]) / t.new_tensor(IMAGENET_STD)[:, None, None]
        return t

    def __call__(self, *inputs):
        with self.torch.inference_mode():
            if self.family == "face-image":  # trained on [0, 1] images: ImageBatches does not normalise
                out = self.model(self._scaled(inputs[0], False))
                return self.torch.softmax(out["logits"].float(), 1).cpu().numpy(), None
            f, c = model_inputs(*inputs, self.prep, self.normalize)
            out = self.model.forward_all(self.torch.from_numpy(f).to(self.device),
                                         self.torch.from_numpy(c).to(self.device))
        probs = self.torch.softmax(out["logits"].float(), 1).cpu().numpy()
        return probs, (out["attention"].float().cpu().numpy() if "attention" in out else None)

    def clip(self, faces: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Clip model: uint8 face crops (T, S, S, 3) and the frames that have one (T,) -> the clip's
        probabilities by the model's own pooling (C,), and its per-frame probabilities and logits (T, C)."""
        with self.torch.inference_mode():
            out = self.model.forward_all(self._scaled(faces, self.normalize)[None],
                                         self.torch.from_numpy(mask).to(self.device)[None])
        return (self.torch.softmax(out["logits"].float(), 1)[0].cpu().numpy(),
                out["frame_probs"][0].float().cpu().numpy(), out["frame_logits"][0].float().cpu().numpy())


def read_metadata(path: str | Path, session=None) -> dict:
    import onnxruntime as ort

    session = session or ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise PredictError(f"{path} was not exported by `ncaer export` (no {METADATA_KEY!r} metadata)")
    return json.loads(meta[METADATA_KEY])


class OnnxPredictor(Predictor):
    def __init__(self, path: str | Path, device: str = "auto"):
        from ncaer.faces.runtime import DetectorError, make_session

        if not Path(path).is_file():
            raise PredictError(f"{path} not found; make one with `ncaer export --run RUN --onnx {path}`")
        try:
            self.session = make_session(str(path), device)
        except DetectorError as e:
            raise PredictError(str(e)) from e
        meta = read_metadata(path, self.session)
        self.classes, self.normalize = meta["classes"], meta["normalize"]
        self.prep = Preprocess.from_saved(meta["prep"])
        self.name = meta["model"]
        self.outputs = meta["outputs"]
        self.runtime = f"onnxruntime on {self.session.get_providers()[0]}"

    def __call__(self, faces, contexts):
        f, c = model_inputs(faces, contexts, self.prep, self.normalize)
        out = self.session.run(None, {"face": f, "context": c})
        return out[0], (out[1] if len(out) > 1 else None)


@dataclass
class FaceResult:
    box: tuple[int, int, int, int]
    score: float
    label: str
    probabilities: dict[str, float]
    attention: np.ndarray | None = None  # (h, w) over the evaluation crop of the context

    def to_json(self) -> dict:
        return {"box": list(self.box), "detector_score": round(self.score, 4), "label": self.label,
                "probabilities": {k: round(v, 5) for k, v in self.probabilities.items()}}


def classify_faces(rgb: np.ndarray, dets: np.ndarray, predictor: Predictor) -> list[FaceResult]:
    """Each detected face (with its own face masked in the context, for frame models) through the model in
    one batch."""
    h, w = rgb.shape[:2]
    boxes = [(pixel_box(d, w, h), float(d[4])) for d in dets]
    boxes = [(b, s) for b, s in boxes if b is not None]
    if not boxes:
        return []
    inputs = [predictor.face_inputs(rgb, b) for b, _ in boxes]
    probs, attention = predictor(*map(np.stack, zip(*inputs)))
    results = []
    for k, (box, score) in enumerate(boxes):
        side = int(round(np.sqrt(attention.shape[1]))) if attention is not None else 0
        results.append(FaceResult(box, score, predictor.classes[int(probs[k].argmax())],
                                  dict(zip(predictor.classes, map(float, probs[k]))),
                                  attention[k].reshape(side, -1) if attention is not None else None))
    return results


def classify_clip(frames: list[np.ndarray], subject: list[np.ndarray | None], predictor: TorchPredictor
                  ) -> tuple[list[FaceResult | None], np.ndarray | None, np.ndarray | None]:
    """A clip model once over the subject's face in each frame (`subject`: its detection or None; frames
    without it are masked out): per-frame results from the model's frame classifier, the clip
    probabilities of its own pooling and the frame logits of the frames with the subject (None, None
    when no frame has it)."""
    boxes = [pixel_box(d, rgb.shape[1], rgb.shape[0]) if d is not None else None for rgb, d in zip(frames, subject)]
    mask = np.array([b is not None for b in boxes])
    if not mask.any():
        return [None] * len(frames), None, None
    faces = np.stack([preprocess(rgb, b, predictor.prep)[0] for rgb, b in zip(frames, boxes)])  # black if none
    clip, frame_probs, frame_logits = predictor.clip(faces, mask)
    results = [FaceResult(b, float(d[4]), predictor.classes[int(p.argmax())],
                          dict(zip(predictor.classes, map(float, p)))) if b is not None else None
               for b, d, p in zip(boxes, subject, frame_probs)]
    return results, clip, frame_logits[mask]


def attention_region(shape, prep: Preprocess) -> tuple[int, int, int, int]:
    """The part of the frame the model's context crop covers (x1, y1, x2, y2)."""
    h, w = shape[:2]
    cy, cx = prep.centre
    sy, sx = h / prep.context_height, w / prep.context_width
    return round(cx * sx), round(cy * sy), round((cx + prep.crop) * sx), round((cy + prep.crop) * sy)


def annotate(rgb: np.ndarray, faces: list[FaceResult], prep: Preprocess, show_attention: bool = False) -> np.ndarray:
    """BGR image with each face's box and label, and optionally the first face's attention over the context."""
    out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if show_attention and faces and faces[0].attention is not None:
        x1, y1, x2, y2 = attention_region(rgb.shape, prep)
        out[y1:y2, x1:x2] = attention_overlay(out[y1:y2, x1:x2], faces[0].attention, alpha=0.4)
    scale = max(0.4, min(out.shape[:2]) / 600)
    for f in faces:
        x1, y1, x2, y2 = f.box
        cv2.rectangle(out, (x1, y1), (x2, y2), (0, 255, 0), max(1, round(2 * scale)))
        text = f"{f.label} {f.probabilities[f.label]:.2f}"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, 1)
        ty = max(th + 4, y1 - 4)
        cv2.rectangle(out, (x1, ty - th - 4), (x1 + tw + 4, ty + 2), (0, 255, 0), -1)
        cv2.putText(out, text, (x1 + 2, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def predict_image(path: Path, detector, predictor: Predictor, subject_only: bool = False):
    """(JSON record, RGB image, face results) for one picture."""
    if predictor.family == "video":
        raise PredictError(f"{path}: {predictor.name} is a clip model; it classifies videos, not pictures")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise PredictError(f"{path}: not a readable image")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    dets = detector.detect([rgb])[0]
    if subject_only and len(dets):
        dets = dets[np.argmax((dets[:, 2] - dets[:, 0]) * (dets[:, 3] - dets[:, 1]) * dets[:, 4])][None]
    faces = classify_faces(rgb, dets, predictor)
    record = {"input": str(path), "kind": "image", "width": rgb.shape[1], "height": rgb.shape[0],
              "faces": [f.to_json() for f in faces]}
    if not faces:
        record["warning"] = "no face found"
    return record, rgb, faces


@dataclass
class VideoPrediction:
    record: dict
    frame_faces: dict[int, FaceResult] = field(default_factory=dict)  # frame index -> subject's result


def predict_video(path: Path, detector, predictor: Predictor, frames: int = 16, beta: float | None = None,
                  decoder: str = "decord") -> VideoPrediction:
    """The subject's emotion in `frames` frames (middles of equal-duration segments), pooled over the clip:
    a frame model's frame probabilities by mean, max and temporal softmax (`beta`, default 5); a clip
    model's by its own pooling, and its frame logits by the three for comparison, as `ncaer evaluate`
    pools them (`beta` defaults to the model's inverse temperature)."""
    choose = lambda info: sample_segments(info.timestamps, info.end_time, frames, "middle")  # noqa: E731
    decoded = None
    errors = []
    for backend in (decoder, "pyav" if decoder != "pyav" else "decord"):
        try:
            decoded = decode_samples(str(path), backend, choose)
            break
        except DecodeError as e:
            errors.append(f"{backend}: {e}")
    if decoded is None:
        raise PredictError(f"{path}: not a readable video ({'; '.join(errors)})")
    dets = detector.detect(decoded.frames)
    subject = [d[row] if row is not None else None for d, row in zip(dets, choose_subject(dets))]
    if predictor.family == "video":
        faces, clip, frame_logits = classify_clip(decoded.frames, subject, predictor)
    else:
        faces = []
        for rgb, d in zip(decoded.frames, subject):
            found = classify_faces(rgb, d[None], predictor) if d is not None else []
            faces.append(found[0] if found else None)
    per_frame, results, probs = [], {}, []
    for pick, frame_dets, face in zip(decoded.picks, dets, faces):
        entry = {"frame_index": pick.frame_index, "timestamp_s": round(pick.timestamp_s, 4),
                 "faces_seen": len(frame_dets)}
        if face is not None:
            results[pick.frame_index] = face
            probs.append([face.probabilities[c] for c in predictor.classes])
            entry.update(face.to_json())
        per_frame.append(entry)
    record = {"input": str(path), "kind": "video", "frames_sampled": len(per_frame), "frames_with_face": len(probs),
              "n_frames": decoded.info.n_frames, "fps": round(decoded.info.fps, 3), "frames": per_frame}
    if probs:
        record["clip"] = {}
        if predictor.family == "video":  # the clip model's own pooling; the others pool its frame logits
            record["clip"]["model"] = _clip_entry(clip, predictor.classes)
            scores, pooled = frame_logits, "frame logits"
            beta = predictor.model.inv_temperature if beta is None else beta
        else:
            scores, pooled = np.array(probs), "frame probabilities"
            beta = PROBABILITY_BETA if beta is None else beta
        for how in POOLINGS:
            pooled_scores = pool(scores, how, beta)
            if predictor.family == "video":  # pooled logits -> probabilities, on the scale of clip.model
                pooled_scores = np.exp(pooled_scores - pooled_scores.max())
                pooled_scores /= pooled_scores.sum()
            record["clip"][how] = _clip_entry(pooled_scores, predictor.classes)
        record["clip"].update(beta=beta, pooled=pooled)
    else:
        record["warning"] = "no face found in any sampled frame"
    return VideoPrediction(record, results)


def _clip_entry(scores: np.ndarray, classes: list[str]) -> dict:
    return {"label": classes[int(scores.argmax())], "scores": {c: round(float(v), 5) for c, v in zip(classes, scores)}}


def write_annotated_video(path: Path, out: Path, prediction: VideoPrediction, prep: Preprocess,
                          show_attention: bool = False) -> None:
    """Every frame of the video, with the box and label of the nearest analysed frame."""
    import av

    analysed = sorted(prediction.frame_faces)
    rate = Fraction(container_index(str(path)).fps or 25).limit_denominator(1001)
    with av.open(str(out), "w") as dst:
        enc = dst.add_stream("libx264", rate=rate, options={"crf": "23", "preset": "veryfast"})
        enc.pix_fmt = "yuv420p"
        # frames as the build sees them (upright, without those an edit list hides), so the boxes line up
        for i, rgb in enumerate(upright_frames(str(path))):
            if i == 0:
                enc.width, enc.height = rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2
            faces = []
            if analysed:
                nearest = min(analysed, key=lambda k: abs(k - i))
                faces = [prediction.frame_faces[nearest]]
            bgr = annotate(rgb, faces, prep, show_attention)[: enc.height, : enc.width]
            for packet in enc.encode(av.VideoFrame.from_ndarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), format="rgb24")):
                dst.mux(packet)
        for packet in enc.encode():
            dst.mux(packet)


def list_inputs(target: Path) -> list[Path]:
    if target.is_dir():
        files = sorted(p for p in target.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)
        if not files:
            raise PredictError(f"{target} holds no images or videos")
        return files
    if not target.exists():
        raise PredictError(f"{target} does not exist")
    if target.suffix.lower() not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
        raise PredictError(f"{target}: not an image ({', '.join(IMAGE_EXTENSIONS)}) or video "
                           f"({', '.join(VIDEO_EXTENSIONS)})")
    return [target]


def run_predict(target: Path, predictor: Predictor, detector, out: Path, subject_only: bool = False,
                frames: int | None = None, beta: float | None = None, show_attention: bool = False,
                annotate_files: bool = True, on_item=None) -> dict:
    """Predict every input; write predictions.json and annotated copies in `out`. `frames` per video:
    by default a clip model's own, else 16."""
    paths = list_inputs(target)  # before the output folder exists: a bad target leaves nothing behind
    if predictor.family == "video" and not any(p.suffix.lower() in VIDEO_EXTENSIONS for p in paths):
        raise PredictError(f"{predictor.name} is a clip model; it classifies videos "
                           f"({', '.join(VIDEO_EXTENSIONS)}), and {target} holds none")
    frames = frames or predictor.frames or 16
    out.mkdir(parents=True, exist_ok=True)
    records, analysed, t0 = [], 0, time.perf_counter()
    for path in paths:
        try:
            if path.suffix.lower() in VIDEO_EXTENSIONS:
                pred = predict_video(path, detector, predictor, frames, beta)
                record = pred.record
                analysed += record["frames_sampled"]
                if annotate_files and pred.frame_faces:
                    write_annotated_video(path, out / f"{path.stem}_annotated.mp4", pred, predictor.prep,
                                          show_attention)
            else:
                record, rgb, faces = predict_image(path, detector, predictor, subject_only)
                analysed += 1
                if annotate_files:
                    cv2.imwrite(str(out / f"{path.stem}_annotated.jpg"), annotate(rgb, faces, predictor.prep,
                                                                                  show_attention))
        except PredictError as e:
            record = {"input": str(path), "error": str(e)}
        records.append(record)
        if on_item:
            on_item(record)
    seconds = time.perf_counter() - t0
    summary = {"runtime": predictor.runtime, "model": predictor.name, "detector": detector.name,
               "classes": predictor.classes,
               "inputs": records, "frames_analysed": analysed, "seconds": round(seconds, 3),
               "frames_per_s": round(analysed / seconds, 3) if seconds > 0 else None}
    (out / "predictions.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
