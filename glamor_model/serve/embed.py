"""ResNet-18 image embeddings for `ncaer check-leakage --embedding --weights`: the network's
pooled 512-d features, from a torchvision-format state dict (for example ImageNet weights
you already have)."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from glamor_model.data.preprocess import IMAGENET_MEAN, IMAGENET_STD
from glamor_model.models.resnet import ResNet18, load_torchvision_weights
from ncaer.leakage.embedding import normalise_rows


class ResNetEmbedder:
    """Callable on image paths -> (N, 512) rows, as `ncaer.leakage.check_leakage` takes an embedder."""

    def __init__(self, weights: str, batch: int = 64):
        self.model = ResNet18()
        load_torchvision_weights(self.model, weights)
        self.model.eval()
        self.batch = batch
        self.description = f"ResNet-18 features from {weights}"

    def __call__(self, paths: list[str]) -> np.ndarray:
        mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
        feats = []
        with torch.inference_mode():
            for start in range(0, len(paths), self.batch):
                imgs = []
                for p in paths[start : start + self.batch]:
                    img = cv2.imread(p, cv2.IMREAD_COLOR)
                    img = np.zeros((224, 224, 3), np.uint8) if img is None else cv2.resize(img, (224, 224))
                    imgs.append((cv2.cvtColor(img, cv2.COLOR_BGR2RGB) / 255.0 - mean) / std)
                x = torch.from_numpy(np.stack(imgs).astype(np.float32)).permute(0, 3, 1, 2)
                feats.append(self.model.features(x).mean(dim=(2, 3)).numpy())
        return normalise_rows(np.concatenate(feats))
