"""Face identity embeddings, offline: dlib's ResNet face-recognition model (128-d).

Its weights ship in the `face-recognition-models` package and it runs with `dlib-bin`
(`pip install "ncaer[identity]"`); nothing is downloaded. The face is aligned by dlib's
5-point landmark model inside the box the build's detector found, as dlib's own
`face_recognition` examples do.

dlib's published operating point is "the same person when the Euclidean distance is
below 0.6" (99.38% on LFW), for pairs of single photos (DLIB_PAIR_THRESHOLD). A clip's
subject here is the mean of several of its faces, which brings one person's clips much
closer together while different people stay apart, so clips are grouped at 0.5
(DLIB_THRESHOLD): on the test photos (tests/test_identity.py) the same person's clip
means are at most 0.25 apart and two different people 0.57, which 0.6 merged.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

DLIB_PAIR_THRESHOLD = 0.6
DLIB_THRESHOLD = 0.5
IDENTITY_MISSING = ('identity embeddings need dlib and its face-recognition models, which are not installed: '
                    'pip install "ncaer[identity]"')


class IdentityError(RuntimeError):
    """The identity model cannot be loaded (package missing, weights missing)."""


def _models_dir() -> str:
    # the package's __init__ imports pkg_resources, which recent setuptools no longer provide: find its files
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityError(IDENTITY_MISSING)
    return os.path.join(spec.submodule_search_locations[0], "models")


class DlibEmbedder:
    """dlib_face_recognition_resnet_model_v1 on faces aligned by shape_predictor_5_face_landmarks."""

    name = "dlib-resnet-v1"
    dim = 128
    threshold = DLIB_THRESHOLD

    def __init__(self):
        try:
            import dlib
        except ImportError:
            raise IdentityError(IDENTITY_MISSING) from None
        models = _models_dir()
        paths = [os.path.join(models, f) for f in ("shape_predictor_5_face_landmarks.dat",
                                                   "dlib_face_recognition_resnet_model_v1.dat")]
        missing = [p for p in paths if not os.path.isfile(p)]
        if missing:
            raise IdentityError(f"dlib model file missing: {missing[0]}; reinstall face-recognition-models")
        self._dlib = dlib
        self._shape = dlib.shape_predictor(paths[0])
        self._net = dlib.face_recognition_model_v1(paths[1])

    def embed(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        """The 128-d descriptor of the face in `box` (x1, y1, x2, y2) of an RGB uint8 image."""
        image = np.ascontiguousarray(image)
        shape = self._shape(image, self._dlib.rectangle(*(int(v) for v in box)))
        return np.asarray(self._net.compute_face_descriptor(image, shape, 0), dtype=np.float32)
