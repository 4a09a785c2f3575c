"""Frame exactness: the frame a reader returns for index i is the i-th frame of the video."""

import cv2
import numpy as np
import pytest

from ncaer.generated.videos import CODECS, read_index, stamp_index
from ncaer.video.decode import DecodeError, DecordReader, IndexMismatch, PyAVReader, decode_samples

READERS = {"decord": DecordReader, "pyav": PyAVReader}

INDICES = [0, 3, 17, 18, 41, 60, 88, 89]


def test_barcode_survives_jpeg():
    frame = np.full((64, 256, 3), 127, np.uint8)
    for index in (0, 1, 1234, 4095):
        stamp_index(frame, index)
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 60])
        assert read_index(cv2.imdecode(buf, cv2.IMREAD_COLOR)) == index


def test_barcode_absent_is_an_error():
    with pytest.raises(ValueError):
        read_index(np.full((64, 256, 3), 127, np.uint8))


EXACT = [(codec, backend) for codec in CODECS for backend in READERS
         if (codec, backend) != ("mpeg4-bframes", "decord")]


@pytest.mark.parametrize("codec,backend", EXACT)
def test_frames_are_exact(codec_videos, codec, backend):
    path, _ = codec_videos[codec]
    reader = READERS[backend](str(path))
    assert reader.info.n_frames == 90
    frames = reader.read(INDICES)
    assert [read_index(f) for f in frames] == INDICES
    # reading again (the reader rewinds) gives the same frames
    assert [read_index(f) for f in reader.read([5, 6])] == [5, 6]


def test_decord_refuses_a_file_whose_index_it_gets_wrong(codec_videos):
    # decord misplaces key frames in MPEG-4 AVI with B-frames and would return wrong frames
    with pytest.raises(IndexMismatch):
        DecordReader(str(codec_videos["mpeg4-bframes"][0]))


class _Pick:
    def __init__(self, i):
        self.frame_index = i


def test_pyav_reindexes_by_decoding_when_frames_do_not_match_the_index(codec_videos):
    path = str(codec_videos["mpeg4"][0])
    reader = PyAVReader(path)
    reader.info.pts = reader.info.pts + 1  # an index that disagrees with what the decoder produces
    with pytest.raises(IndexMismatch):
        reader.read([3])
    exact = PyAVReader(path, decoded_times=True)
    assert exact.info.timestamp_source == "decoder"
    assert [read_index(f) for f in exact.read([3, 50])] == [3, 50]


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_decode_samples_reads_what_choose_picked(codec_videos, backend):
    path = str(codec_videos["h264"][0])
    decoded = decode_samples(path, backend, lambda info: [_Pick(1), _Pick(info.n_frames - 1)])
    assert decoded.decoder == backend
    assert [read_index(f) for f in decoded.frames] == [1, 89]


@pytest.mark.parametrize("backend", READERS)
@pytest.mark.parametrize("codec", ["mpeg4", "h264", "mjpeg"])
def test_timestamps_of_constant_rate_files(codec_videos, codec, backend):
    path, _ = codec_videos[codec]
    info = READERS[backend](str(path)).info
    np.testing.assert_allclose(info.timestamps, np.arange(90) / 30.0, atol=1e-3)
    assert info.end_time == pytest.approx(3.0, abs=1e-3)


@pytest.mark.parametrize("backend", READERS)
def test_variable_frame_rate_timestamps(vfr_video, backend):
    path, times = vfr_video
    reader = READERS[backend](str(path))
    assert reader.info.timestamp_source == "container"
    np.testing.assert_allclose(reader.info.timestamps, times, atol=2e-3)
    assert [read_index(f) for f in reader.read([0, 29, 30, 89])] == [0, 29, 30, 89]


@pytest.mark.parametrize("backend", READERS)
@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00AVI garbage" * 50])
def test_unreadable_files_raise_decode_error(tmp_path, backend, content):
    path = tmp_path / "bad.avi"
    path.write_bytes(content)
    with pytest.raises(DecodeError):
        READERS[backend](str(path))
