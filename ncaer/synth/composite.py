"""`ncaer synth`: faces pasted on backgrounds, with the clean face kept as a target (FERAtt's protocol).

Each face crop of an `ncaer build` output is warped (random scale, horizontal flip,
rotation, shear), its light matched to the background under it, and blended in with
a feathered ellipse, at a random place of a background: by default the face-masked
context image of another clip of the same split, or any image of a folder. The
same warp of the face on black is the reconstruction target. A face never changes
split; everything is drawn from a generator seeded by (seed, sample), so the output
is the same whatever the worker count.
"""

from __future__ import annotations

import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ncaer.atomic import write_bytes, write_csv, write_text
from ncaer.dataset.layout import IMAGE_EXTENSIONS
from ncaer.dataset.manifest import COLUMNS, read_manifest, to_frame, write_manifest
from ncaer.faces.render import encode_jpeg
from ncaer.video.sampling import video_seed

SYNTH_COLUMNS = ["target_path", "source_sample", "background"]


@dataclass(frozen=True)
class SynthConfig:
    faces: str
    out: str
    backgrounds: str | None = None  # None: context images of other clips of the faces dataset
    size: int = 128
    face_min: float = 0.3  # face width as a fraction of the image
    face_max: float = 0.6
    max_rotation: float = 15.0
    max_shear: float = 0.15
    light_match: float = 0.7  # 0: face left as it is; 1: face brightness/contrast set to the background's
    per_face: int = 1
    seed: int = 0
    workers: int = 1


def backgrounds_by_split(config: SynthConfig, faces: pd.DataFrame) -> dict[str, list[tuple[str, str]]]:
    """Background candidates per split: (path, video_id) pairs; video_id "" for folder images."""
    if config.backgrounds is None:
        root = Path(config.faces)
        return {s: list(zip((str(root / p) for p in g["context_path"]), g["video_id"]))
                for s, g in faces.groupby("split")}
    source = Path(config.backgrounds)
    if (source / "manifest.parquet").is_file():
        m = read_manifest(source)
        return {s: list(zip((str(source / p) for p in g["context_path"]), g["video_id"])) for s, g in
                m.groupby("split")}
    images = sorted(str(p) for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not images:
        raise ValueError(f"{source} holds no images to use as backgrounds")
    return {s: [(p, "") for p in images] for s in faces["split"].unique()}


def _warp_face(face: np.ndarray, width: int, rng, config: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """The face scaled to `width`, flipped, rotated and sheared; returns (warped face, alpha 0..1)."""
    h, w = face.shape[:2]
    scale = width / w
    if rng.random() < 0.5:
        face = face[:, ::-1]
    angle = rng.uniform(-config.max_rotation, config.max_rotation)
    shear = rng.uniform(-config.max_shear, config.max_shear)
    out = int(math.ceil(1.5 * max(h, w) * scale))  # room for rotation
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[0, 1] += shear * scale
    m[:, 2] += (out / 2 - w / 2, out / 2 - h / 2)
    warped = cv2.warpAffine(np.ascontiguousarray(face), m, (out, out), flags=cv2.INTER_LINEAR)
    ellipse = np.zeros((h, w), np.float32)
    cv2.ellipse(ellipse, ((w / 2, h / 2), (w * 0.95, h * 0.98), 0), 1.0, -1)
    ellipse = cv2.GaussianBlur(ellipse, (0, 0), max(w, h) * 0.03)
    alpha = cv2.warpAffine(ellipse, m, (out, out), flags=cv2.INTER_LINEAR)
    return warped, alpha


def _compose(face: np.ndarray, background: np.ndarray, rng, config: SynthConfig):
    """(composite, target on black, box) at config.size x config.size."""
    s = config.size
    bh, bw = background.shape[:2]
    k = s / min(bh, bw)
    bg = cv2.resize(background, (max(s, round(bw * k)), max(s, round(bh * k))), interpolation=cv2.INTER_AREA)
    y0, x0 = int(rng.integers(0, bg.shape[0] - s + 1)), int(rng.integers(0, bg.shape[1] - s + 1))
    bg = bg[y0 : y0 + s, x0 : x0 + s].astype(np.float32)
    warped, alpha = _warp_face(face, max(4, round(rng.uniform(config.face_min, config.face_max) * s)), rng, config)
    ys, xs = np.nonzero(alpha > 0.05)
    fy1, fy2, fx1, fx2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    warped, alpha = warped[fy1:fy2, fx1:fx2].astype(np.float32), alpha[fy1:fy2, fx1:fx2, None]
    fh, fw = alpha.shape[:2]
    fh, fw = min(fh, s), min(fw, s)
    warped, alpha = warped[:fh, :fw], alpha[:fh, :fw]
    py, px = int(rng.integers(0, s - fh + 1)), int(rng.integers(0, s - fw + 1))
    region = bg[py : py + fh, px : px + fw]
    weights = alpha[..., 0] > 0.5
    if config.light_match > 0 and weights.any():
        f_mean, f_std = warped[weights].mean(0), warped[weights].std(0) + 1e-3
        b_mean, b_std = region.reshape(-1, 3).mean(0), region.reshape(-1, 3).std(0) + 1e-3
        lit = (warped - f_mean) * (f_std + config.light_match * (b_std - f_std)) / f_std
        lit = lit + f_mean + config.light_match * (b_mean - f_mean)
    else:
        lit = warped
    composite = bg.copy()
    composite[py : py + fh, px : px + fw] = alpha * np.clip(lit, 0, 255) + (1 - alpha) * region
    target = np.zeros((s, s, 3), np.float32)
    target[py : py + fh, px : px + fw] = alpha * warped
    return composite.astype(np.uint8), target.astype(np.uint8), (px, py, px + fw, py + fh)


def render(row: dict, config: SynthConfig, backgrounds: list[tuple[str, str]], rng):
    """One composite of the face of `row` (an `ncaer build` row) on a background of another clip, all drawn
    from `rng`: (composite BGR, target BGR, box, background path), or a string saying what was unreadable."""
    face = cv2.imread(str(Path(config.faces) / row["face_path"]), cv2.IMREAD_COLOR)
    if face is None:
        return f"{row['face_path']}: unreadable face crop"
    candidates = [b for b in backgrounds if b[1] != row["video_id"]] or backgrounds
    background_path = candidates[int(rng.integers(len(candidates)))][0]
    background = cv2.imread(background_path, cv2.IMREAD_COLOR)
    if background is None:
        return f"{background_path}: unreadable background"
    return (*_compose(face, background, rng, config), background_path)


def _make_one(args):
    row, config, backgrounds, k = args
    made = render(row, config, backgrounds, np.random.default_rng([config.seed, video_seed(row["sample_id"]), k]))
    if isinstance(made, str):
        return None, made
    composite, target, box, background_path = made
    sample_id = f"{row['sample_id']}_s{k}"
    image_path, target_path = f"images/{sample_id}.jpg", f"targets/{sample_id}.png"
    tmp = str(Path(config.out) / ".ncaer" / "tmp")
    write_bytes(os.path.join(config.out, image_path), encode_jpeg(composite[..., ::-1], 95), tmp)
    ok, png = cv2.imencode(".png", target)
    write_bytes(os.path.join(config.out, target_path), png.tobytes(), tmp)
    write_bytes(os.path.join(config.out, f"crop/{sample_id}.txt"), "{},{},{},{}\n".format(*box).encode(), tmp)
    out = {c: row.get(c) for c in COLUMNS}
    out.update(sample_id=sample_id, image_path=image_path, crop_path=f"crop/{sample_id}.txt", face_path="",
               context_path="", width=config.size, height=config.size, face_x1=box[0], face_y1=box[1],
               face_x2=box[2], face_y2=box[3], n_faces=1, has_face=True, target_path=target_path,
               source_sample=row["sample_id"], background=os.path.relpath(background_path, config.faces))
    return out, ""


def synthesize(config: SynthConfig) -> tuple[pd.DataFrame, list[str]]:
    """Write the synthetic dataset; returns its manifest and the problems met."""
    faces = read_manifest(config.faces)
    faces = faces[faces["has_face"]].reset_index(drop=True)
    if faces.empty:
        raise ValueError(f"{config.faces} has no samples with a face")
    backgrounds = backgrounds_by_split(config, faces)
    (Path(config.out) / ".ncaer" / "tmp").mkdir(parents=True, exist_ok=True)
    jobs = [(row, config, backgrounds.get(row["split"], []), k) for row in faces.to_dict("records")
            for k in range(config.per_face)]
    if any(not j[2] for j in jobs):
        raise ValueError("no background image for some split")
    if config.workers > 1:
        with ProcessPoolExecutor(config.workers) as pool:
            results = list(pool.map(_make_one, jobs, chunksize=16))
    else:
        results = [_make_one(j) for j in jobs]
    rows = [r for r, _ in results if r is not None]
    problems = [p for _, p in results if p]
    manifest = to_frame(rows)
    extra = pd.DataFrame(rows)[["sample_id"] + SYNTH_COLUMNS].set_index("sample_id")
    manifest = manifest.join(extra, on="sample_id")
    write_manifest(manifest, config.out)
    write_csv(pd.DataFrame({"problem": problems}), Path(config.out) / "failures.csv")
    classes = json.loads((Path(config.faces) / "build.json").read_text())["corpus"]["classes"] \
        if (Path(config.faces) / "build.json").is_file() else sorted(manifest["label"].unique())
    # absolute, so that training with --fresh-composites finds them from any folder
    recorded = {**asdict(config), **{k: os.path.abspath(v) for k in ("faces", "backgrounds", "out")
                                     if (v := getattr(config, k))}}
    write_text(json.dumps({"kind": "synthetic", "synth": recorded, "corpus": {"classes": classes},
                           "counts": manifest["split"].value_counts().to_dict()}, indent=2) + "\n",
               Path(config.out) / "build.json")
    return manifest, problems
