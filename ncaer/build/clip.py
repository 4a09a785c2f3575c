"""One clip, start to finish: decode the sampled frames, detect faces, write the files.

This runs inside a worker process. It returns manifest rows and the problems met,
and never raises for a bad file: the build records the reason and goes on. Failures
of the machine rather than the file are marked so that they are not recorded as
final: `retry` (out of memory: the next run tries again) and `stop` (the output
cannot be written, e.g. a full disk: the build stops, and the rerun redoes the clip).
"""

from __future__ import annotations

import errno
import math
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from ncaer.atomic import write_bytes
from ncaer.faces.base import Detector
from ncaer.faces.detectors import create_detector
from ncaer.faces.render import encode_jpeg, face_crop, mask_face, pixel_box
from ncaer.faces.subject import choose_subject
from ncaer.video.decode import BACKENDS, Decoded, DecodeError, decode_samples
from ncaer.video.sampling import sample_segments

from .config import BuildConfig
from .corpus import Clip

MIN_SIDE = 16  # frames smaller than this cannot hold a usable face


@dataclass(frozen=True)
class ClipJob:
    clip: Clip
    clip_name: str
    label_id: int
    fingerprint: str  # source file content identity (see units.fingerprint)
    decoders: tuple[str, ...]  # decoders still to try, in order

    @property
    def key(self) -> str:
        return self.clip.rel_path


@dataclass
class ClipResult:
    rows: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # reasons, in the order met
    used: bool = False  # at least one sample was written
    decoder: str = ""
    frames_decoded: int = 0
    no_face: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: {"decode": 0.0, "detect": 0.0, "write": 0.0})
    subject: list[float] | None = None  # --group-by identity: mean identity embedding of the written faces
    retry: str = ""  # why the machine, not the file, failed this clip: not final, the next run retries it
    stop: str = ""  # why the output cannot be written: the build must stop


class WorkerState:
    """What a worker process keeps between clips: the config and a loaded detector."""

    def __init__(self, config: BuildConfig, tmp_dir: str):
        self.config = config
        self.tmp_dir = tmp_dir
        self.detector, self.info = start_detector(config)
        if config.by_identity:  # a model that cannot load stops the build here, not at each clip
            from ncaer.identity.models import load_embedder

            load_embedder(config.identity_model, config.device)


def start_detector(config: BuildConfig) -> tuple[Detector, dict]:
    """The build's detector, warmed up, and what the build report says of it (the same in every engine)."""
    detector = create_detector(config.detector, config.detector_model, config.device, config.det_size,
                               config.threshold)
    return detector, {"detector": detector.name, "provider": detector.provider, "model": detector.model_path,
                      "host": socket.gethostname(), **detector.warm_up()}


def init_worker(config: BuildConfig, tmp_dir: str) -> WorkerState:
    return WorkerState(config, tmp_dir)


def default_decoders(first: str) -> tuple[str, ...]:
    """The chosen decoder, then the others as fallbacks."""
    return (first,) + tuple(b for b in BACKENDS if b != first)


Report = Callable[[str, object], None]


def process_clip(state: WorkerState, job: ClipJob, report: Report = lambda event, value: None) -> ClipResult:
    """The local engine's whole clip in one worker: decode, detect, write."""
    result, decoded = decode_clip(state.config, job, report)
    if decoded is None:
        return result
    return detect_and_write(state.config, state.tmp_dir, state.detector, job, result, decoded)


def detect_and_write(cfg: BuildConfig, tmp_dir: str, detector: Detector, job: ClipJob, result: ClipResult,
                     decoded: Decoded) -> ClipResult:
    """A decoded clip's faces detected in one call, then its files written."""
    t = time.perf_counter()
    dets = detector.detect(decoded.frames)
    result.seconds["detect"] = time.perf_counter() - t
    return write_clip(cfg, tmp_dir, detector.name, job, result, decoded, dets)


def decode_clip(cfg: BuildConfig, job: ClipJob, report: Report = lambda event, value: None):
    """Decode the clip's sampled frames, trying its decoders in order.

    Returns (result so far, decoded frames), or (final result, None) when the clip ends here."""
    result = ClipResult()
    t0 = time.perf_counter()

    def choose(info):
        report("frames", info.n_frames)
        return sample_segments(info.timestamps, info.end_time, cfg.segments, cfg.pick, cfg.seed, job.clip.video_id)

    decoded, out_of_memory = None, False
    for decoder in job.decoders:
        report("decoding", decoder)
        try:
            decoded = decode_samples(job.clip.source_path, decoder, choose)
            break
        except DecodeError as e:
            result.problems.append(f"{decoder}: {e}")
        except MemoryError:
            result.problems.append(f"{decoder}: out of memory")
            out_of_memory = True
    result.seconds["decode"] = time.perf_counter() - t0
    if decoded is None:
        if out_of_memory:
            result.retry = "out of memory"
        return result, None
    info = decoded.info
    result.decoder = decoded.decoder
    result.problems.extend(decoded.notes)
    result.frames_decoded = info.n_frames
    if info.declared_frames > info.n_frames + 1:
        result.problems.append(f"truncated: {info.n_frames} of {info.declared_frames} declared frames decodable")
    if info.n_frames < cfg.segments:
        result.problems.append(f"only {info.n_frames} frame(s): fewer than {cfg.segments} segments")
    height, width = decoded.frames[0].shape[:2]
    if min(height, width) < MIN_SIDE:
        result.problems.append(f"frames too small ({width}x{height})")
        return result, None
    return result, decoded


def write_clip(cfg: BuildConfig, tmp_dir: str, detector_name: str, job: ClipJob, result: ClipResult,
               decoded: Decoded, dets: list) -> ClipResult:
    """Choose the subject among the detected faces, write each sample's files, and finish the result."""
    info, picks, frames = decoded.info, decoded.picks, decoded.frames
    n_segments = min(cfg.segments, info.n_frames)
    height, width = frames[0].shape[:2]
    t2 = time.perf_counter()
    subject = choose_subject(dets)
    faces = []  # (JPEG as written, box) of each face, for --group-by identity
    for pick, frame, frame_dets, row_index in zip(picks, frames, dets, subject):
        det = frame_dets[row_index] if row_index is not None else None
        box = pixel_box(det, width, height) if det is not None else None
        if box is None:
            result.no_face += 1
            if cfg.no_face == "drop":
                continue
        try:
            jpeg, row = _write_sample(cfg, tmp_dir, detector_name, job, pick, frame, box, det)
        except OSError as e:
            if e.errno == errno.ENAMETOOLONG:  # the clip's own name is at fault: final
                result.problems.append(f"cannot write its files: {e.strerror}")
            else:  # the output folder is at fault (full disk, read-only, tmp gone): stop; the rerun redoes the clip
                result.stop = f"cannot write {e.filename or 'to the output'}: {e.strerror or e}"
            result.rows = []
            return result
        row.update(n_segments=n_segments, n_frames=info.n_frames, fps=round(info.fps, 4), n_faces=len(frame_dets),
                   decoder=result.decoder)
        result.rows.append(row)
        if box is not None:
            faces.append((jpeg, box))
    result.seconds["write"] = time.perf_counter() - t2
    if cfg.by_identity and faces:
        t3 = time.perf_counter()
        result.subject = _subject(cfg.identity_model, cfg.device, faces, result)
        result.seconds["identity"] = time.perf_counter() - t3
    result.used = bool(result.rows)
    if not result.used:
        result.problems.append("no face found in any sampled frame (--no-face drop)")
    return result


def _subject(model: str, device: str, faces: list[tuple[bytes, tuple]], result: ClipResult) -> list[float] | None:
    """The clip's subject: the mean identity embedding of its faces, read back from the JPEG as written so
    that `check-leakage --identity` on the build sees the same pixels. A face the model cannot take is
    reported and left out of the mean, as the check leaves it out; None when no face could be embedded."""
    from ncaer.identity.models import load_embedder

    embedder = load_embedder(model, device)
    vectors = []
    for jpeg, box in faces:
        image = cv2.cvtColor(cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        try:
            vectors.append(embedder.embed(image, box))
        except MemoryError:  # the machine, not the face: the rerun tries the clip again
            result.retry = "out of memory while embedding a face"
            return None
        except Exception as e:  # noqa: BLE001 - the model's failure on this face is the clip's problem, reported
            result.problems.append(f"identity embedding failed for the face at {tuple(box)}: {e}")
    return [float(v) for v in np.mean(vectors, axis=0, dtype=np.float32)] if vectors else None


def _write_sample(cfg: BuildConfig, tmp_dir: str, detector_name: str, job: ClipJob, pick, frame, box,
                  det) -> tuple[bytes, dict]:
    """Write the sample's four files; return the full frame's JPEG and the sample's manifest row (clip-level
    fields added by the caller)."""
    out = cfg.out
    clip = job.clip
    sample_id = f"{clip.split}/{clip.label}/{job.clip_name}_{pick.segment}"
    image_path, crop_path = f"images/{sample_id}.jpg", f"crop/{sample_id}.txt"
    face_path, context_path = f"faces/{sample_id}.jpg", f"context/{sample_id}.jpg"
    jpeg = encode_jpeg(frame, cfg.jpeg_quality)
    write_bytes(os.path.join(out, image_path), jpeg, tmp_dir)
    write_bytes(os.path.join(out, context_path), encode_jpeg(mask_face(frame, box, cfg.mask), cfg.jpeg_quality),
                 tmp_dir)
    if box is not None:
        crop = face_crop(frame, box, cfg.face_margin)
        write_bytes(os.path.join(out, face_path), encode_jpeg(crop, cfg.jpeg_quality), tmp_dir)
    # the authors' loaders read one line x1,y1,x2,y2; an empty file means no face
    crop_text = "{},{},{},{}\n".format(*box) if box is not None else ""
    write_bytes(os.path.join(out, crop_path), crop_text.encode(), tmp_dir)
    height, width = frame.shape[:2]
    return jpeg, {
        "sample_id": sample_id,
        "split": clip.split,
        "label": clip.label,
        "label_id": job.label_id,
        "video_id": clip.video_id,
        "group": clip.group,
        "source_path": clip.rel_path,
        "source_fingerprint": job.fingerprint,
        "segment": pick.segment,
        "frame_index": pick.frame_index,
        "timestamp_s": round(pick.timestamp_s, 6),
        "width": width,
        "height": height,
        "face_x1": box[0] if box else None,
        "face_y1": box[1] if box else None,
        "face_x2": box[2] if box else None,
        "face_y2": box[3] if box else None,
        "face_score": round(float(det[4]), 4) if box else math.nan,
        "has_face": box is not None,
        "detector": detector_name,
        "image_path": image_path,
        "crop_path": crop_path,
        "face_path": face_path if box is not None else "",
        "context_path": context_path,
    }

