"""Embedding check: cosine neighbours across splits, for near-duplicates hashes miss.

With `--weights` (a torchvision-format ResNet-18 state dict, for example ImageNet
weights you already have) images are embedded by the network's pooled 512-d
features. Without weights no network is used: the embedding is a 16x16 colour
thumbnail, mean-removed and normalised, which catches colour and exposure
changes but is no semantic feature. The report says which one ran.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from .leakage import PAIR_COLUMNS, LeakConfig, split_pairs

THUMB = 16
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x - x.mean(axis=1, keepdims=True)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)


def thumbnail_embeddings(paths: list[str]) -> np.ndarray:
    out = np.zeros((len(paths), THUMB * THUMB * 3), np.float32)
    for i, p in enumerate(paths):
        img = cv2.imread(p, cv2.IMREAD_REDUCED_COLOR_4)
        if img is not None:
            out[i] = cv2.resize(img, (THUMB, THUMB), interpolation=cv2.INTER_AREA).ravel()
    return _normalise(out)


def cnn_embeddings(paths: list[str], weights: str, batch: int = 64) -> np.ndarray:
    import torch

    from glamor_model.resnet import ResNet18, load_torchvision_weights

    model = ResNet18()
    load_torchvision_weights(model, weights)
    model.eval()
    feats = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch):
            imgs = []
            for p in paths[start : start + batch]:
                img = cv2.imread(p, cv2.IMREAD_COLOR)
                img = np.zeros((224, 224, 3), np.uint8) if img is None else cv2.resize(img, (224, 224))
                imgs.append((cv2.cvtColor(img, cv2.COLOR_BGR2RGB) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD)
            x = torch.from_numpy(np.stack(imgs).astype(np.float32)).permute(0, 3, 1, 2)
            feats.append(model.features(x).mean(dim=(2, 3)).numpy())
    return _normalise(np.concatenate(feats))


def embedding_pairs(images: pd.DataFrame, readable: np.ndarray, config: LeakConfig) -> tuple[pd.DataFrame, str]:
    paths = images["path"].tolist()
    if config.weights:
        emb, used = cnn_embeddings(paths, config.weights), f"ResNet-18 features from {config.weights}"
    else:
        emb, used = thumbnail_embeddings(paths), "16x16 colour thumbnail (no CNN weights given)"
    rows = []
    for a, b in split_pairs(images["split"].unique()):
        ia = np.flatnonzero((images["split"] == a).to_numpy() & readable)
        ib = np.flatnonzero((images["split"] == b).to_numpy() & readable)
        earlier = np.ascontiguousarray(emb[ia].T)  # gathered once, not per block
        for start in range(0, len(ib), 2048):
            block = ib[start : start + 2048]
            sim = emb[block] @ earlier
            qb, qa = np.nonzero(sim >= config.embedding_threshold)
            rows.append(pd.DataFrame({
                "image_a": images["image"].to_numpy()[ia[qa]], "split_a": a,
                "image_b": images["image"].to_numpy()[block[qb]], "split_b": b,
                "distance": 1.0 - sim[qb, qa].astype(float), "check": "embedding",
            }))
    pairs = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=PAIR_COLUMNS)
    return pairs, used
