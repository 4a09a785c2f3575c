"""FERAtt (Fernandez et al., 2019) and its PreActResNet-18 baseline, as ../shared/reference/REFERENCE.md
describes them (paper version).

- Attention branch: ResNet-34 encoder (from scratch, or torchvision-format weights,
  e.g. ImageNet's, as in the paper) + U-Net decoder (bilinear x2 upsampling, conv,
  ReLU, skip connections, 32 filters) -> a 1-channel map.
- Feature branch: 9x9 conv, 4 residual blocks (32 channels, LeakyReLU 0.2), 3x3
  conv, global residual.
- Attended image: sigmoid(attention) * features -> 1x1 conv -> 3 (or 1) channels.
- Classifier: the attended image average-pooled to 32x32 -> CIFAR-style
  PreActResNet-18 (64/128/256/512, [2, 2, 2, 2]) -> Linear 512->64 embedding ->
  Linear 64->classes.

Both models take an image (B, C, S, S) as their first input; the second (the
reconstruction target during training) is ignored by the forward pass and used by
`loss_terms`: cross-entropy + `rec_weight` x MSE(attended image, clean face) +
`rep_weight` x the Gaussian-structure representation loss.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from glamor_model.data.preprocess import IMAGENET_MEAN, IMAGENET_STD

from .registry import register_model
from .resnet import ResNet34, load_torchvision_weights


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
    """CIFAR-style PreActResNet-18 ending in a 64-d embedding and the class layer."""

    def __init__(self, num_classes: int, in_channels: int = 3, embedding: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        layers, inplanes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [PreActBlock(inplanes, planes, stride), PreActBlock(planes, planes)]
            inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(512)
        self.embed = nn.Linear(512, embedding)
        self.fc = nn.Linear(embedding, num_classes)

    def forward(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn(self.layers(self.conv1(x))))
        z = self.embed(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return self.fc(z), z


class UNetAttention(nn.Module):
    """ResNet-34 encoder, U-Net decoder with 32 filters, 1-channel attention logits at input size.

    The encoder sees ImageNet-normalised RGB (grayscale repeated), so `weights`, a
    torchvision-format ResNet-34 state dict (the paper's ImageNet-pretrained encoder),
    loads unchanged."""

    def __init__(self, in_channels: int, filters: int = 32, weights: str | None = None):
        super().__init__()
        self.encoder = ResNet34(num_classes=0)
        if weights:
            load_torchvision_weights(self.encoder, weights)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        enc_channels = [64, 64, 128, 256, 512]
        self.decoder = nn.ModuleList()
        c_in = enc_channels[-1]
        for skip in reversed(enc_channels[:-1]):
            self.decoder.append(nn.Sequential(nn.Conv2d(c_in + skip, filters, 3, padding=1), nn.ReLU(inplace=True)))
            c_in = filters
        self.final = nn.Sequential(nn.Conv2d(filters + in_channels, filters, 3, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(filters, 1, 1))

    def forward(self, x):
        rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        skips = self.encoder.stages((rgb - self.mean) / self.std)
        h = skips.pop()
        for block in self.decoder:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[2:], mode="bilinear", align_corners=False)
            h = block(torch.cat([h, skip], 1))
        h = F.interpolate(h, size=x.shape[2:], mode="bilinear", align_corners=False)
        return self.final(torch.cat([h, x], 1))


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class FeatureBranch(nn.Module):
    """9x9 conv, 4 residual blocks (LeakyReLU 0.2), 3x3 conv, global residual."""

    def __init__(self, in_channels: int, channels: int = 32):
        super().__init__()
        self.head = nn.Conv2d(in_channels, channels, 9, padding=4)
        self.blocks = nn.Sequential(*[ResidualBlock(channels) for _ in range(4)])
        self.tail = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        h = F.leaky_relu(self.head(x), 0.2)
        return h + self.tail(self.blocks(h))


def representation_loss(z: torch.Tensor, labels: torch.Tensor, num_classes: int, sigma: float = 1.0) -> torch.Tensor:
    """Gaussian-structure loss: with mu_c the batch mean embedding of class c,
    p_ic = softmax over the batch's classes of -|z_i - mu_c|^2 / (2 sigma^2), and
    L = mean_i sum_c (p_ic - y_ic)^2. Classes absent from the batch are left out.

    Written with fixed shapes (one-hot over all classes, absent ones masked), so no step waits for the
    device to learn which classes a batch holds and a compiled step keeps one graph."""
    onehot = F.one_hot(labels, num_classes).to(z.dtype)  # (B, C)
    counts = onehot.sum(0)
    mu = onehot.T @ z / counts.clamp(min=1)[:, None]
    logits = -torch.cdist(z, mu).pow(2) / (2 * sigma**2)
    p = torch.softmax(logits.masked_fill(counts == 0, float("-inf")), dim=1)  # absent: p = 0 = y
    return ((p - onehot) ** 2).sum(1).mean()


class FERAtt(nn.Module):
    def __init__(self, num_classes: int = 7, in_channels: int = 3, classifier_size: int = 32,
                 rec_weight: float = 10.0, rep_weight: float = 1.0, sigma: float = 1.0,
                 attention_weights: str | None = None):
        super().__init__()
        self.attention = UNetAttention(in_channels, weights=attention_weights)
        self.features = FeatureBranch(in_channels)
        self.to_image = nn.Conv2d(32, in_channels, 1)
        self.classifier = PreActResNet18(num_classes, in_channels)
        self.classifier_size = classifier_size
        self.rec_weight, self.rep_weight, self.sigma = rec_weight, rep_weight, sigma

    def forward(self, image, target=None) -> dict[str, torch.Tensor]:
        attention = torch.sigmoid(self.attention(image))
        attended = self.to_image(attention * self.features(image))
        logits, z = self.classifier(F.adaptive_avg_pool2d(attended, self.classifier_size))
        return {"logits": logits, "embedding": z, "attended": attended, "attention": attention[:, 0]}

    forward_all = forward

    def loss_terms(self, out: dict, target: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {"ce": F.cross_entropy(out["logits"].float(), labels),
                 "rec": F.mse_loss(out["attended"].float(), target.float())}
        if self.rep_weight:
            terms["rep"] = representation_loss(out["embedding"].float(), labels, out["logits"].shape[1], self.sigma)
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


@register_model("feratt", "FERAtt: U-Net attention + feature branch -> attended image -> PreActResNet-18; "
                          "CE + 10 MSE reconstruction + Gaussian-structure loss", family="face-image",
                options=("attention_weights",))
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
