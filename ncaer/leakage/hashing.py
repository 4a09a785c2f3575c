"""Image fingerprints for leakage checks: perceptual hashes and a pixel-content hash.

- pHash (DCT hash, as in the ImageHash package): grayscale 32x32, 2-D DCT, the
  8x8 lowest frequencies against their median: 64 bits. Robust to re-encoding,
  small shifts and rescaling.
- dHash: grayscale 9x8, each pixel against its right neighbour: 64 bits. A second,
  differently built opinion used to confirm pHash matches.
- pixel hash: BLAKE2 of the decoded pixels and their shape, so the same pixels
  saved as PNG or as another file match, whatever the file bytes.

Perceptual hashes are computed from images decoded at reduced size where the
format allows it (JPEG's DCT scaling): the 32x32 thumbnail does not need more, and
decoding is the cost that matters.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

_BIT_WEIGHTS = (1 << np.arange(63, -1, -1, dtype=np.uint64)).astype(np.uint64)


def _pack(bits: np.ndarray) -> np.uint64:
    return np.uint64(np.bitwise_or.reduce(bits.ravel().astype(np.uint64) * _BIT_WEIGHTS))


def phash(gray: np.ndarray) -> np.uint64:
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8]
    return _pack(low > np.median(low))


def dhash(gray: np.ndarray) -> np.uint64:
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    return _pack(small[:, 1:] > small[:, :-1])


def pixel_hash(image: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(image.shape).encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int16)


def mask_box(image: np.ndarray, box, scale: float) -> np.ndarray:
    """Black out a face box given in full-resolution pixels on an image decoded at `scale`."""
    if box is None:
        return image
    x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
    out = image.copy()
    out[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = 0
    return out


def read_gray_reduced(path: str) -> tuple[np.ndarray | None, float]:
    """Grayscale image decoded at 1/4 size (JPEG decodes it directly, cheaply), or at full
    size when that would be under 64 px on the short side. Returns (image or None, scale)."""
    img = cv2.imread(path, cv2.IMREAD_REDUCED_GRAYSCALE_4)
    if img is None or min(img.shape) >= 64:
        return img, 0.25
    return cv2.imread(path, cv2.IMREAD_GRAYSCALE), 1.0


@dataclass(frozen=True)
class HashJob:
    path: str
    box: tuple[int, int, int, int] | None = None  # face box to mask before hashing (full-size pixels)


def hash_one(job: HashJob) -> tuple[int, int, str]:
    """(phash, dhash, error) for one image; error is "" when the image was read."""
    try:
        gray, scale = read_gray_reduced(job.path)
    except cv2.error as e:
        return 0, 0, f"cannot decode: {e.msg if hasattr(e, 'msg') else e}"
    if gray is None:
        reason = ("file not found" if not os.path.exists(job.path)
                  else "not a readable image (corrupt or unknown format)")
        return 0, 0, reason
    if job.box is not None:
        gray = mask_box(gray, job.box, scale)
    return int(phash(gray)), int(dhash(gray)), ""


def hash_images(jobs: list[HashJob], workers: int = 1, chunksize: int = 64):
    """pHash and dHash (uint64 arrays) and the error per image ("" if fine), in input order."""
    if workers > 1 and len(jobs) > chunksize:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(hash_one, jobs, chunksize=chunksize))
    else:
        results = [hash_one(j) for j in jobs]
    ph = np.array([r[0] for r in results], dtype=np.uint64)
    dh = np.array([r[1] for r in results], dtype=np.uint64)
    return ph, dh, [r[2] for r in results]


def read_pixels(path: str) -> np.ndarray | None:
    """Full decoded pixels, as stored (IMREAD_UNCHANGED keeps alpha and bit depth)."""
    return cv2.imread(path, cv2.IMREAD_UNCHANGED)
