import numpy as np

from ncaer.faces.subject import choose_subject


def face(x, y, size=50, score=0.9):
    return [x, y, x + size, y + size, score]


def frames(*rows):
    return [np.array(r, np.float32).reshape(-1, 5) for r in rows]


def test_presence_is_a_factor_of_prominence_not_the_first_key():
    # a 150 px face in 3 of 4 frames outweighs a 50 px one in all 4 (a poster on the wall)...
    dets = frames(
        [face(100, 100, 150), face(600, 20, 50)],
        [face(110, 100, 150), face(600, 20, 50)],
        [face(600, 20, 50)],
        [face(125, 102, 150), face(600, 20, 50)],
    )
    assert choose_subject(dets) == [0, 0, None, 0]
    # ...but of two faces of one size, the one present more often wins
    dets = frames([face(100, 100), face(400, 100)], [face(400, 100)], [face(100, 100), face(400, 100)])
    assert choose_subject(dets) == [1, 0, 1]


def test_equal_presence_goes_to_size_times_score():
    dets = frames([face(10, 10, 40), face(300, 10, 80)], [face(12, 10, 40), face(305, 12, 80)])
    assert choose_subject(dets) == [1, 1]
    dets = frames([face(10, 10, 40, 0.9), face(300, 10, 42, 0.6)], [face(12, 10, 40, 0.9), face(305, 12, 42, 0.6)])
    assert choose_subject(dets) == [0, 0]


def test_frames_without_the_subject_get_no_face():
    dets = frames([face(100, 100)], [], [face(600, 300, 20)], [face(105, 100)])
    assert choose_subject(dets) == [0, None, None, 0]


def test_no_detections_at_all():
    assert choose_subject(frames([], [])) == [None, None]
