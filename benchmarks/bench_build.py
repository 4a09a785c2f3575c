"""Benchmark `ncaer build` against its floors, on generated CAER-like clips.

Prints, for 712x400 MPEG-4 AVI clips of 90 frames with 5 segments at default settings:
- end to end: clips/s and sampled frames/s, and the worker time split between
  decoding, detection and writing;
- reference 1: ffmpeg's single-thread decode of the same clips (the ffmpeg
  binary from imageio-ffmpeg, `-threads 1 -f null`, its own CPU time), and the
  same libavcodec decode in-process through PyAV (no process start-up);
- reference 2: the detector alone on the sampled frames;
- detection quality: recall (IoU >= 0.5 with the known face box) and median IoU,
  per detector and detector input size.

Usage: python benchmarks/bench_build.py [--clips 60] [--workers N] [--scrfd-model PATH] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from ncaer.build.config import BuildConfig
from ncaer.build.engine import run_build
from ncaer.dataset.layout import CAER_CLASSES
from ncaer.faces.detectors import create_detector
from ncaer.generated.videos import Actor, face_photos, make_clip, random_actor

console = Console()


def make_clips(root: Path, n: int, seed: int = 0) -> dict[str, list]:
    """CAER-layout clips with one main face (40-160 px high) and sometimes a smaller one behind."""
    rng = np.random.default_rng(seed)
    photos = face_photos()
    truth = {}
    for i in range(n):
        split = ("train", "validation", "test")[i % 3]
        label = CAER_CLASSES[i % 7]
        rel = f"{split}/{label}/{i:04d}.avi"
        (root / split / label).mkdir(parents=True, exist_ok=True)
        actors = [random_actor(rng, photos, 40, 160)]
        if rng.random() < 0.3:
            actors.append(Actor(photos[int(rng.integers(2))], float(rng.uniform(25, 40)), (0.88, 0.3),
                                          (0.85, 0.3)))
        boxes = make_clip(root / rel, n_frames=90, size=(712, 400), codec="mpeg4", actors=tuple(actors),
                                    seed=int(rng.integers(1 << 30)))
        truth[rel] = [frame[0] if frame else None for frame in boxes]  # the main actor
    return truth


def ffmpeg_decode_seconds(paths: list[Path]) -> float:
    """CPU seconds (user + system) ffmpeg reports for single-thread decoding of all frames."""
    import imageio_ffmpeg

    exe = imageio_ffmpeg.get_ffmpeg_exe()
    total = 0.0
    for p in paths:
        out = subprocess.run([exe, "-hide_banner", "-benchmark", "-threads", "1", "-i", str(p), "-f", "null", "-"],
                             capture_output=True, text=True, check=True).stderr
        m = re.search(r"utime=([\d.]+)s stime=([\d.]+)s", out)
        total += float(m.group(1)) + float(m.group(2))
    return total


def pyav_decode_seconds(paths: list[Path]) -> float:
    import av

    t = time.process_time()
    for p in paths:
        with av.open(str(p)) as c:
            s = c.streams.video[0]
            s.thread_count = 1
            for _ in c.decode(s):
                pass
    return time.process_time() - t


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def quality(manifest, truth) -> tuple[float, float, int]:
    ious = []
    for row in manifest.itertuples():
        true_box = truth[row.source_path][row.frame_index]
        if true_box is None:
            continue
        ious.append(iou((row.face_x1, row.face_y1, row.face_x2, row.face_y2), true_box) if row.has_face else 0.0)
    ious = np.array(ious)
    return float((ious >= 0.5).mean()), float(np.median(ious)), len(ious)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=60)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--det-sizes", default="384,640", help="CenterFace input sizes to score for quality")
    ap.add_argument("--scrfd-model", default=None, help="an SCRFD .onnx or insightface pack, to score it too")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--engine", default="local", choices=["local", "ray"],
                    help="ray: also build with the Ray engine and compare it with the local engine")
    ap.add_argument("--detector-actors", type=int, default=None,
                    help="--engine ray: detector actors (on a CPU machine: the staged pipeline on CPU actors)")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="ncaer-bench-"))
    console.print(f"generating {args.clips} clips (712x400, 90 frames, MPEG-4 AVI) in {work} ...")
    truth = make_clips(work / "CAER", args.clips)
    paths = sorted((work / "CAER").rglob("*.avi"))

    # end to end, default settings
    t, cpu = time.perf_counter(), busy_cpu_seconds()
    result = run_build(BuildConfig(videos=str(work / "CAER"), out=str(work / "out"), workers=args.workers,
                                   device=args.device))
    wall, cpu = time.perf_counter() - t, busy_cpu_seconds() - cpu
    m = result.manifest
    split = result.summary["timings"]["worker_seconds"]
    n = len(paths)
    figures = {
        "clips": n, "workers": args.workers, "provider": result.worker_info.get("provider"),
        "wall_s": wall, "clips_per_s": n / wall, "sampled_frames_per_s": len(m) / wall,
        "decode_ms_per_clip": 1000 * split["decode"] / n, "detect_ms_per_clip": 1000 * split["detect"] / n,
        "write_ms_per_clip": 1000 * split["write"] / n, "cpu_ms_per_clip": 1000 * cpu / n,
    }

    # reference 1: decoding the same clips
    figures["ffmpeg_decode_ms_per_clip"] = 1000 * ffmpeg_decode_seconds(paths) / n
    figures["libav_inprocess_decode_ms_per_clip"] = 1000 * pyav_decode_seconds(paths) / n
    figures["decode_vs_ffmpeg"] = figures["decode_ms_per_clip"] / figures["ffmpeg_decode_ms_per_clip"]

    # reference 2: the detector alone on the sampled frames (one process, one thread on CPU)
    import cv2

    frames_by_clip = [[cv2.cvtColor(cv2.imread(str(result.out / p)), cv2.COLOR_BGR2RGB) for p in g["image_path"]]
                      for _, g in m.groupby("video_id")]
    det = create_detector("centerface", device=args.device)
    det.detect(frames_by_clip[0])
    t = time.perf_counter()
    for frames in frames_by_clip:
        det.detect(frames)
    alone = time.perf_counter() - t
    figures["detector_alone_ms_per_frame"] = 1000 * alone / len(m)
    figures["detector_alone_ms_per_clip"] = 1000 * alone / len(frames_by_clip)

    if args.engine == "ray":
        figures["ray"] = ray_figures(work, args, result, wall)
    figures["detector_fps"] = detector_fps(frames_by_clip)

    # detection quality per detector and input size
    rows = []
    for size in [int(s) for s in args.det_sizes.split(",")]:
        out = run_build(BuildConfig(videos=str(work / "CAER"), out=str(work / f"q{size}"), det_size=size,
                                    workers=args.workers, device=args.device)) if size != 384 else result
        rows.append(("centerface", size, *quality(out.manifest, truth)))
    if args.scrfd_model:
        out = run_build(BuildConfig(videos=str(work / "CAER"), out=str(work / "scrfd"), detector="scrfd",
                                    detector_model=args.scrfd_model, workers=args.workers, device=args.device))
        rows.append(("scrfd", 640, *quality(out.manifest, truth)))
    figures["quality"] = [dict(zip(("detector", "det_size", "recall_iou50", "median_iou", "frames"), r)) for r in rows]

    table = Table(title=f"ncaer build: {n} clips, {args.workers} workers, detector on {figures['provider']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("end to end", f"{figures['clips_per_s']:.1f} clips/s, {figures['sampled_frames_per_s']:.0f} "
                                f"sampled frames/s ({wall:.1f} s)")
    table.add_row("machine CPU time per clip (all processes)", f"{figures['cpu_ms_per_clip']:.0f} ms")
    table.add_row("worker time per clip: decode / detect / write",
                  f"{figures['decode_ms_per_clip']:.1f} / {figures['detect_ms_per_clip']:.1f} / "
                  f"{figures['write_ms_per_clip']:.1f} ms")
    table.add_row("ffmpeg -threads 1 decode per clip (CPU time)", f"{figures['ffmpeg_decode_ms_per_clip']:.1f} ms")
    table.add_row("libavcodec in-process decode per clip (PyAV)",
                  f"{figures['libav_inprocess_decode_ms_per_clip']:.1f} ms")
    table.add_row("our decode / ffmpeg decode", f"{figures['decode_vs_ffmpeg']:.2f}x")
    table.add_row("detector alone (CenterFace 384)", f"{figures['detector_alone_ms_per_frame']:.1f} ms/frame, "
                                                     f"{figures['detector_alone_ms_per_clip']:.1f} ms/clip")
    table.add_row("CAER-size corpus (13,201 clips) at this rate", f"{13201 / figures['clips_per_s'] / 60:.1f} min")
    for provider, fps in figures["detector_fps"].items():
        table.add_row(f"CenterFace 384 on {provider}: frames/s at batch " + " / ".join(str(b) for b in fps),
                      " / ".join(f"{v:.0f}" for v in fps.values()))
    if "ray" in figures:
        r = figures["ray"]
        table.add_row("Ray engine, same clips (Ray already started)",
                      f"{r['clips_per_s']:.1f} clips/s ({r['wall_s']:.1f} s), {r['vs_local']:.2f}x the local engine")
        table.add_row("Ray engine: machine CPU time per clip", f"{r['cpu_ms_per_clip']:.0f} ms")
        table.add_row("Ray start-up (ray.init, once per build)", f"{r['ray_start_s']:.1f} s")
        table.add_row("Ray manifest == local manifest", str(r["same_manifest"]))
    for det_name, size, recall, med, count in rows:
        table.add_row(f"{det_name} @ {size}: recall (IoU>=0.5) / median IoU",
                      f"{recall:.3f} / {med:.3f} ({count} frames)")
    console.print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def ray_figures(work: Path, args, local, local_wall: float) -> dict:
    """The Ray engine on the same clips, against the local engine's run."""
    import ray

    t = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    start = time.perf_counter() - t
    try:
        t, cpu = time.perf_counter(), busy_cpu_seconds()
        result = run_build(BuildConfig(videos=str(work / "CAER"), out=str(work / "ray"), workers=args.workers,
                                       device=args.device, engine="ray", detector_actors=args.detector_actors))
        wall, cpu = time.perf_counter() - t, busy_cpu_seconds() - cpu
    finally:
        ray.shutdown()
    n = len(result.plan.jobs)
    return {"wall_s": wall, "clips_per_s": n / wall, "ray_start_s": start, "vs_local": local_wall / wall,
            "same_manifest": bool(result.manifest.equals(local.manifest)), "cpu_ms_per_clip": 1000 * cpu / n}


def busy_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (every process: workers, Ray's raylet and object store)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def detector_fps(frames_by_clip: list[list[np.ndarray]]) -> dict[str, dict[int, float]]:
    """CenterFace frames/s on each provider this machine has, at batch 1, one clip (5) and GPU_BATCH."""
    from ncaer.faces.base import GPU_BATCH
    from ncaer.faces.runtime import DetectorError, gpu_present

    frames = [f for clip in frames_by_clip for f in clip]
    figures = {}
    for device in ("cpu", "cuda", "tensorrt") if gpu_present() else ("cpu",):
        try:
            det = create_detector("centerface", device=device)
        except DetectorError:
            continue
        det.warm_up()
        by_batch = {}
        for batch in (1, 5, GPU_BATCH):
            det.detect(frames[:batch])
            t = time.perf_counter()
            for start in range(0, len(frames) - batch + 1, batch):
                det.detect(frames[start:start + batch])
            done = (len(frames) // batch) * batch
            by_batch[batch] = done / (time.perf_counter() - t)
        figures[det.provider.replace("ExecutionProvider", "")] = by_batch
    return figures


if __name__ == "__main__":
    main()
