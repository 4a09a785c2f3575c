"""FERAtt (Fernandez et al., 2019) and its PreActResNet-18 baseline, as the reference code
(pedrodiamel/ferattention, `torchlib/models/ferattentionnet.py`, `preactresnet.py`, `netlosses.py`)
builds and trains them; docs/fidelity.md gives the file and line of each fact. K = number of classes.

- Attention branch A: ResNet-34 encoder (from scratch, or torchvision-format weights, e.g.
  ImageNet's, as the reference) on the image as it comes ([0, 1]), U-Net decoder of blocks "x2
  bilinear upsampling, two conv 3x3 + ReLU" (256 .. 32 channels), conv 3x3 + ReLU, conv 1x1 -> K maps.
- Feature branch F: conv 9x9 -> K channels (no activation), 8 residual blocks (LeakyReLU 0.2),
  conv 3x3, global residual.
- Attended image: cat[sigmoid(A) * F, image, A] -> conv 3x3 (32) + ReLU -> conv 1x1 -> C channels
  -> BatchNorm -> ReLU.
- Classifier: the attended image affine-normalised (CIFAR mean/std constants), average-pooled to
  32x32 -> CIFAR-style PreActResNet-18 -> Linear 512->32 embedding -> Linear 32->K.

Both models take an image (B, C, S, S) as their first input; the second (the reconstruction
target during training) is ignored by the forward pass and used by `loss_terms`:
cross-entropy + 5 mean tanh(3 |attended - target|) + the Gaussian-structure loss on the embedding
with a Beta(2, 2) mixup (`feratt`; `feratt-cls` leaves it out).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model
from .resnet import ResNet34, load_torchvision_weights

# ferattentionnet.py normalize_layer: x * (std / 0.5) + (mean - 0.5) / 0.5 per channel, CIFAR-10's mean/std
_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


class PreActBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or inplanes != planes:
            self.shortcut = nn.Conv2d(inplanes, planes, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """CIFAR-style PreActResNet-18 ending in an embedding and the class layer. `final_norm`: BatchNorm
    + ReLU before the pooling (the baseline as first built here); FERAtt's reference pools layer4's
    output as it is."""

    def __init__(self, num_classes: int, in_channels: int = 3, embedding: int = 64, final_norm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        layers, inplanes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [PreActBlock(inplanes, planes, stride), PreActBlock(planes, planes)]
            inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512) if final_norm else None
        self.embed = nn.Linear(512, embedding)
        self.fc = nn.Linear(embedding, num_classes)

    def forward(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.layers(self.conv1(x))
        if self.bn is not None:
            x = F.relu(self.bn(x))
        z = self.embed(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return self.fc(z), z


def conv_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True))


class UpBlock(nn.Module):
    """x2 bilinear upsampling (to `size`, which is x2 for inputs that are multiples of 64), two conv + ReLU."""

    def __init__(self, c_in: int, c_mid: int, c_out: int):
        super().__init__()
        self.convs = nn.Sequential(conv_relu(c_in, c_mid), conv_relu(c_mid, c_out))

    def forward(self, x, size):
        return self.convs(F.interpolate(x, size=size, mode="bilinear", align_corners=False))


class UNetAttention(nn.Module):
    """ResNet-34 encoder (stem, 2x2 max pool, layer1..4), a 2x2 max pool, then six upsampling blocks
    with skips from layer4..layer1 -> conv 3x3 + ReLU -> conv 1x1: `out_channels` logit maps at
    input size. `weights`: a torchvision-format ResNet-34 state dict (the reference's ImageNet
    encoder); the encoder sees the image as the model gets it, as in the reference."""

    def __init__(self, out_channels: int, filters: int = 32, weights: str | None = None):
        super().__init__()
        self.encoder = ResNet34(num_classes=0)
        if weights:
            load_torchvision_weights(self.encoder, weights)
        f = filters
        self.center = UpBlock(512, f * 16, f * 8)
        self.dec5 = UpBlock(512 + f * 8, f * 16, f * 8)
        self.dec4 = UpBlock(256 + f * 8, f * 16, f * 8)
        self.dec3 = UpBlock(128 + f * 8, f * 8, f * 2)
        self.dec2 = UpBlock(64 + f * 2, f * 4, f * 4)
        self.dec1 = UpBlock(f * 4, f * 4, f)
        self.final = nn.Sequential(conv_relu(f, f), nn.Conv2d(f, out_channels, 1))

    def forward(self, x):
        e = self.encoder
        rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        c2 = e.layer1(F.max_pool2d(e.relu(e.bn1(e.conv1(rgb))), 2, ceil_mode=True))
        c3 = e.layer2(c2)
        c4 = e.layer3(c3)
        c5 = e.layer4(c4)
        h = self.center(F.max_pool2d(c5, 2, ceil_mode=True), c5.shape[2:])
        h = self.dec5(torch.cat([h, c5], 1), c4.shape[2:])
        h = self.dec4(torch.cat([h, c4], 1), c3.shape[2:])
        h = self.dec3(torch.cat([h, c3], 1), c2.shape[2:])
        h = self.dec2(torch.cat([h, c2], 1), (c2.shape[2] * 2, c2.shape[3] * 2))
        return self.final(self.dec1(h, x.shape[2:]))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class FeatureBranch(nn.Module):
    """conv 9x9 (no activation), 8 residual blocks (LeakyReLU 0.2), conv 3x3, global residual."""

    def __init__(self, in_channels: int, channels: int, blocks: int = 8):
        super().__init__()
        self.head = nn.Conv2d(in_channels, channels, 9, padding=4)
        self.blocks = nn.Sequential(*[ResidualBlock(channels) for _ in range(blocks)])
        self.tail = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        h = self.head(x)
        return h + self.tail(self.blocks(h))


def reconstruction_loss(attended: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """netlosses.py Attloss (without its weight 5): mean of (e^{6d} - 1) / (e^{6d} + 1) = tanh(3d),
    d = |target - attended| per pixel."""
    return torch.tanh(3 * (target - attended).abs()).mean()


def mixup_embeddings(z: torch.Tensor, labels: torch.Tensor, num_classes: int, lam: torch.Tensor,
                     perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """netlosses.py DGMMLoss's mixup: the batch followed by lam z + (1 - lam) z[perm]. Returns the
    2B embeddings and their (2B, K) targets: one-hot for the batch and for a mix of two samples of
    one class; all zero for a mix of two classes (the reference mixes the labels alike and compares
    the result with each integer class, which a mixed label of two classes almost never equals)."""
    onehot = F.one_hot(labels, num_classes).to(z.dtype)
    mixed = lam * z + (1 - lam) * z[perm]
    same = (labels == labels[perm]).to(z.dtype)[:, None]
    return torch.cat([z, mixed]), torch.cat([onehot, onehot * same])


def gaussian_structure_loss(z: torch.Tensor, targets: torch.Tensor, sigma: float = 0.5) -> torch.Tensor:
    """With mu_c the mean embedding of the rows whose target is class c, p_ic = softmax over the classes
    present of -|z_i - mu_c|^2 / (2 sigma^2), L = mean_i sum_c (p_ic - t_ic)^2. A row with an all-zero
    target counts sum_c p_ic^2 (least when z_i is equally far from every class mean).

    Fixed shapes (absent classes masked, not dropped): no step waits for the device to learn which
    classes a batch holds, and a compiled step keeps one graph."""
    counts = targets.sum(0)
    mu = targets.T @ z / counts.clamp(min=1)[:, None]
    logits = -torch.cdist(z, mu).pow(2) / (2 * sigma**2)
    p = torch.softmax(logits.masked_fill(counts == 0, float("-inf")), dim=1)  # absent: p = 0 = t
    return ((p - targets) ** 2).sum(1).mean()


def representation_loss(z: torch.Tensor, labels: torch.Tensor, num_classes: int, sigma: float = 0.5,
                        mixup: float = 2.0) -> torch.Tensor:
    """The Gaussian-structure loss of the batch and, with `mixup` > 0, of its mixup with lam ~
    Beta(mixup, mixup) (one lam per batch, a random pairing), drawn from torch's generator."""
    if not mixup:
        return gaussian_structure_loss(z, F.one_hot(labels, num_classes).to(z.dtype), sigma)
    concentration = z.new_tensor(mixup)
    lam = torch.distributions.Beta(concentration, concentration).sample()
    perm = torch.randperm(len(z), device=z.device)
    return gaussian_structure_loss(*mixup_embeddings(z, labels, num_classes, lam, perm), sigma)


class FERAtt(nn.Module):
    def __init__(self, num_classes: int = 7, in_channels: int = 3, classifier_size: int = 32, embedding: int = 32,
                 rec_weight: float = 5.0, rep_weight: float = 1.0, sigma: float = 0.5, mixup: float = 2.0,
                 attention_weights: str | None = None):
        super().__init__()
        k = num_classes
        self.attention = UNetAttention(k, weights=attention_weights)
        self.features = FeatureBranch(in_channels, k)
        self.to_image = nn.Sequential(conv_relu(2 * k + in_channels, 32), nn.Conv2d(32, in_channels, 1))
        self.bn = nn.BatchNorm2d(in_channels)
        self.classifier = PreActResNet18(k, in_channels, embedding, final_norm=False)
        self.register_buffer("scale", torch.tensor(_CIFAR_STD[:in_channels]).view(1, -1, 1, 1) / 0.5,
                             persistent=False)
        self.register_buffer("shift", (torch.tensor(_CIFAR_MEAN[:in_channels]).view(1, -1, 1, 1) - 0.5) / 0.5,
                             persistent=False)
        self.classifier_size = classifier_size
        self.rec_weight, self.rep_weight, self.sigma, self.mixup = rec_weight, rep_weight, sigma, mixup

    def forward(self, image, target=None) -> dict[str, torch.Tensor]:
        logits_a = self.attention(image)
        gate = torch.sigmoid(logits_a)
        fused = torch.cat([gate * self.features(image), image, logits_a], 1)
        attended = F.relu(self.bn(self.to_image(fused)))
        pooled = F.adaptive_avg_pool2d(attended * self.scale + self.shift, self.classifier_size)
        logits, z = self.classifier(pooled)
        # "attention": the gate sigmoid(A) averaged over its K maps, a (B, S, S) map in (0, 1) (the
        # reference displays A's mean over the maps; the gate is what is applied, and has no negative mass)
        return {"logits": logits, "embedding": z, "attended": attended, "attention": gate.mean(1)}

    forward_all = forward

    def loss_terms(self, out: dict, target: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {"ce": F.cross_entropy(out["logits"].float(), labels),
                 "rec": reconstruction_loss(out["attended"].float(), target.float())}
        if self.rep_weight:
            terms["rep"] = representation_loss(out["embedding"].float(), labels, out["logits"].shape[1], self.sigma,
                                               self.mixup)
        terms["loss"] = terms["ce"] + self.rec_weight * terms["rec"] + self.rep_weight * terms.get("rep", 0.0)
        return terms


class PreActResNetClassifier(nn.Module):
    """The baseline: the image itself, pooled to `classifier_size`, through PreActResNet-18."""

    def __init__(self, num_classes: int = 7, in_channels: int = 3, classifier_size: int = 32):
        super().__init__()
        self.net = PreActResNet18(num_classes, in_channels)
        self.classifier_size = classifier_size

    def forward(self, image, target=None) -> dict[str, torch.Tensor]:
        logits, z = self.net(F.adaptive_avg_pool2d(image, self.classifier_size))
        return {"logits": logits, "embedding": z}

    forward_all = forward

    def loss_terms(self, out: dict, target: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        ce = F.cross_entropy(out["logits"].float(), labels)
        return {"ce": ce, "loss": ce}


@register_model("feratt", "FERAtt as its reference code: K-map attention U-Net + feature branch -> attended image "
                          "-> PreActResNet-18; CE + 5 tanh reconstruction + Gaussian-structure loss with mixup",
                family="face-image", options=("attention_weights",))
def feratt(num_classes=7, **kw):
    return FERAtt(num_classes, **kw)


@register_model("feratt-cls", "FERAtt without the representation loss (CE + reconstruction)", family="face-image",
                options=("attention_weights",))
def feratt_cls(num_classes=7, **kw):
    return FERAtt(num_classes, rep_weight=0.0, **kw)


@register_model("preactresnet18", "PreActResNet-18 baseline on the image pooled to 32x32", family="face-image")
def preactresnet18(num_classes=7, **kw):
    return PreActResNetClassifier(num_classes, **kw)


def reconstruction_figures(out: dict, targets: torch.Tensor, boxes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, for a model that rebuilds the face (FERAtt): the attended image's MSE against the
    clean face, and the share of attention inside the face box."""
    rec = (out["attended"].float() - targets.float()).pow(2).mean((1, 2, 3))
    return rec, attention_in_box(out["attention"].float(), boxes)


def attention_in_box(attention: torch.Tensor, boxes: np.ndarray) -> torch.Tensor:
    """Share of each (S, S) attention map's mass inside its face box (x1, y1, x2, y2 in map pixels)."""
    b, h, w = attention.shape
    ys = torch.arange(h, device=attention.device)[None, :, None]
    xs = torch.arange(w, device=attention.device)[None, None, :]
    bx = torch.as_tensor(boxes, device=attention.device)
    inside = ((ys >= bx[:, 1, None, None]) & (ys < bx[:, 3, None, None]) &
              (xs >= bx[:, 0, None, None]) & (xs < bx[:, 2, None, None]))
    return (attention * inside).sum((1, 2)) / attention.sum((1, 2)).clamp(min=1e-12)
