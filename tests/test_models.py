import cv2
import numpy as np
import pytest
import torch

from glamor_model.data.preprocess import Preprocess, jpeg_round_trip, preprocess, resize_bilinear
from glamor_model.models import check_model_options, create_model, list_models, model_family
from glamor_model.models.resnet import ResNet18

FACE, CONTEXT = torch.rand(3, 3, 96, 96), torch.rand(3, 3, 112, 112)
FRAME_MODELS = [n for n in list_models() if model_family(n) == "frame"]


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_glamor_has_exactly_the_reference_parameter_count():
    assert trainable(create_model("glamor", num_classes=7)) == 2_158_602


@pytest.mark.parametrize("name", FRAME_MODELS)
def test_every_model_gives_logits_and_normalised_weights(name):
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model.forward_all(FACE, CONTEXT)
    assert out["logits"].shape == (3, 7)
    if "attention" in out:  # GLA or CA over the context map: 7x7 (3x3 for caer-resnet18, which pools it once more)
        assert out["attention"].shape == (3, 9 if name == "caer-resnet18" else 49)
        torch.testing.assert_close(out["attention"].sum(1), torch.ones(3))
        assert (out["attention"] >= 0).all()
    if "fusion_weights" in out:
        torch.testing.assert_close(out["fusion_weights"].sum(1), torch.ones(3))


def test_attention_kinds_per_setting():
    kinds = {n: create_model(n).attention_kind for n in FRAME_MODELS}
    assert kinds["glamor"] == kinds["context-gla"] == "gla"
    assert kinds["caer-net-s"] == kinds["face-context-ca"] == kinds["context-ca"] == "ca"
    assert kinds["face-context-none"] == kinds["context-none"] == "none"


@pytest.mark.parametrize("name", ["glamor", "face-context-ca", "face-context-none", "face-only", "context-none",
                                  "context-ca", "context-gla"])
def test_glamor_and_its_ablation_cells_start_as_keras_does(name):
    """minhnhatvt/glamor-net model.py builds with Keras' defaults: glorot_uniform kernels, zero biases,
    BatchNormalization(momentum=0.99, epsilon=1e-3)."""
    torch.manual_seed(0)
    model = create_model(name)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert layers and norms
    for m in layers:
        receptive = m.weight[0, 0].numel()  # kernel area (1 for a dense layer)
        bound = (6 / ((m.weight.shape[0] + m.weight.shape[1]) * receptive)) ** 0.5
        assert m.weight.abs().max() <= bound
        assert m.weight.abs().max() > 0.9 * bound  # uniform over the whole range, not a narrower one
        assert (m.bias == 0).all()
    for m in norms:
        assert (m.eps, m.momentum) == (1e-3, 0.01)  # PyTorch's momentum is Keras' 1 - 0.99
    # the cells differ only in streams and attention: no BatchNorm on the vectors before the fusion
    assert model.vector_bn is None


def test_caer_net_s_keeps_its_pytorch_reference_numerics():
    model = create_model("caer-net-s")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert {(m.eps, m.momentum) for m in norms} == {(1e-5, 0.1)}
    assert model.vector_bn is not None


def test_the_ablation_grid_cells_share_glamors_numerics_and_layers():
    from glamor_model.eval.ablation import GRID

    for _, _, _, models in GRID:
        for attention, name in models.items():
            model = create_model(name)
            assert model.attention_kind == attention and model.vector_bn is None, name
            assert {m.eps for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)} == {1e-3}


def test_context_only_gla_uses_the_face_for_attention_but_not_for_the_decision():
    torch.manual_seed(0)
    # Train mode: batch statistics keep the activations alive. In eval mode a fresh network's
    # BatchNorm layers are identities and, for some initialisations, the context map shrinks to
    # near-constant values and the attention to uniform whatever the face.
    model = create_model("context-gla").train()
    assert model.face_encoder is not None and model.fusion is None
    assert model.classifier[0].in_features == 256  # the context vector alone
    with torch.no_grad():
        a = model.forward_all(FACE, CONTEXT)["attention"]
        b = model.forward_all(torch.rand_like(FACE), CONTEXT)["attention"]
    assert (a - b).abs().max() > 1e-3  # another face, another attention


def test_face_only_and_context_none_ignore_the_other_input():
    for name, change in (("face-only", 1), ("context-none", 0)):
        model = create_model(name).eval()
        inputs = [FACE, CONTEXT]
        other = list(inputs)
        other[change] = torch.rand_like(inputs[change])
        with torch.no_grad():
            torch.testing.assert_close(model(*inputs), model(*other))


def test_resnet18_face_branch_loads_a_data_parallel_checkpoint_with_another_classifier(tmp_path):
    """As ndkhanh360/CAER 4bd7625 loads ijba_res18_naive.pth: {'state_dict': {'module.' + key: ...}}, its fc
    (a face-identity classifier) dropped."""
    torch.manual_seed(3)
    reference = ResNet18(num_classes=10)
    torch.save({"state_dict": {"module." + k: v for k, v in reference.state_dict().items()}}, tmp_path / "r18.pth")
    model = create_model("caer-resnet18", face_weights=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(model.face_encoder.resnet.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert model(torch.rand(3, 3, 160, 160), CONTEXT).shape == (3, 7)


def test_masked_context_is_zero_inside_the_face_box():
    rgb = np.random.default_rng(0).integers(1, 256, (400, 712, 3), dtype=np.uint8)
    box = (300, 100, 400, 220)
    native = Preprocess(face_size=96, context_height=400, context_width=712, crop=112, context_jpeg=0)
    face, context = preprocess(rgb, box, native)
    assert (context[100:220, 300:400] == 0).all()
    assert (context[:100] == rgb[:100]).all() and (context[:, :300] == rgb[:, :300]).all()
    _, resized = preprocess(rgb, box, Preprocess(context_jpeg=0))  # 128x171: the box shrinks by 0.32 / 0.24
    assert (resized[33:69, 73:95] == 0).all()
    _, visible = preprocess(rgb, box, Preprocess(context_face="visible"))
    assert visible[33:69, 73:95].mean() > 50
    assert face.shape == (96, 96, 3) and face.mean() > 50


def test_resize_is_tf_image_resize_bilinear_worked_out_by_hand():
    """tf.image.resize (bilinear, antialias off, half-pixel centres): output i samples the input at
    (i + 0.5) * in / out - 0.5, clamped into the image, linearly between its two neighbours."""
    row = np.array([[0, 10, 20, 30, 40]], np.float32)[:, :, None]
    # 5 -> 2: samples at 0.75 and 3.25
    np.testing.assert_allclose(resize_bilinear(row, 1, 2)[0, :, 0], [7.5, 32.5])
    # 3 -> 2: samples at 0.25 and 1.75
    np.testing.assert_allclose(resize_bilinear(row[:, :3], 1, 2)[0, :, 0], [2.5, 17.5])
    # 2x2 -> 4x4: samples at -0.25 (clamped: the first pixel), 0.25, 0.75, 1.25 (the last) on both axes
    square = np.array([[0, 10], [20, 30]], np.float32)[:, :, None]
    out = resize_bilinear(square, 4, 4)[:, :, 0]
    np.testing.assert_allclose(out[0], [0, 2.5, 7.5, 10])
    np.testing.assert_allclose(out[:, 0], [0, 5, 15, 20])
    assert out[1, 1] == pytest.approx(7.5) and out[2, 1] == pytest.approx(17.5) and out[3, 3] == 30


def test_the_context_is_masked_then_jpeg_re_encoded_then_resized_as_the_reference():
    rgb = np.random.default_rng(1).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    rgb[:, 80:] = 200  # a flat half, which a JPEG at quality 95 keeps to a grey level or two
    box = (10, 20, 40, 60)
    face, context = preprocess(rgb, box, Preprocess())
    masked = rgb.copy()
    masked[20:60, 10:40] = 0
    decoded = jpeg_round_trip(masked, 95)
    assert 0 < np.abs(decoded.astype(int) - masked).max() and np.abs(decoded[:, 88:].astype(int) - 200).max() <= 2
    expected = np.clip(np.rint(resize_bilinear(decoded, 128, 171)), 0, 255).astype(np.uint8)
    assert np.array_equal(context, expected)
    assert np.array_equal(face, np.clip(np.rint(resize_bilinear(rgb[20:60, 10:40], 96, 96)), 0, 255))
    # the named deviations: no re-encode; OpenCV's INTER_AREA
    _, plain = preprocess(rgb, box, Preprocess(context_jpeg=0))
    assert np.array_equal(plain, np.clip(np.rint(resize_bilinear(masked, 128, 171)), 0, 255).astype(np.uint8))
    _, area = preprocess(rgb, box, Preprocess(context_resize="area", context_jpeg=0))
    assert np.array_equal(area, cv2.resize(masked, (171, 128), interpolation=cv2.INTER_AREA))


def test_a_checkpoint_saved_before_the_context_options_is_served_as_it_was_trained():
    old = {"face_size": 96, "context_height": 128, "context_width": 171, "crop": 112, "context_face": "masked"}
    prep = Preprocess.from_saved(old)
    assert (prep.context_resize, prep.context_jpeg) == ("area", 0)
    assert Preprocess.from_saved({**old, "context_resize": "tf-bilinear", "context_jpeg": 95}) == Preprocess()


def test_no_face_gives_a_black_face_and_an_unmasked_context():
    rgb = np.full((200, 300, 3), 77, np.uint8)
    face, context = preprocess(rgb, None, Preprocess())
    assert (face == 0).all() and (context == 77).all()


@pytest.mark.parametrize("name", ["video-tsp", "video-mean", "video-max"])
def test_clip_models_pool_frames_into_clip_log_probabilities(name):
    model = create_model(name, num_classes=5).eval()
    clips, mask = torch.rand(2, 6, 3, 96, 96), torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    with torch.no_grad():
        out = model.forward_all(clips, mask)
    assert out["frame_probs"].shape == (2, 6, 5) and out["spatial_attention"].shape == (2, 6, 36)
    torch.testing.assert_close(out["logits"].exp().sum(1), torch.ones(2))
    # masked frames do not change the clip
    other = clips.clone()
    other[1, 4:] = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(other, mask)[1], out["logits"][1])


def test_clip_models_take_the_resnet18_face_branch_with_torchvision_weights(tmp_path):
    torch.manual_seed(5)
    reference = ResNet18(num_classes=1000)
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model = create_model("video-tsp", num_classes=3, backbone="resnet18", face_weights=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(model.encoder.resnet.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)
    assert model(torch.rand(2, 4, 3, 64, 64), torch.ones(2, 4, dtype=torch.bool)).shape == (2, 3)
    with pytest.raises(ValueError, match="resnet18 backbone"):  # weights the conv encoder would ignore
        create_model("video-tsp", face_weights=str(tmp_path / "r18.pth"))
    with pytest.raises(ValueError, match="backbone must be one of conv, resnet18"):
        create_model("video-tsp", backbone="resnet50")


def test_model_options_are_checked_against_the_registry():
    check_model_options("video-mean", {"backbone": "resnet18", "face_weights": "r18.pth"})
    check_model_options("caer-resnet18", {"face_weights": "r18.pth"})
    with pytest.raises(ValueError, match="--backbone is for video-max, video-mean, video-tsp, not glamor$"):
        check_model_options("glamor", {"backbone": "resnet18"})
    with pytest.raises(ValueError, match="--face-weights is for caer-resnet18, video-max, video-mean, video-tsp, "
                                         "not feratt"):
        check_model_options("feratt", {"face_weights": "r18.pth"})
    with pytest.raises(ValueError, match="no model takes the option 'depth'"):
        check_model_options("glamor", {"depth": 50})
    with pytest.raises(KeyError, match="unknown model 'glamour'"):
        check_model_options("glamour", {})


def test_the_registry_is_also_reachable_from_the_package_top():
    import glamor_model

    assert glamor_model.create_model is create_model and glamor_model.list_models is list_models
