"""Clip-level emotion: per-frame CNN with spatial attention, pooled over time.

After "Emotion Recognition with Spatial Attention and Temporal Softmax Pooling"
(Aminbeidokhti et al., 2019): each of T face crops goes through a 2-D CNN (the
GLAMOR face encoder, or ResNet-18); a spatial attention (1x1 conv, softmax over
positions) pools its last feature map; a classifier gives per-frame class
probabilities p_t; temporal softmax pooling with a learned beta weights the
frames per class, w_tc = softmax_t(beta * p_tc), and the clip score is
S_c = sum_t w_tc p_tc. `video-mean` and `video-max` pool the same probabilities by
mean and max, for comparison. beta starts at 5: with probabilities in [0, 1], beta 1
would pool almost like the mean.

Data: `glamor_model.data` (a video corpus is built once by `ncaer build` with
--segments T; the face crops of each clip are cached as one uint8 array).
"""

from __future__ import annotations

import torch
from torch import nn

from glamor_model.pooling import temporal_softmax_pool

from .encoders import ConvEncoder, ResNetFaceEncoder
from .registry import register_model


class TemporalSoftmaxPool(nn.Module):
    """Temporal softmax pooling with a learned beta."""

    def __init__(self, beta: float):
        super().__init__()
        self.beta = nn.Parameter(torch.tensor(float(beta)))

    def forward(self, scores: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return temporal_softmax_pool(scores, self.beta, mask)


class SpatialAttentionPool(nn.Module):
    """Softmax over the positions of a 1x1-conv score map; returns the weighted sum and the weights."""

    def __init__(self, channels: int):
        super().__init__()
        self.score = nn.Conv2d(channels, 1, 1)

    def forward(self, fmap):
        weights = torch.softmax(self.score(fmap).flatten(1), dim=1)
        return (fmap.flatten(2) * weights[:, None, :]).sum(2), weights


BACKBONES = ("conv", "resnet18")  # per-frame CNN: GLAMOR's face encoder, or the ResNet-18 face branch
VIDEO_OPTIONS = ("backbone", "face_weights")


class VideoNet(nn.Module):
    def __init__(self, num_classes: int = 7, pooling: str = "softmax", backbone: str = "conv",
                 face_weights: str | None = None, beta: float = 5.0, dropout: float = 0.5):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, not {backbone!r}")
        if face_weights and backbone != "resnet18":
            raise ValueError("face weights are for the resnet18 backbone (--backbone resnet18)")
        self.encoder = ConvEncoder() if backbone == "conv" else ResNetFaceEncoder(face_weights)
        self.spatial = SpatialAttentionPool(self.encoder.out_channels)
        self.classifier = nn.Sequential(nn.Linear(self.encoder.out_channels, 128), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(128, num_classes))
        self.pooling = pooling
        self.temporal = TemporalSoftmaxPool(beta) if pooling == "softmax" else None

    def forward_all(self, clips: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """clips (B, T, 3, S, S), mask (B, T) of real frames -> clip log-probabilities and what led to them."""
        b, t = clips.shape[:2]
        vec, spatial = self.spatial(self.encoder(clips.flatten(0, 1)))
        frame_probs = torch.softmax(self.classifier(vec).float(), dim=1).view(b, t, -1)
        mask = mask.bool()
        if self.pooling == "softmax":
            scores = self.temporal(frame_probs, mask)
        elif self.pooling == "mean":
            scores = (frame_probs * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        else:
            scores = frame_probs.masked_fill(~mask[..., None], -1.0).amax(1).clamp(min=0)
        scores = scores.clamp(min=1e-8)
        return {"logits": torch.log(scores / scores.sum(1, keepdim=True)), "frame_probs": frame_probs,
                "spatial_attention": spatial.view(b, t, -1)}

    def forward(self, clips, mask):
        return self.forward_all(clips, mask)["logits"]


@register_model("video-tsp", "clips: face CNN + spatial attention per frame, learned temporal softmax pooling",
                family="video", options=VIDEO_OPTIONS)
def video_tsp(num_classes=7, **kw):
    return VideoNet(num_classes, "softmax", **kw)


@register_model("video-mean", "clips: as video-tsp with mean pooling over frames", family="video",
                options=VIDEO_OPTIONS)
def video_mean(num_classes=7, **kw):
    return VideoNet(num_classes, "mean", **kw)


@register_model("video-max", "clips: as video-tsp with max pooling over frames", family="video",
                options=VIDEO_OPTIONS)
def video_max(num_classes=7, **kw):
    return VideoNet(num_classes, "max", **kw)
