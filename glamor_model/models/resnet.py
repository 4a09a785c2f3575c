"""ResNet-18 and ResNet-34 written with torch alone (torchvision does not import with every torch build).

Parameter names follow torchvision's `resnet18` / `resnet34`, so a torchvision-format state
dict (`torch.save(torchvision.models.resnet34(...).state_dict(), path)`) loads unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet with basic blocks; `stages(x)` gives the maps after the stem (1/2) and each layer
    (1/4 .. 1/32), `features(x)` the last one, `forward` the logits (with num_classes 0, the
    pooled features)."""

    def __init__(self, layers: tuple[int, int, int, int], num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stride = 1 if i == 0 else 2
            self.add_module(f"layer{i + 1}", nn.Sequential(BasicBlock(inplanes, planes, stride),
                                                           *[BasicBlock(planes, planes) for _ in range(blocks - 1)]))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes) if num_classes else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = [self.relu(self.bn1(self.conv1(x)))]
        x = self.maxpool(maps[0])
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            maps.append(x)
        return maps

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


class ResNet18(ResNet):
    def __init__(self, num_classes: int = 1000):
        super().__init__((2, 2, 2, 2), num_classes)


class ResNet34(ResNet):
    def __init__(self, num_classes: int = 1000):
        super().__init__((3, 4, 6, 3), num_classes)


def load_torchvision_weights(model: ResNet, path: str, strict_backbone: bool = True) -> list[str]:
    """Load a torchvision-format state dict of the same ResNet; the classifier (`fc.*`) may differ in size
    or be absent from the model.

    Returns the keys that were not loaded (the fc layer when its size differs).
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k.startswith("fc.") and (k not in own or own[k].shape != v.shape)]
    state = {k: v for k, v in state.items() if k not in skipped}
    missing, unexpected = model.load_state_dict(state, strict=False)
    backbone_missing = [k for k in missing if not k.startswith("fc.")]
    if strict_backbone and (backbone_missing or unexpected):
        raise ValueError(f"{path} is not a torchvision {type(model).__name__} state dict: "
                         f"missing {backbone_missing[:5]}, unexpected {list(unexpected)[:5]}")
    return skipped + [k for k in missing if k.startswith("fc.")]
