import numpy as np
import pytest

from ncaer.video.sampling import sample_segments


def cfr(n, fps=30.0):
    return np.arange(n) / fps, n / fps


def test_one_frame_per_equal_segment():
    ts, end = cfr(90)
    picks = sample_segments(ts, end, 5, "random", seed=1, video_id="a")
    assert [p.segment for p in picks] == [0, 1, 2, 3, 4]
    for p in picks:  # 90 frames / 5 segments: segment s holds frames 18s .. 18s+17
        assert 18 * p.segment <= p.frame_index < 18 * (p.segment + 1)
        assert p.timestamp_s == pytest.approx(p.frame_index / 30.0)


def test_random_choice_depends_on_seed_video_and_segment_only():
    ts, end = cfr(300)
    a = sample_segments(ts, end, 5, "random", seed=7, video_id="train/Happy/0001")
    # the same call in another order or process gives the same frames
    assert sample_segments(ts, end, 5, "random", seed=7, video_id="train/Happy/0001") == a
    assert sample_segments(ts, end, 5, "random", seed=8, video_id="train/Happy/0001") != a
    assert sample_segments(ts, end, 5, "random", seed=7, video_id="train/Happy/0002") != a


def test_random_choice_covers_the_whole_segment():
    ts, end = cfr(100)
    chosen = {sample_segments(ts, end, 1, "random", seed=s, video_id="v")[0].frame_index for s in range(400)}
    assert min(chosen) == 0 and max(chosen) == 99 and len(chosen) > 90


def test_middle_pick():
    ts, end = cfr(90)
    assert [p.frame_index for p in sample_segments(ts, end, 5, "middle")] == [9, 27, 45, 63, 81]


def test_short_clip_gives_every_frame():
    ts, end = cfr(3)
    picks = sample_segments(ts, end, 5, "random", seed=0, video_id="v")
    assert [(p.segment, p.frame_index) for p in picks] == [(0, 0), (1, 1), (2, 2)]
    one = sample_segments(np.array([0.0]), 0.04, 5)
    assert [(p.segment, p.frame_index) for p in one] == [(0, 0)]
    assert sample_segments(np.array([]), 0.0, 5) == []


def test_variable_frame_rate_segments_are_cut_by_time():
    # 3 s at 10 fps then 1 s at 60 fps: 4 s in 4 segments of 1 s each
    ts = np.concatenate([np.arange(30) * 0.1, 3.0 + np.arange(60) / 60])
    picks = sample_segments(ts, 4.0, 4, "middle")
    assert [round(p.timestamp_s, 2) for p in picks] == [0.5, 1.5, 2.5, 3.5]
    # by frame count, three of four segments would have fallen in the last second
    assert sum(p.timestamp_s >= 3.0 for p in picks) == 1


def test_empty_segment_gives_no_sample():
    ts = np.array([0.0, 0.1, 0.2, 3.8, 3.9])  # nothing between 1 s and 3 s
    picks = sample_segments(ts, 4.0, 4, "random", seed=0, video_id="v")
    assert [p.segment for p in picks] == [0, 3]


def test_bad_arguments():
    ts, end = cfr(10)
    with pytest.raises(ValueError):
        sample_segments(ts, end, 0)
    with pytest.raises(ValueError):
        sample_segments(ts, end, 3, "first")
