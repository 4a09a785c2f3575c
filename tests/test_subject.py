import numpy as np

from ncaer.faces.subject import choose_subject


def face(x, y, size=50, score=0.9):
    return [x, y, x + size, y + size, score]


def frames(*rows):
    return [np.array(r, np.float32).reshape(-1, 5) for r in rows]


def test_the_face_present_most_often_is_the_subject_even_if_smaller():
    # a big face appears in 2 frames, a smaller one moving slowly in all 4
    dets = frames(
        [face(100, 100, 40), face(400, 50, 120)],
        [face(110, 100, 40)],
        [face(125, 102, 40), face(405, 52, 120)],
        [face(140, 100, 40)],
    )
    assert choose_subject(dets) == [0, 0, 0, 0]


def test_ties_go_to_size_times_score():
    dets = frames([face(10, 10, 40), face(300, 10, 80)], [face(12, 10, 40), face(305, 12, 80)])
    assert choose_subject(dets) == [1, 1]
    dets = frames([face(10, 10, 40, 0.9), face(300, 10, 42, 0.6)], [face(12, 10, 40, 0.9), face(305, 12, 42, 0.6)])
    assert choose_subject(dets) == [0, 0]


def test_frames_without_the_subject_get_no_face():
    dets = frames([face(100, 100)], [], [face(600, 300, 20)], [face(105, 100)])
    assert choose_subject(dets) == [0, None, None, 0]


def test_no_detections_at_all():
    assert choose_subject(frames([], [])) == [None, None]
