"""CAER-Net-S (`caer-net-s`) and its ResNet-18 variant (`caer-resnet18`) against their PyTorch reference,
ndkhanh360/CAER: `CAER/model/model.py` at commit 49761a6 and at commit 4bd7625. The expected values are
written from the reference's code, not computed with ncaer's."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from glamor_model.engine.config import TrainConfig, check_config
from glamor_model.engine.optim import create_optimizer, lr_factor
from glamor_model.models import create_model

CONTEXT = torch.rand(4, 3, 112, 112)


def layers(module: nn.Module) -> list[str]:
    """The layers of `module` in forward order, ReLUs left out (the reference applies them as functions;
    the forward test below checks where)."""
    out = []
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            out.append(f"conv {m.in_channels}-{m.out_channels} k{m.kernel_size[0]} p{m.padding[0]}")
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            out.append(f"bn{'1d' if isinstance(m, nn.BatchNorm1d) else ''} {m.num_features}")
        elif isinstance(m, nn.MaxPool2d):
            out.append(f"pool {m.kernel_size}")
        elif isinstance(m, nn.Linear):
            out.append(f"linear {m.in_features}-{m.out_features}")
        elif isinstance(m, nn.Dropout):
            out.append(f"dropout {m.p}")
    return out


def count(model, trainable=True):
    return sum(p.numel() for p in model.parameters() if p.requires_grad == trainable)


def test_caer_net_s_is_the_reference_layer_by_layer():
    """49761a6 model.py: Encoder (:7-27) conv 3x3 padding 1 -> BN -> ReLU, max-pool 2 after every conv but the
    last (:25); both streams [3, 32, 64, 128, 256, 256] (:33-35); attention Encoder [256, 128, 1] without pools
    (:36-37); BatchNorm1d(256) on both vectors (:57-58, :79); fusion Linear 256->128 -> ReLU -> Linear 128->1 per
    stream (:63-67); Linear 512->128 -> ReLU -> Dropout() -> Linear 128->7 (:69-72, :99-103)."""
    encoder = ["conv 3-32 k3 p1", "bn 32", "pool 2", "conv 32-64 k3 p1", "bn 64", "pool 2",
               "conv 64-128 k3 p1", "bn 128", "pool 2", "conv 128-256 k3 p1", "bn 256", "pool 2",
               "conv 256-256 k3 p1", "bn 256"]
    expected = (encoder + encoder + ["conv 256-128 k3 p1", "bn 128", "conv 128-1 k3 p1", "bn 1"]
                + ["bn1d 256", "bn1d 256", "linear 256-128", "linear 128-1", "linear 256-128", "linear 128-1"]
                + ["linear 512-128", "dropout 0.5", "linear 128-7"])
    model = create_model("caer-net-s", num_classes=7)
    assert layers(model) == expected
    # per encoder: convs 3*32*9+32 + 32*64*9+64 + 64*128*9+128 + 128*256*9+256 + 256*256*9+256
    #   = 896 + 18,496 + 73,856 + 295,168 + 590,080 = 978,496; BN 2*(32+64+128+256+256) = 1,472: 979,968
    # attention: 256*128*9+128 + 2*128 + 128*1*9+1 + 2*1 = 295,040 + 256 + 1,153 + 2 = 296,451
    # vector BN: 2 * 2*256 = 1,024; fusion: 2 * (256*128+128 + 128+1) = 66,050
    # classifier: 512*128+128 + 128*7+7 = 66,567
    # total: 2*979,968 + 296,451 + 1,024 + 66,050 + 66,567 = 2,390,028
    assert count(model) == 2_390_028
    assert count(model, trainable=False) == 0


def test_caer_resnet18_is_the_reference_layer_by_layer():
    """4bd7625 model.py: context Encoder [3, 32, 64, 128, 256, 512] pooling after every conv (:24, no `i < n-1`;
    :38, :64); attention Encoder [512, 64, 1] without pools (:65); no BatchNorm on the vectors; fusion
    Linear 512->128 -> ReLU -> Linear 128->1 per stream (:81-84); Linear 1024->128 -> ReLU -> Dropout() ->
    Linear 128->7 (:87-90)."""
    model = create_model("caer-resnet18", num_classes=7)
    assert layers(model.context_encoder) == [
        "conv 3-32 k3 p1", "bn 32", "pool 2", "conv 32-64 k3 p1", "bn 64", "pool 2", "conv 64-128 k3 p1", "bn 128",
        "pool 2", "conv 128-256 k3 p1", "bn 256", "pool 2", "conv 256-512 k3 p1", "bn 512", "pool 2"]
    assert layers(model.attention) == ["conv 512-64 k3 p1", "bn 64", "conv 64-1 k3 p1", "bn 1"]
    assert model.vector_bn is None
    assert layers(model.fusion) + layers(model.classifier) == [
        "linear 512-128", "linear 128-1", "linear 512-128", "linear 128-1", "linear 1024-128", "dropout 0.5",
        "linear 128-7"]
    assert model.context_encoder(CONTEXT).shape[1:] == (512, 3, 3)  # 112 -> 56 -> 28 -> 14 -> 7 -> 3


def test_caer_resnet18_learns_only_layer4_1_of_its_face_resnet():
    """4bd7625 model.py:57-61: every face ResNet parameter frozen, then layer4[1]'s set to `fine_tune` (True by
    default, :36, :119). Its BatchNorm statistics still follow the data in training, as the reference only
    sets requires_grad."""
    model = create_model("caer-resnet18", num_classes=7)
    learning = {n for n, p in model.face_encoder.resnet.named_parameters() if p.requires_grad}
    assert learning == {f"layer4.1.{layer}.{p}" for layer in ("conv1", "bn1", "conv2", "bn2")
                        for p in (("weight",) if layer.startswith("conv") else ("weight", "bias"))}
    # layer4[1]: 2 convs 512*512*9 = 2,359,296 each, 2 BN 2*512 each: 4,720,640
    # context encoder: 896 + 18,496 + 73,856 + 295,168 + 256*512*9+512 (1,180,160) = 1,568,576 convs,
    #   BN 2*(32+64+128+256+512) = 1,984: 1,570,560
    # attention: 512*64*9+64 (294,976) + 128 + 64*9+1 (577) + 2 = 295,683
    # fusion: 2 * (512*128+128 + 128+1) = 131,586; classifier: 1024*128+128 + 128*7+7 = 132,103
    # trainable: 4,720,640 + 1,570,560 + 295,683 + 131,586 + 132,103 = 6,850,572
    assert count(model) == 6_850_572
    # frozen: torchvision's resnet18 has 11,689,512 parameters; less fc (512*1000+1000) and layer4[1]:
    # 11,689,512 - 513,000 - 4,720,640 = 6,455,872
    assert count(model, trainable=False) == 6_455_872
    frozen_bn = model.face_encoder.resnet.layer1[0].bn1
    before = frozen_bn.running_mean.clone()
    model.train()(torch.rand(4, 3, 160, 160), CONTEXT)
    assert not torch.equal(frozen_bn.running_mean, before)


def reference_forward(model, face, context, pool_last_context):
    """What model.py's forward computes (49761a6 :18-27, :39-49, :74-103; 4bd7625 :17-26, :67-76, :92-116),
    with the model's own layers as the weights."""

    def encoder(x, module, pool_last=False, pool=True):
        convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
        norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
        for i, (conv, norm) in enumerate(zip(convs, norms)):
            x = F.relu(norm(conv(x)))
            if pool and (pool_last or i < len(convs) - 1):
                x = F.max_pool2d(x, 2)
        return x

    if model.face_encoder.__class__.__name__ == "ConvEncoder":
        f = encoder(face, model.face_encoder)
        f = F.avg_pool2d(f, f.shape[2]).view(f.shape[0], -1)
    else:  # torchvision's resnet18 with fc = Identity: its global average pool
        f = model.face_encoder(face).mean((2, 3))
    c = encoder(context, model.context_encoder, pool_last_context)
    a = encoder(c, model.attention, pool=False)
    n, ch, h, w = a.shape
    c = c * F.softmax(a.view(n, -1), dim=-1).view(n, ch, h, w)
    c = F.avg_pool2d(c, c.shape[2]).view(n, -1)
    if model.vector_bn is not None:
        f, c = model.vector_bn[0](f), model.vector_bn[1](c)
    (f1, _, f2), (c1, _, c2) = model.fusion.scorers
    weights = F.softmax(torch.cat([f2(F.relu(f1(f))), c2(F.relu(c1(c)))], dim=-1), dim=-1)
    features = torch.cat([f * weights[:, 0].unsqueeze(-1), c * weights[:, 1].unsqueeze(-1)], dim=-1)
    fc1, _, _, fc2 = model.classifier
    return fc2(F.relu(fc1(features)))  # dropout: identity in evaluation


@pytest.mark.parametrize("name, face_size, pool_last_context", [("caer-net-s", 96, False),
                                                                ("caer-resnet18", 160, True)])
def test_caer_models_compute_what_the_reference_forward_computes(name, face_size, pool_last_context):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7)
    face = torch.rand(4, 3, face_size, face_size)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in norms:  # statistics of this batch: the normalised maps straddle zero, so every ReLU counts
        m.momentum = 1.0
    with torch.no_grad():
        model.train()(face, CONTEXT)
        for m in norms:
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.1, 0.1)
        model.eval()
        torch.testing.assert_close(model(face, CONTEXT), reference_forward(model, face, CONTEXT, pool_last_context))


def test_caer_resnet18_takes_160_pixel_faces_recorded_in_the_run_config(tmp_path):
    """4bd7625 utils/util.py get_transform: ResizeFaceContext((160, (128, 171))), Crop(112). The face size is
    the recipe's: the run's config and checkpoint record it, and evaluation and serving read it from there."""
    weights = tmp_path / "r18.pth"
    config = TrainConfig(data="d", out="o", model="caer-resnet18", model_kwargs={"face_weights": str(weights)})
    assert (config.prep.face_size, config.prep.context_height, config.prep.context_width, config.prep.crop) == (
        160, 128, 171, 112)
    assert TrainConfig.from_saved(config.to_dict()).face_size == 160
    assert TrainConfig(data="d", out="o").face_size == 96  # GLAMOR-Net's
    assert TrainConfig(data="d", out="o", model="caer-resnet18", face_size=128).face_size == 128  # given wins


def test_caer_resnet18_is_not_trained_without_its_face_recognition_weights():
    """4bd7625 model.py:121 asserts a weights path; a trained checkpoint is still rebuilt without one."""
    with pytest.raises(ValueError, match="caer-resnet18 needs --face-weights: a face-recognition ResNet-18"):
        check_config(TrainConfig(data="d", out="o", model="caer-resnet18"))
    check_config(TrainConfig(data="d", out="o", model="caer-resnet18", model_kwargs={"face_weights": "r18.pth"}))


def test_caer_resnet18_takes_its_reference_recipe():
    """4bd7625 config.json: Adam lr 1e-4, weight_decay 1e-3, StepLR(step_size 5, gamma 0.2), 10 epochs, batch 32;
    utils/util.py: ImageNet mean/std, no face augmentation."""
    c = TrainConfig(data="d", out="o", model="caer-resnet18")
    assert (c.optimizer, c.lr, c.weight_decay, c.epochs, c.batch_size, c.normalize, c.augment_face, c.amp,
            c.context_jpeg) == ("adam", 1e-4, 1e-3, 10, 32, True, False, "off", 0)
    assert [lr_factor(c, e) * c.lr for e in range(10)] == pytest.approx([1e-4] * 5 + [2e-5] * 5)
    optimizer = create_optimizer([nn.Parameter(torch.zeros(1))], c, torch.device("cpu"))
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.param_groups[0]["weight_decay"] == 1e-3
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.999)  # torch.optim.Adam's defaults, as the reference
    with pytest.raises(ValueError, match="caer-resnet18 has no fast recipe"):
        TrainConfig(data="d", out="o", model="caer-resnet18", recipe="fast")
