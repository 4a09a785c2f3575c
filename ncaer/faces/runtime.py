"""onnxruntime sessions for the face detectors (and ONNX emotion models), on the best provider.

TensorRT, then CUDA, where a GPU is present and the onnxruntime build has them; else
the CPU with one thread per session: parallelism comes from the build's worker
processes, and a fixed thread count keeps results bit-identical whatever their number.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
from pathlib import Path

DEVICES = ("auto", "cpu", "cuda", "tensorrt")
CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


class DetectorError(RuntimeError):
    """The detector cannot be created (weights missing, unreadable model...)."""


def gpu_present() -> bool:
    """An NVIDIA driver is installed (onnxruntime-gpu lists CUDA even on machines without one)."""
    return bool(ctypes.util.find_library("cuda")) or os.path.exists("/dev/nvidia0")


def _tensorrt_present() -> bool:
    return bool(ctypes.util.find_library("nvinfer")) or importlib.util.find_spec("tensorrt_libs") is not None


def trt_cache_dir() -> Path:
    """Where TensorRT engines are kept between runs ($NCAER_TRT_CACHE, else ~/.cache/ncaer/tensorrt)."""
    return Path(os.environ.get("NCAER_TRT_CACHE") or Path.home() / ".cache" / "ncaer" / "tensorrt")


def requested_providers(device: str) -> list[str]:
    """Execution providers to ask onnxruntime for, best first."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        wanted = [CUDA, CPU]
    elif device == "tensorrt":
        wanted = [TRT, CUDA, CPU]
    elif device == "auto":
        if not gpu_present():
            return [CPU]
        wanted = ([TRT] if _tensorrt_present() else []) + [CUDA, CPU]
    else:
        raise ValueError(f"device must be one of {DEVICES}, not {device!r}")
    missing = [p for p in wanted if p not in available and p != CPU]
    if missing and device != "auto":
        raise DetectorError(
            f"--device {device} needs {', '.join(missing)}, which this onnxruntime build lacks "
            f"(available: {', '.join(available)}); install onnxruntime-gpu"
        )
    return [p for p in wanted if p in available]


def make_session(model: bytes | str, device: str):
    """An onnxruntime session on the best provider that actually starts; logs which one runs."""
    import onnxruntime as ort

    wanted = requested_providers(device)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 4  # a missing CUDA runtime is reported below, in one line
    provider_options = []
    for p in wanted:
        if p == TRT:
            cache = trt_cache_dir()
            cache.mkdir(parents=True, exist_ok=True)
            provider_options.append({"trt_engine_cache_enable": "True", "trt_engine_cache_path": str(cache),
                                     "trt_timing_cache_enable": "True", "trt_fp16_enable": "True"})
        else:
            provider_options.append({})
    if wanted == [CPU]:
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(model, sess_options=options, providers=wanted,
                                       provider_options=provider_options)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise DetectorError(f"onnxruntime could not load the model: {e}") from e
    running = session.get_providers()
    if running[0] != wanted[0]:
        if device != "auto":
            raise DetectorError(f"--device {device}: {wanted[0]} did not start (no GPU or CUDA runtime?)")
        if running == [CPU]:
            # the session fell back on its own: rebuild it single-threaded like a plain CPU session
            return make_session(model, "cpu")
    return session
