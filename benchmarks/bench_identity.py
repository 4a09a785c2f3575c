"""Identity embeddings per second on this machine (dlib ResNet on one thread, or an ArcFace pack), on the faces
of the photos the identity tests use, at the sizes a CAER frame shows them (faces 60-160 px high).

Usage: python benchmarks/bench_identity.py [--repeat 20] [--model dlib|PACK]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import people  # noqa: E402
from ncaer.identity.models import load_embedder  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--model", default="dlib", help="dlib, or an insightface pack (directory, name or .onnx)")
    args = ap.parse_args()
    embedder = load_embedder(args.model)
    faces = []
    for _, image, box in people():
        for height in (60, 100, 160):
            scale = height / (box[3] - box[1])
            small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            faces.append((small, tuple(int(v * scale) for v in box)))
    embedder.embed(*faces[0])
    t = time.perf_counter()
    for _ in range(args.repeat):
        for image, box in faces:
            embedder.embed(image, box)
    n = args.repeat * len(faces)
    seconds = time.perf_counter() - t
    print(f"{embedder.name}: {n / seconds:.1f} embeddings/s ({1000 * seconds / n:.1f} ms each, {n} faces, "
          f"dlib: one thread); a CAER-size build (13,201 clips x 5 samples) in {13201 * 5 * seconds / n / 60:.1f} min")


if __name__ == "__main__":
    main()
