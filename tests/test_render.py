import numpy as np
import pytest

from ncaer.faces.render import expand_box, face_crop, mask_face, pixel_box


def frame():
    return np.random.default_rng(0).integers(1, 256, (100, 160, 3), dtype=np.uint8)


def test_pixel_box_covers_and_clips():
    assert pixel_box(np.array([10.2, 20.7, 30.1, 40.0, 0.9]), 160, 100) == (10, 20, 31, 40)
    assert pixel_box(np.array([-5, -3, 500, 400, 0.9]), 160, 100) == (0, 0, 160, 100)
    assert pixel_box(np.array([170, 10, 180, 20, 0.9]), 160, 100) is None


def test_box_mask_is_zero_inside_and_untouched_outside():
    f = frame()
    box = (20, 10, 60, 70)
    out = mask_face(f, box, "box")
    assert (out[10:70, 20:60] == 0).all()
    inside = np.zeros(f.shape[:2], bool)
    inside[10:70, 20:60] = True
    np.testing.assert_array_equal(out[~inside], f[~inside])
    np.testing.assert_array_equal(f, frame())  # the input frame is not modified


@pytest.mark.parametrize("mode", ["ellipse", "blur"])
def test_other_masks_change_only_the_box(mode):
    f = frame()
    out = mask_face(f, (20, 10, 60, 70), mode)
    outside = np.ones(f.shape[:2], bool)
    outside[10:70, 20:60] = False
    np.testing.assert_array_equal(out[outside], f[outside])
    assert (out[10:70, 20:60] != f[10:70, 20:60]).mean() > 0.5
    if mode == "ellipse":
        assert (out[40, 40] == 0).all() and (out[10, 20] == f[10, 20]).all()


def test_no_box_leaves_the_context_unmasked():
    f = frame()
    np.testing.assert_array_equal(mask_face(f, None), f)


def test_face_crop_with_margin():
    f = frame()
    assert face_crop(f, (20, 10, 60, 70)).shape == (60, 40, 3)
    assert expand_box((20, 10, 60, 70), 0.25, 160, 100) == (10, 0, 70, 85)
