"""Benchmark `ncaer check-leakage`: quality on a labelled benchmark, hashing throughput, search time.

- precision and recall of the near-duplicate check at the default thresholds on a
  generated benchmark (frames of one clip up to 1 s apart, shifted or rescaled and
  re-encoded at JPEG quality 75, against other clips including ones over the same
  background); also at other thresholds;
- images hashed per second: 712x400 JPEGs, one process and all cores;
- search time for 100k hashes (70k train, 30k test, CAER-S-like: 5 near-identical
  frames per clip split at random), with the multi-index table, against brute force
  on a sample;
- time and peak memory of a search by radius (--radii, default 10 16 and the cap):
  20k random stored hashes, 4096 queries of which half are planted near-duplicates
  (1-12 bits flipped), each radius in a fresh process (peak resident set size, and
  its growth during the search).

Usage: python benchmarks/bench_leakage.py [--scenes 40] [--images 2000] [--radii 10 16 23] [--search-only]
                                          [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from rich.console import Console
from rich.table import Table

from ncaer.dataset.imageset import load_imageset
from ncaer.generated.leak_benchmark import leak_benchmark
from ncaer.generated.videos import face_photos, random_actor, render_clip
from ncaer.leakage.check import LeakConfig, check_leakage
from ncaer.leakage.hamming_index import MAX_RADIUS, HammingIndex
from ncaer.leakage.hashing import HashJob, hash_images

console = Console()


def quality(root: Path, truth: dict[str, bool], threshold: int, dhash_threshold: int) -> tuple[float, float]:
    report = check_leakage(load_imageset(root), LeakConfig(threshold=threshold, dhash_threshold=dhash_threshold,
                                                           workers=len(os.sched_getaffinity(0))))
    flagged = set(report.pairs.loc[report.pairs["check"] == "near", "image_b"])
    positives = {k for k, v in truth.items() if v}
    tp = len(flagged & positives)
    return tp / len(positives), tp / max(len(flagged), 1)


def make_jpegs(folder: Path, n: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    photos = face_photos()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(0, n, 10):
        actors = (random_actor(rng, photos, 50, 140),)
        frames, _ = render_clip(90, (712, 400), actors, seed=i, stamp=False, indices=list(range(0, 90, 9)))
        for k, f in enumerate(frames[: n - i]):
            p = folder / f"{i + k:06d}.jpg"
            cv2.imwrite(str(p), cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            paths.append(str(p))
    return paths


def clustered_codes(n_clips: int, per_clip: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, np.iinfo(np.int64).max, n_clips, dtype=np.int64).astype(np.uint64)
    flips = rng.integers(0, 8, n_clips * per_clip)
    noise = np.zeros(n_clips * per_clip, np.uint64)
    for k in range(8):
        bit = np.uint64(1) << rng.integers(0, 64, len(noise)).astype(np.uint64)
        noise ^= np.where(flips > k, bit, np.uint64(0))
    return np.repeat(base, per_clip) ^ noise


def planted_codes(stored: int = 20000, queries: int = 4096, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random stored hashes; queries half random, half a stored hash with 1-12 bits flipped."""
    rng = np.random.default_rng(seed)
    db = rng.integers(0, 2**64, stored, dtype=np.uint64)
    q = rng.integers(0, 2**64, queries, dtype=np.uint64)
    for i in range(queries // 2):
        bits = rng.choice(64, rng.integers(1, 13), replace=False)
        q[i] = db[rng.integers(stored)] ^ np.uint64(sum(1 << int(b) for b in bits))
    return db, q


def search_child(radius: int) -> None:
    """One search in this (fresh) process; prints its time and the peak resident set size as JSON."""
    db, q = planted_codes()
    index = HammingIndex(db)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    qi, _, _ = index.search(q, radius)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"radius": radius, "seconds": seconds, "pairs": int(len(qi)), "peak_rss_mib": peak / 1024,
                      "search_rss_growth_mib": (peak - before) / 1024}))


def search_by_radius(radii: list[int]) -> list[dict]:
    rows = []
    for r in radii:
        out = subprocess.run([sys.executable, __file__, "--search-child", str(r)], capture_output=True, text=True)
        rows.append(json.loads(out.stdout) if out.returncode == 0 else
                    {"radius": r, "error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]})
    db, q = planted_codes()
    t = time.perf_counter()
    for start in range(0, len(q), 256):
        _ = np.bitwise_count(q[start : start + 256, None] ^ db[None, :]) <= max(radii)
    rows.append({"radius": "brute force", "seconds": time.perf_counter() - t})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", type=int, default=40, help="scenes in the labelled benchmark")
    ap.add_argument("--images", type=int, default=2000, help="JPEGs for the hashing throughput")
    ap.add_argument("--radii", type=int, nargs="+", default=[10, 16, MAX_RADIUS],
                    help="radii for the search time and memory figures")
    ap.add_argument("--search-only", action="store_true", help="only the search figures (no images generated)")
    ap.add_argument("--search-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.search_child is not None:
        return search_child(args.search_child)
    figures = {"search_by_radius": search_by_radius(args.radii)}
    table = Table(title="search by radius: 20k stored hashes, 4096 queries (half planted near-duplicates)")
    for column in ("radius", "time", "pairs", "peak RSS", "RSS growth in search"):
        table.add_column(column, justify="right")
    for row in figures["search_by_radius"]:
        if "error" in row:
            table.add_row(str(row["radius"]), "refused", "", "", "")
        elif "pairs" not in row:
            table.add_row(f"{row['radius']} (all pairs, numpy)", f"{row['seconds']:.2f} s", "", "", "")
        else:
            table.add_row(str(row["radius"]), f"{row['seconds']:.2f} s", str(row["pairs"]),
                          f"{row['peak_rss_mib']:.0f} MiB", f"{row['search_rss_growth_mib']:.0f} MiB")
    console.print(table)
    for row in figures["search_by_radius"]:
        if "error" in row:
            console.print(f"radius {row['radius']}: {row['error']}")
    if args.search_only:
        if args.json:
            Path(args.json).write_text(json.dumps(figures, indent=2))
        return
    work = Path(tempfile.mkdtemp(prefix="ncaer-leakbench-"))

    console.print(f"generating the labelled benchmark ({args.scenes} scenes) in {work} ...")
    truth = leak_benchmark(work / "bench", n_scenes=args.scenes, unseen_scenes=args.scenes // 3)
    figures["benchmark_test_images"] = len(truth)
    figures["benchmark_positives"] = sum(truth.values())
    figures["quality"] = []
    for t, td in ((10, 14), (10, 64), (8, 14), (12, 14)):
        recall, precision = quality(work / "bench", truth, t, td)
        figures["quality"].append({"threshold": t, "dhash_threshold": td, "recall": recall, "precision": precision})

    console.print(f"writing {args.images} 712x400 JPEGs ...")
    paths = make_jpegs(work / "jpegs", args.images)
    jobs = [HashJob(p) for p in paths]
    cores = len(os.sched_getaffinity(0))
    for workers in sorted({1, cores}):
        t = time.perf_counter()
        hash_images(jobs, workers=workers)
        figures[f"hash_images_per_s_{workers}_workers"] = len(jobs) / (time.perf_counter() - t)

    codes = clustered_codes(20000, 5)
    perm = np.random.default_rng(1).permutation(len(codes))
    train, test = codes[perm[:70000]], codes[perm[70000:]]
    t = time.perf_counter()
    qi, _, _ = HammingIndex(train).search(test, 10)
    figures["search_100k_s"] = time.perf_counter() - t
    figures["search_100k_pairs"] = int(len(qi))
    t = time.perf_counter()
    _ = np.bitwise_count(test[:1000, None] ^ train[None, :]) <= 10
    figures["brute_force_100k_estimate_s"] = (time.perf_counter() - t) * len(test) / 1000

    table = Table(title="ncaer check-leakage")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for q in figures["quality"]:
        table.add_row(f"pHash <= {q['threshold']}, dHash <= {q['dhash_threshold']}: recall / precision",
                      f"{q['recall']:.3f} / {q['precision']:.3f}")
    table.add_row("labelled benchmark", f"{figures['benchmark_test_images']} test images, "
                                        f"{figures['benchmark_positives']} leaks")
    for workers in sorted({1, cores}):
        table.add_row(f"hashing, 712x400 JPEG, {workers} worker(s)",
                      f"{figures[f'hash_images_per_s_{workers}_workers']:.0f} images/s")
    table.add_row("search, 100k hashes (70k indexed, 30k queries, radius 10)",
                  f"{figures['search_100k_s']:.2f} s ({figures['search_100k_pairs']} pairs)")
    table.add_row("brute force on the same (estimated)", f"{figures['brute_force_100k_estimate_s']:.1f} s")
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
