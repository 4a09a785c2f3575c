import cv2
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


def _detail_finer_than(image: np.ndarray, pixels: int) -> float:
    """Mean grey-level difference between an image and its `pixels` x `pixels` version scaled back up."""
    image = image.astype(np.float32)
    h, w = image.shape[:2]
    coarse = cv2.resize(image, (pixels, pixels), interpolation=cv2.INTER_AREA)
    return float(np.abs(image - cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)).mean())


@pytest.mark.parametrize("face_height", [60, 150, 600])
def test_blur_leaves_no_detail_in_a_face_of_any_size(photos, face_height):
    """A real portrait scaled so its face is `face_height` px, found by the detector: after the blur nothing
    finer than 16 px across the face is left, at any size (a blur scaled to the face, 1/12 of it, left a
    600 px face 50 px of detail, enough to read its expression)."""
    from ncaer.faces.detectors import create_detector

    photo = photos[0]
    scale = face_height / (photo.box[3] - photo.box[1])
    image = cv2.resize(photo.image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    dets = create_detector("centerface", device="cpu").detect([image])[0]
    assert len(dets) == 1
    x1, y1, x2, y2 = pixel_box(dets[0], image.shape[1], image.shape[0])
    face = image[y1:y2, x1:x2]
    blurred = mask_face(image, (x1, y1, x2, y2), "blur")[y1:y2, x1:x2]
    assert _detail_finer_than(face, 16) > 10  # measured 13-15: the face had detail
    assert _detail_finer_than(blurred, 16) < 2.5  # measured 1.1 at every size; 11 at 600 px with the old blur
