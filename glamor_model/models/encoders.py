"""Image encoders shared by the frame and clip models: GLAMOR-Net's convolutional encoder and a
ResNet-18 cut after its last stage."""

from __future__ import annotations

from torch import nn

from .resnet import ResNet18, load_torchvision_weights


class ConvEncoder(nn.Module):
    """5 x (Conv 3x3 'same' with bias -> BN -> ReLU -> MaxPool 2x2), no pool after the last block unless
    `pool_last` (CAER's ResNet-18 variant pools after all five: 112 -> 3x3)."""

    def __init__(self, filters=(32, 64, 128, 256, 256), pool_last: bool = False):
        super().__init__()
        layers, c_in = [], 3
        for i, c in enumerate(filters):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if pool_last or i < len(filters) - 1:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        self.net = nn.Sequential(*layers)
        self.out_channels = c_in

    def forward(self, x):
        return self.net(x)  # 96 -> 6x6, 112 -> 7x7


class ResNetFaceEncoder(nn.Module):
    """ResNet-18 up to its last stage (512 channels); loads torchvision-format weights. With `trainable`,
    only the parameters whose names start with it learn (their BatchNorm statistics all still update in
    training, as in a reference that only sets requires_grad)."""

    def __init__(self, weights: str | None = None, trainable: str | None = None):
        super().__init__()
        self.resnet = ResNet18()
        if weights:
            load_torchvision_weights(self.resnet, weights)
        del self.resnet.fc, self.resnet.avgpool
        if trainable is not None:
            for name, p in self.resnet.named_parameters():
                p.requires_grad = name.startswith(trainable)
        self.out_channels = 512

    def forward(self, x):
        return self.resnet.features(x)
