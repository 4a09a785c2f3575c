import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from conftest import box_iou
from ncaer.faces import runtime
from ncaer.faces.base import nms
from ncaer.faces.detectors import create_detector
from ncaer.faces.runtime import DetectorError
from ncaer.faces.scrfd import find_scrfd_model


@pytest.fixture(scope="module")
def centerface():
    return create_detector("centerface", device="cpu")


def test_centerface_finds_the_faces_in_real_photos(centerface, photos):
    assert centerface.provider == "CPUExecutionProvider"
    for photo in photos:
        dets = centerface.detect([photo.image])[0]
        assert len(dets) == 1
        assert box_iou(dets[0, :4], photo.box) >= 0.6


def test_batch_gives_the_same_boxes_as_single_frames(centerface, photos):
    frames = [photos[0].image, photos[0].image[:, ::-1].copy(), photos[0].image]
    batch = centerface.detect(frames)
    for frame, dets in zip(frames, batch):
        np.testing.assert_allclose(centerface.detect([frame])[0], dets, rtol=1e-4, atol=1e-3)


def test_no_face_gives_no_box(centerface):
    assert len(centerface.detect([np.full((200, 300, 3), 90, np.uint8)])[0]) == 0


def test_nms_keeps_the_best_of_overlapping_boxes():
    dets = np.array([[0, 0, 10, 10, 0.8], [1, 1, 11, 11, 0.9], [50, 50, 60, 60, 0.7]], np.float32)
    kept = nms(dets, 0.3)
    np.testing.assert_array_equal(kept[:, 4], np.array([0.9, 0.7], np.float32))


def fake_scrfd(path, size=64):
    """An SCRFD-format graph (9 outputs: scores, boxes, landmarks at strides 8/16/32, 2 anchors)
    that always reports one face: stride 8, cell (x=3, y=2), anchor 0, distances (1, 1.5, 2, 2.5)."""
    outputs, nodes = [], []
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            n = (size // stride) ** 2 * 2
            value = np.zeros((n, width), np.float32)
            if stride == 8 and kind == "score":
                value[(2 * (size // 8) + 3) * 2, 0] = 0.9
            if stride == 8 and kind == "bbox":
                value[(2 * (size // 8) + 3) * 2] = [1, 1.5, 2, 2.5]
            name = f"{kind}_{stride}"
            nodes.append(helper.make_node("Constant", [], [name], value=helper.make_tensor(
                name + "_v", TensorProto.FLOAT, value.shape, value.ravel())))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [n, width]))
    graph = helper.make_graph(nodes, "scrfd", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                                             [1, 3, size, size])], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_scrfd_decoding_and_letterbox(tmp_path):
    model = fake_scrfd(tmp_path / "scrfd_test.onnx")
    det = create_detector("scrfd", model=str(model), device="cpu")
    frames = [np.zeros((160, 256, 3), np.uint8)] * 2
    out = det.detect(frames)
    # input 64x64: the 256x160 frame is scaled by 0.25 and padded; the face is (16, 4, 40, 36) there
    for dets in out:
        assert len(dets) == 1
        np.testing.assert_allclose(dets[0], [64, 16, 160, 144, 0.9], rtol=1e-5)


def test_scrfd_model_lookup(tmp_path, monkeypatch):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    pack = tmp_path / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    with pytest.raises(DetectorError, match="holds no SCRFD detector"):
        find_scrfd_model("buffalo_l")
    (pack / "det_10g.onnx").write_bytes(b"")
    assert find_scrfd_model("buffalo_l") == str(pack / "det_10g.onnx")
    assert find_scrfd_model(str(pack)) == str(pack / "det_10g.onnx")


@pytest.mark.parametrize("model", [None, "no_such_pack"])
def test_missing_scrfd_weights_explain_what_to_do(tmp_path, monkeypatch, model):
    monkeypatch.setenv("INSIGHTFACE_HOME", str(tmp_path))
    with pytest.raises(DetectorError, match=r"never downloads.*\.insightface/models"):
        create_detector("scrfd", model=model)


@pytest.mark.skipif(runtime.gpu_present(), reason="checks the error on a machine without a GPU")
def test_asking_for_cuda_without_a_gpu_is_an_error():
    with pytest.raises(DetectorError, match="CUDAExecutionProvider"):
        create_detector("centerface", device="cuda")


def test_auto_device_without_a_gpu_runs_on_cpu():
    if runtime.gpu_present():
        pytest.skip("GPU present")
    assert create_detector("centerface", device="auto").provider == "CPUExecutionProvider"


def test_the_gpu_warm_up_runs_the_shape_and_batch_the_build_runs(tmp_path):
    """On a GPU the warm-up builds the TensorRT engine: it must run the input the model takes (an SCRFD graph
    that fixes batch 1 and 64x64 gets one 64x64 frame; CenterFace a full batch at det_size square). The GPU
    path is forced on the CPU session."""
    from ncaer.faces.base import GPU_BATCH

    for det, expected in ((create_detector("scrfd", model=str(fake_scrfd(tmp_path / "s.onnx")), device="cpu"),
                           (1, 3, 64, 64)),
                          (create_detector("centerface", device="cpu", det_size=100), (GPU_BATCH, 3, 128, 128))):
        shapes = []
        run = det.session.run
        det.session.run = lambda names, feed, run=run: shapes.append(next(iter(feed.values())).shape) or run(names,
                                                                                                             feed)
        det.provider = "CUDAExecutionProvider"
        figures = det.warm_up()
        assert set(shapes) == {expected} and figures["input"] == list(expected)
