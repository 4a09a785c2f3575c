"""Frame-exact video decoding with decord (default) and PyAV (fallback).

"Frame i" always means the i-th frame the decoder outputs in presentation order.
Both readers get there by decoding forward from the first frame, never by seeking:
decord's `get_batch` seeks and was measured returning the wrong frames on MPEG-4
AVI files with B-frames, where sequential reading is exact for every codec tested
(tests/test_decode.py proves it with frames that carry their own index).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

BACKENDS = ("decord", "pyav")


class DecodeError(RuntimeError):
    """The file cannot be decoded (empty, corrupt, no video stream...)."""


@dataclass
class VideoInfo:
    n_frames: int
    timestamps: np.ndarray  # presentation time of each frame, seconds
    end_time: float  # when the last frame stops being shown
    fps: float
    timestamp_source: str  # "container" or "fps" (container times missing or broken)
    declared_frames: int  # frame count the container header claims (0: unknown)


def _valid_times(times: np.ndarray) -> bool:
    return bool(len(times) and np.isfinite(times).all() and times[0] >= -1e-3 and np.all(np.diff(times) > 0))


def declared_frames(path: str) -> int:
    """Frame count written in the container header, without decoding (0 when unknown)."""
    import av

    try:
        with av.open(path, metadata_errors="ignore") as container:
            return int(container.streams.video[0].frames) if container.streams.video else 0
    except (av.FFmpegError, OSError):
        return 0


class DecordReader:
    name = "decord"

    def __init__(self, path: str):
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        try:
            # one decoding thread: parallelism comes from the build's worker processes
            self._vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        except (decord.DECORDError, RuntimeError) as e:
            raise DecodeError(f"decord cannot open the file: {_first_line(e)}") from e
        n = len(self._vr)
        if n == 0:
            raise DecodeError("no video frames")
        fps = float(self._vr.get_avg_fps())
        times = self._vr.get_frame_timestamp(np.arange(n))
        if _valid_times(times[:, 0]):
            starts, end, source = times[:, 0].astype(np.float64), float(times[-1, 1]), "container"
            if end <= starts[-1]:
                end = starts[-1] + (1.0 / fps if fps > 0 else 0.0)
        elif fps > 0:
            # AVI has no per-frame times (decord then reports NOPTS): frames are 1/fps apart
            starts, end, source = np.arange(n) / fps, n / fps, "fps"
        else:
            raise DecodeError("no frame timestamps and no frame rate")
        self.info = VideoInfo(n, starts, end, fps, source, declared_frames(path))

    def read(self, indices: list[int]) -> list[np.ndarray]:
        """RGB frames at the given increasing indices, decoding forward from frame 0."""
        import decord

        frames, pos = [], 0
        try:
            self._vr.seek(0)
            for i in indices:
                if i > pos:
                    self._vr.skip_frames(i - pos)  # decoded but not converted: cheap
                frames.append(self._vr.next().asnumpy())
                pos = i + 1
        except (decord.DECORDError, RuntimeError, StopIteration) as e:
            raise DecodeError(f"decord failed reading frame {pos}: {_first_line(e)}") from e
        return frames

    def close(self) -> None:
        del self._vr


class PyAVReader:
    """Decodes twice: once for the frames' own timestamps, once to convert the chosen frames.

    Only the fallback path pays the second decode; in return the frame count and
    times are what the decoder produced, not what the container claims.
    """

    name = "pyav"

    def __init__(self, path: str):
        self.path = path
        self.error: str | None = None  # decoding stopped early (truncated or damaged file)
        times: list[float | None] = []
        fps = 0.0
        try:
            with _pyav_open(self.path) as (container, stream):
                fps = float(stream.average_rate or stream.guessed_rate or 0)
                declared = int(stream.frames)
                for frame in container.decode(stream):
                    times.append(frame.time)
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001 - PyAV raises many error types for damaged data
            if not times:
                raise DecodeError(f"PyAV cannot decode the file: {_first_line(e)}") from e
            self.error = f"decoding stopped after {len(times)} frames: {_first_line(e)}"
        n = len(times)
        if n == 0:
            raise DecodeError("no video frames")
        arr = np.array([np.nan if t is None else t for t in times], dtype=np.float64)
        if _valid_times(arr):
            step = float(np.median(np.diff(arr))) if n > 1 else (1.0 / fps if fps > 0 else 0.0)
            starts, end, source = arr, float(arr[-1] + step), "container"
        elif fps > 0:
            starts, end, source = np.arange(n) / fps, n / fps, "fps"
        else:
            raise DecodeError("no frame timestamps and no frame rate")
        self.info = VideoInfo(n, starts, end, fps, source, declared)

    def read(self, indices: list[int]) -> list[np.ndarray]:
        wanted = set(indices)
        out: dict[int, np.ndarray] = {}
        last = max(indices)
        try:
            with _pyav_open(self.path) as (container, stream):
                for i, frame in enumerate(container.decode(stream)):
                    if i in wanted:
                        out[i] = frame.to_ndarray(format="rgb24")
                    if i >= last:
                        break
        except DecodeError:
            raise
        except Exception as e:  # noqa: BLE001
            if len(out) < len(wanted):
                raise DecodeError(f"PyAV failed before frame {last}: {_first_line(e)}") from e
        if len(out) < len(wanted):
            raise DecodeError(f"PyAV produced fewer frames on the second pass ({len(out)} of {len(wanted)} wanted)")
        return [out[i] for i in indices]

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _pyav_open(path: str):
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError) as e:
        raise DecodeError(f"PyAV cannot open the file: {_first_line(e)}") from e
    try:
        if not container.streams.video:
            raise DecodeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_count = 1
        yield container, stream
    finally:
        container.close()


def open_video(path: str, backend: str):
    if backend == "decord":
        return DecordReader(path)
    if backend == "pyav":
        return PyAVReader(path)
    raise ValueError(f"unknown decoder {backend!r}; choose from {BACKENDS}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
