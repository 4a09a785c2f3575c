"""The ArcFace option: model pack lookup and its errors, the pack's SCRFD landmarks, the alignment transform,
and the embedding, on generated ONNX graphs (ArcFace weights cannot be obtained offline)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from ncaer.identity.arcface import (
    ArcFaceEmbedder,
    find_arcface_models,
    similarity_transform,
)
from ncaer.identity.embed import IdentityError

SIZE = 64  # the fake detector's fixed input


def save(graph, path):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def fake_scrfd(path, box, kps):
    """An SCRFD graph (9 outputs) that always sees one face: `box` and landmarks `kps` in input pixels,
    anchored at the stride-8 cell whose centre is nearest the box centre."""
    col, row = round((box[0] + box[2]) / 16), round((box[1] + box[3]) / 16)
    cx, cy = col * 8, row * 8
    nodes, outputs = [], []
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            n = (SIZE // stride) ** 2 * 2
            value = np.zeros((n, width), np.float32)
            if stride == 8:
                anchor = (row * (SIZE // 8) + col) * 2
                value[anchor] = {"score": [0.9], "bbox": np.array([cx - box[0], cy - box[1], box[2] - cx,
                                                                   box[3] - cy]) / 8,
                                 "kps": (np.asarray(kps, np.float32) - [cx, cy]).ravel() / 8}[kind]
            name = f"{kind}_{stride}"
            nodes.append(helper.make_node("Constant", [], [name], value=helper.make_tensor(
                name + "_v", TensorProto.FLOAT, value.shape, value.ravel())))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, width]))
    return save(helper.make_graph(nodes, "scrfd", [helper.make_tensor_value_info(
        "input.1", TensorProto.FLOAT, [1, 3, SIZE, SIZE])], outputs), path)


def fake_arcface(path, dim=512):
    """A 112x112 recognition graph: 14x14 average pooling, then a fixed random projection to `dim`."""
    weights = np.random.default_rng(0).normal(size=(3 * 8 * 8, dim)).astype(np.float32)
    nodes = [helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14]),
             helper.make_node("Flatten", ["pooled"], ["flat"]),
             helper.make_node("Constant", [], ["w"], value=helper.make_tensor("w_v", TensorProto.FLOAT,
                                                                              weights.shape, weights.ravel())),
             helper.make_node("MatMul", ["flat", "w"], ["683"])]
    return save(helper.make_graph(nodes, "arcface", [helper.make_tensor_value_info(
        "input.1", TensorProto.FLOAT, [1, 3, 112, 112])], [helper.make_tensor_value_info(
            "683", TensorProto.FLOAT, [1, dim])]), path)


# the face at (96, 96, 160, 160) of a 320x320 image: the detector sees (32, 32, 224, 224) scaled by 1/3
BOX = (96, 96, 160, 160)
KPS = np.array([[116.0, 120], [140, 120], [128, 132], [118, 146], [138, 146]])
ORIGIN = 32


@pytest.fixture
def pack(tmp_path):
    folder = tmp_path / "buffalo_test"
    folder.mkdir()
    fake_scrfd(folder / "det_10g.onnx", [(v - ORIGIN) / 3 for v in BOX], (KPS - ORIGIN) / 3)
    fake_arcface(folder / "w600k_r50.onnx")
    (folder / "genderage.onnx").write_bytes(b"not used")
    return folder


def test_the_pack_is_found_by_folder_name_or_file(pack, monkeypatch, tmp_path):
    expected = (str(pack / "w600k_r50.onnx"), str(pack / "det_10g.onnx"))
    assert find_arcface_models(str(pack)) == expected
    assert find_arcface_models(str(pack / "w600k_r50.onnx")) == expected
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "models").mkdir(parents=True)
    (tmp_path / "home" / "models" / "buffalo_test").symlink_to(pack)
    assert find_arcface_models("buffalo_test")[0].endswith("w600k_r50.onnx")


def test_a_missing_or_incomplete_pack_says_what_to_do(pack, tmp_path, monkeypatch):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path / "home"))
    with pytest.raises(IdentityError, match="not found .*never downloads.*buffalo_l"):
        find_arcface_models("buffalo_l")
    (pack / "det_10g.onnx").unlink()
    with pytest.raises(IdentityError, match="no SCRFD detector"):
        find_arcface_models(str(pack))
    fake_arcface(pack / "glintr100.onnx")
    with pytest.raises(IdentityError, match="one recognition model, found glintr100.onnx, w600k_r50.onnx"):
        find_arcface_models(str(pack))


def test_the_similarity_transform_is_recovered():
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -2.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = np.array([[10.0, 20], [40, 22], [25, 35], [12, 50], [38, 52]])
    dst = src @ (scale * rotation).T + shift
    np.testing.assert_allclose(similarity_transform(src, dst), np.hstack([scale * rotation, shift[:, None]]),
                               atol=1e-9)


def test_landmarks_come_from_the_pack_detector_in_image_pixels(pack):
    embedder = ArcFaceEmbedder(str(pack), device="cpu")
    image = np.zeros((320, 320, 3), np.uint8)
    np.testing.assert_allclose(embedder.landmarks(image, BOX), KPS, atol=1e-3)
    with pytest.raises(ValueError, match="no landmarks"):
        embedder.landmarks(image, (260, 260, 310, 310))  # the only face the detector sees is elsewhere


def test_the_embedding_is_unit_length_and_follows_the_aligned_face(pack):
    embedder = ArcFaceEmbedder(str(pack), device="cpu")
    assert embedder.dim == 512 and embedder.name == "arcface-w600k_r50"
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (320, 320, 3), dtype=np.uint8)
    v = embedder.embed(image, BOX)
    assert v.shape == (512,) and abs(np.linalg.norm(v) - 1) < 1e-5
    outside = image.copy()
    outside[:, 200:] = 0  # pixels right of the aligned face region do not matter
    np.testing.assert_allclose(embedder.embed(outside, BOX), v, atol=1e-6)
    inside = image.copy()
    inside[110:150, 110:145] = 255 - inside[110:150, 110:145]
    assert np.linalg.norm(embedder.embed(inside, BOX) - v) > 0.01


def test_a_model_that_is_not_arcface_is_refused(pack):
    (pack / "w600k_r50.onnx").unlink()
    fake_scrfd(pack / "w600k_r50.onnx", [0, 0, 8, 8], np.zeros((5, 2)))  # a 64x64 input
    with pytest.raises(IdentityError, match="not an ArcFace model"):
        ArcFaceEmbedder(str(pack), device="cpu")


def test_the_embedding_is_insightfaces_own(pack):
    """insightface's reference pipeline (norm_crop on a BGR image, then ArcFaceONNX.get_feat, which swaps to
    RGB) on the same landmarks gives the same unit vector; fed the wrong colour order, it does not."""
    cv2 = pytest.importorskip("cv2")
    face_align = pytest.importorskip("insightface.utils.face_align")
    arcface_onnx = pytest.importorskip("insightface.model_zoo.arcface_onnx")
    import onnxruntime

    embedder = ArcFaceEmbedder(str(pack), device="cpu")
    rgb = np.random.default_rng(3).integers(0, 256, (320, 320, 3), dtype=np.uint8)
    rgb[..., 0] //= 4  # unequal channels: the colour order matters
    path = str(pack / "w600k_r50.onnx")
    reference = arcface_onnx.ArcFaceONNX(path, session=onnxruntime.InferenceSession(
        path, providers=["CPUExecutionProvider"]))

    def theirs(image):
        feature = reference.get_feat(face_align.norm_crop(image, landmark=KPS.astype(np.float32))).ravel()
        return feature / np.linalg.norm(feature)

    ours = embedder.embed(rgb, BOX)
    np.testing.assert_allclose(ours, theirs(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), atol=1e-4)
    assert np.abs(ours - theirs(rgb)).max() > 0.05
