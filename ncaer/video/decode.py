"""Frame-exact video decoding with decord (default) and PyAV (fallback).

"Frame i" is the i-th frame a player shows: in presentation order, without the
frames an MP4 edit list hides (a clip cut with `ffmpeg -ss T -c copy` starts at the
key frame before T and hides the frames before T: the demuxer flags their packets
`is_discard` and libavcodec drops what they decode to). Timestamps are seconds from
frame 0, so they are never negative. Frames are turned upright as ffmpeg turns them:
all of them by the display matrix the decoder attaches to the first one (the
container's, or one the codec carries, which comes with the first frame alone).

Both readers reach frame i by decoding forward from the start, never by seeking to
an estimated position, and both are checked against the container's own index,
read by demuxing the file (packets only, no decoding: about 2 ms for a CAER clip):

- decord skips frames using an index it builds itself. On MPEG-4 AVI files with
  B-frames that index is wrong (key frames misplaced, no timestamps) and decord
  then returns the wrong frames. Its index is therefore compared with the
  container's; on disagreement the file is handed to PyAV. decord also lists the
  frames an edit list hides (and never returns them), ignores mirroring and a
  codec's display matrix, so it refuses files with hidden frames and reads turned
  files only where its frames' shape shows it made the turn (a quarter turn).
- PyAV decodes once, checking that each decoded frame carries the timestamp the
  container index gives its position. Where the decoder does not produce one
  frame per packet (damaged or truncated data), it decodes the file a first time
  to learn the real frames, then again to take the chosen ones.

tests/test_decode.py proves exactness per codec with frames that carry their own
index.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

BACKENDS = ("decord", "pyav")


class DecodeError(RuntimeError):
    """The file cannot be decoded (empty, corrupt, no video stream...)."""


class IndexMismatch(DecodeError):
    """The decoder's frames do not match the container's index."""


@dataclass
class VideoInfo:
    n_frames: int
    timestamps: np.ndarray  # presentation time of each frame, seconds after frame 0
    end_time: float  # when the last frame stops being shown
    fps: float
    timestamp_source: str  # "container", "decoder" or "fps" (no usable timestamps)
    declared_frames: int  # frame count the container header claims (0: unknown)
    keyframes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    pts: np.ndarray | None = None  # per-frame pts in stream time-base units, when known
    hidden: int = 0  # frames the edit list hides (decoded, never shown), not counted in n_frames
    start: float = 0.0  # the stream's time of frame 0, seconds


def _valid_times(times: np.ndarray) -> bool:
    return bool(len(times) and np.isfinite(times).all() and np.all(np.diff(times) > 0))


@contextlib.contextmanager
def _pyav_open(path: str):
    import av

    try:
        container = av.open(path, metadata_errors="ignore")
    except (av.FFmpegError, OSError) as e:
        raise DecodeError(f"cannot open the file: {_first_line(e)}") from e
    try:
        if not container.streams.video:
            raise DecodeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_count = 1  # parallelism comes from the build's worker processes
        yield container, stream
    finally:
        container.close()


def _times_info(pts: list, durations: list, keys: list, tb: float, fps: float, declared: int,
                source: str, hidden: int = 0) -> VideoInfo:
    """VideoInfo from per-frame pts (stream units, any order); frames 1/fps apart if pts are missing."""
    n = len(pts)
    if n == 0:
        raise DecodeError("no video frames")
    if all(p is not None for p in pts):
        order = np.argsort(np.array(pts, dtype=np.int64), kind="stable")
        sorted_pts = np.array(pts, dtype=np.int64)[order]
        times = (sorted_pts - sorted_pts[0]) * tb
        if _valid_times(times):
            last = durations[order[-1]] * tb if durations[order[-1]] else (
                float(np.median(np.diff(times))) if n > 1 else (1.0 / fps if fps > 0 else 0.0))
            key_idx = np.flatnonzero(np.array(keys, dtype=bool)[order])
            return VideoInfo(n, times, float(times[-1] + last), fps, source, declared, key_idx, sorted_pts, hidden,
                             float(sorted_pts[0] * tb))
    if fps <= 0:
        raise DecodeError("no usable frame timestamps and no frame rate")
    # no per-frame times (AVI stores none): frames are 1/fps apart
    return VideoInfo(n, np.arange(n) / fps, n / fps, fps, "fps", declared,
                     np.flatnonzero(np.array(keys, dtype=bool)), hidden=hidden)


def container_index(path: str) -> VideoInfo:
    """The frames the container shows, from its packets alone (no decoding)."""
    pts, durations, keys = [], [], []
    hidden = 0
    with _pyav_open(path) as (container, stream):
        tb = float(stream.time_base)
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # end-of-stream flush packet
                    continue
                if packet.is_discard:  # hidden by the edit list: decoded for reference, never shown
                    hidden += 1
                    continue
                pts.append(packet.pts if packet.pts is not None else packet.dts)
                durations.append(packet.duration or 0)
                keys.append(packet.is_keyframe)
        except Exception as e:  # noqa: BLE001 - PyAV raises many error types for damaged data
            if not pts:
                raise DecodeError(f"cannot read the file: {_first_line(e)}") from e
        declared = max(int(stream.frames) - hidden, 0)  # the header counts the hidden frames too
    return _times_info(pts, durations, keys, tb, fps, declared, "container", hidden)


Orientation = tuple[bool, bool, bool]  # transpose, then mirror left-right, then top-bottom
UNTURNED: Orientation = (False, False, False)
QUARTER_TURNS: tuple[Orientation, ...] = ((True, False, True), (True, True, False))  # 90 degrees ccw, cw


def _orientation(frame) -> Orientation:
    """How players turn a decoded PyAV frame: by the display matrix the decoder attaches to it, the
    container's or one the codec carries (an H.264 display orientation SEI, on the first frame only)."""
    side = frame.side_data.get("DISPLAYMATRIX")
    if side is None:
        return UNTURNED
    a, b, _, c, d = np.frombuffer(bytes(side), np.int32)[:5]
    # the stored pixel (x, y) is shown at (a*x + c*y, b*x + d*y), shifted back into the picture
    if a == d == 0 and b and c:
        return True, bool(c < 0), bool(b < 0)
    if b == c == 0 and a and d:
        return False, bool(a < 0), bool(d < 0)
    raise DecodeError(f"the display matrix turns frames by other than a multiple of 90 degrees: {[a, b, c, d]}")


def _turn(rgb: np.ndarray, orientation: Orientation) -> np.ndarray:
    transpose, flip_x, flip_y = orientation
    if transpose:
        rgb = rgb.transpose(1, 0, 2)
    if flip_x:
        rgb = rgb[:, ::-1]
    if flip_y:
        rgb = rgb[::-1]
    return np.ascontiguousarray(rgb)


def _first_frame(path: str):
    """The first packet decoded alone (flushed: a decoder with B-frames would otherwise wait for more)."""
    with _pyav_open(path) as (container, stream):
        try:
            packet = next(p for p in container.demux(stream) if p.size)
            frames = stream.decode(packet) + stream.decode()
        except Exception as e:  # noqa: BLE001 - PyAV raises many error types for damaged data
            raise IndexMismatch(f"cannot decode the first frame: {_first_line(e)}") from e
    if not frames:
        raise IndexMismatch("the first packet decodes to no frame")
    return frames[0]


class DecordReader:
    name = "decord"

    def __init__(self, path: str):
        import decord

        decord.logging.set_level(decord.logging.QUIET)
        index = container_index(path)
        if index.hidden:
            raise IndexMismatch(f"decord ignores the edit list, which hides {index.hidden} frame(s)")
        try:
            self._vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        except (decord.DECORDError, RuntimeError) as e:
            raise DecodeError(f"decord cannot open the file: {_first_line(e)}") from e
        n = len(self._vr)
        if n != index.n_frames:
            raise IndexMismatch(f"decord lists {n} frames, the container {index.n_frames}")
        if index.timestamp_source == "container":
            times = self._vr.get_frame_timestamp(np.arange(n))[:, 0]
            # decord counts time from 0 and seeks wrongly where the stream's frame 0 is not at 0 (measured: a
            # clip cut without an edit list gave frame 90 for 60), so its times must be the stream's own
            if not np.allclose(times, index.start + index.timestamps, atol=2e-3):
                raise IndexMismatch("decord's frame timestamps disagree with the container's")
        if not np.array_equal(np.asarray(self._vr.get_key_indices()), index.keyframes):
            raise IndexMismatch("decord's key-frame index disagrees with the container's")
        # decord turns frames by the container's display matrix (measured: 90, 180 and 270 degrees as players
        # do) but ignores mirroring and a matrix the codec carries. Only a quarter turn shows, in the frames'
        # shape, whether decord made it; other turns are left to PyAV.
        first = _first_frame(path)
        orientation = _orientation(first)
        if orientation != UNTURNED and orientation not in QUARTER_TURNS:
            raise IndexMismatch("the display matrix turns frames by half a turn or mirrors them: decord may not")
        if orientation != UNTURNED and first.width == first.height:
            raise IndexMismatch("a turned square frame: decord's frame shape cannot show whether it made the turn")
        self._shape = (first.width, first.height) if orientation[0] else (first.height, first.width)
        self.info = index

    def read(self, indices: list[int]) -> list[np.ndarray]:
        """RGB frames at the given increasing indices, decoding forward from frame 0."""
        import decord

        frames, pos = [], 0
        try:
            self._vr.seek(0)
            for i in indices:
                if i > pos:
                    self._vr.skip_frames(i - pos)  # decoded, not converted to RGB: cheap
                frames.append(self._vr.next().asnumpy())
                pos = i + 1
        except (decord.DECORDError, RuntimeError, StopIteration) as e:
            raise DecodeError(f"decord failed reading frame {pos}: {_first_line(e)}") from e
        if frames and frames[0].shape[:2] != self._shape:
            raise IndexMismatch(f"decord's frames are {frames[0].shape[:2]}, upright frames {self._shape}")
        return frames


class PyAVReader:
    name = "pyav"

    def __init__(self, path: str, decoded_times: bool = False):
        """`decoded_times`: learn the frames by decoding (slow, for files whose index is off)."""
        self.path = path
        self.error: str | None = None  # why decoding stopped early, if it did
        self.info = self._decoded_index() if decoded_times else container_index(path)

    def _decoded_index(self) -> VideoInfo:
        pts, durations = [], []
        with _pyav_open(self.path) as (container, stream):
            tb = float(stream.time_base)
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            declared = int(stream.frames)
            try:
                for frame in container.decode(stream):
                    pts.append(frame.pts)
                    durations.append(getattr(frame, "duration", 0) or 0)
            except Exception as e:  # noqa: BLE001
                if not pts:
                    raise DecodeError(f"cannot decode the file: {_first_line(e)}") from e
                self.error = f"decoding stopped after {len(pts)} frames: {_first_line(e)}"
        info = _times_info(pts, durations, [False] * len(pts), tb, fps, declared, "decoder")
        if info.timestamp_source == "decoder" and not np.array_equal(info.pts, np.array(pts, dtype=np.int64)):
            raise DecodeError("decoded frames are not in presentation order")
        return info

    def read(self, indices: list[int]) -> list[np.ndarray]:
        wanted = set(indices)
        out: dict[int, np.ndarray] = {}
        orientation = UNTURNED
        last = max(indices)
        expected = self.info.pts
        count = 0
        with _pyav_open(self.path) as (container, stream):
            try:
                for i, frame in enumerate(container.decode(stream)):
                    count = i + 1
                    if expected is not None and frame.pts is not None and frame.pts != expected[i]:
                        raise IndexMismatch(f"decoded frame {i} has pts {frame.pts}, the index says {expected[i]}")
                    if i == 0:  # players turn every frame as the first (a codec's matrix comes with it alone)
                        orientation = _orientation(frame)
                    if i in wanted:
                        out[i] = _turn(frame.to_ndarray(format="rgb24"), orientation)
                    if i >= last:
                        break
            except DecodeError:
                raise
            except Exception as e:  # noqa: BLE001
                raise IndexMismatch(f"decoding stopped at frame {count}: {_first_line(e)}") from e
        if len(out) < len(wanted):
            raise IndexMismatch(f"the decoder produced {count} frames, the index lists {self.info.n_frames}")
        return [out[i] for i in indices]


def upright_frames(path: str):
    """Every frame a player shows, in order, as upright RGB arrays (for writing an annotated copy)."""
    with _pyav_open(path) as (container, stream):
        orientation = UNTURNED
        for i, frame in enumerate(container.decode(stream)):
            if i == 0:
                orientation = _orientation(frame)
            yield _turn(frame.to_ndarray(format="rgb24"), orientation)


@dataclass
class Decoded:
    info: VideoInfo
    picks: list  # whatever `choose` returned, for the frames read
    frames: list[np.ndarray]
    decoder: str
    notes: list[str]


def decode_samples(path: str, backend: str, choose: Callable[[VideoInfo], list]) -> Decoded:
    """Open `path`, let `choose(info)` pick frames (objects with .frame_index), read them exactly."""
    notes: list[str] = []
    if backend == "decord":
        reader = DecordReader(path)
    elif backend == "pyav":
        reader = PyAVReader(path)
    else:
        raise ValueError(f"unknown decoder {backend!r}; choose from {BACKENDS}")
    picks = choose(reader.info)
    try:
        frames = reader.read([p.frame_index for p in picks]) if picks else []
    except IndexMismatch as e:
        if backend != "pyav":
            raise
        notes.append(f"pyav: {e}; frames re-indexed by decoding")
        reader = PyAVReader(path, decoded_times=True)
        picks = choose(reader.info)
        frames = reader.read([p.frame_index for p in picks]) if picks else []
    if getattr(reader, "error", None):
        notes.append(reader.error)
    return Decoded(reader.info, picks, frames, backend, notes)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__
