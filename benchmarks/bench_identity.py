"""Identity embeddings per second on this machine (dlib ResNet, one thread), on the faces of the photos the
identity tests use, at the sizes a CAER frame shows them (faces 60-160 px high).

Usage: python benchmarks/bench_identity.py [--repeat 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from ncaer.identity.embed import DlibEmbedder  # noqa: E402
from test_identity import people  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    embedder = DlibEmbedder()
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
          f"one thread); a CAER-size build (13,201 clips x 5 samples) in {13201 * 5 * seconds / n / 60:.1f} min")


if __name__ == "__main__":
    main()
