"""Clip-level emotion: per-frame CNN with spatial attention, pooled over time.

After "Emotion Recognition with Spatial Attention and Temporal Softmax Pooling"
(Aminbeidokhti et al., 2019): each of T face crops goes through a 2-D CNN (the
GLAMOR face encoder, or ResNet-18); a spatial attention (1x1 conv, softmax over
positions) pools its last feature map; a classifier gives per-frame class logits
x_tc. The pooling is the lab's public code's (thayral/temporal-stochastic-softmax,
`Classifier3D.py`): per class, frame weights w_tc = softmax over t of
(inv_temperature * x_tc), clip score S_c = sum_t w_tc x_tc, then log-softmax over
classes. The inverse temperature is fixed (that code runs 0 and 1; 0 is the mean of
the logits, so `video-mean` is the same network at 0). `video-max` takes the per-class
maximum of the logits. A learned inverse temperature did no better than the fixed one on
generated clips (docs/video.md), so it is not offered.

Data: `glamor_model.data` (a video corpus is built once by `ncaer build` with
--segments T; the face crops of each clip are cached as one uint8 array).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from glamor_model.pooling import temporal_softmax_pool

from .encoders import ConvEncoder, ResNetFaceEncoder
from .registry import register_model


class SpatialAttentionPool(nn.Module):
    """Softmax over the positions of a 1x1-conv score map; returns the weighted sum and the weights."""

    def __init__(self, channels: int):
        super().__init__()
        self.score = nn.Conv2d(channels, 1, 1)

    def forward(self, fmap):
        weights = torch.softmax(self.score(fmap).flatten(1), dim=1)
        return (fmap.flatten(2) * weights[:, None, :]).sum(2), weights


BACKBONES = ("conv", "resnet18")  # per-frame CNN: GLAMOR's face encoder, or a ResNet-18 face branch
CLIP_POOLINGS = ("softmax", "max")  # the model's own; glamor_model.pooling pools scores after the fact
VIDEO_OPTIONS = ("backbone", "face_weights")


class VideoNet(nn.Module):
    def __init__(self, num_classes: int = 7, pooling: str = "softmax", backbone: str = "conv",
                 face_weights: str | None = None, inv_temperature: float = 1.0, dropout: float = 0.5):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, not {backbone!r}")
        if face_weights and backbone != "resnet18":
            raise ValueError("face weights are for the resnet18 backbone (--backbone resnet18)")
        if pooling not in CLIP_POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(CLIP_POOLINGS)}, not {pooling!r}")
        if not math.isfinite(inv_temperature) or inv_temperature < 0:
            raise ValueError(f"inv_temperature must be finite and >= 0 (0 pools by the mean), not {inv_temperature}")
        self.encoder = ConvEncoder() if backbone == "conv" else ResNetFaceEncoder(face_weights)
        self.spatial = SpatialAttentionPool(self.encoder.out_channels)
        self.classifier = nn.Sequential(nn.Linear(self.encoder.out_channels, 128), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(128, num_classes))
        self.pooling = pooling
        self.inv_temperature = float(inv_temperature)

    def forward_all(self, clips: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """clips (B, T, 3, S, S), mask (B, T) of real frames -> clip log-probabilities and what led to them."""
        b, t = clips.shape[:2]
        vec, spatial = self.spatial(self.encoder(clips.flatten(0, 1)))
        frame_logits = self.classifier(vec).float().view(b, t, -1)
        mask = mask.bool()
        mask = mask | ~mask.any(1, keepdim=True)  # a clip with no subject at all: its (black) frames all count
        if self.pooling == "max":
            pooled = frame_logits.masked_fill(~mask[..., None], float("-inf")).amax(1)
        else:
            pooled = temporal_softmax_pool(frame_logits, self.inv_temperature, mask)
        return {"logits": F.log_softmax(pooled, dim=1), "frame_logits": frame_logits,
                "frame_probs": torch.softmax(frame_logits, dim=2), "spatial_attention": spatial.view(b, t, -1)}

    def forward(self, clips, mask):
        return self.forward_all(clips, mask)["logits"]


@register_model("video-tsp", "clips: face CNN + spatial attention per frame, temporal softmax pooling of the "
                             "frame logits (fixed inverse temperature, default 1)", family="video",
                options=(*VIDEO_OPTIONS, "inv_temperature"))
def video_tsp(num_classes=7, **kw):
    return VideoNet(num_classes, "softmax", **kw)


@register_model("video-mean", "clips: as video-tsp with mean pooling of the frame logits (inverse temperature 0)",
                family="video", options=VIDEO_OPTIONS)
def video_mean(num_classes=7, **kw):
    return VideoNet(num_classes, "softmax", inv_temperature=0.0, **kw)


@register_model("video-max", "clips: as video-tsp with max pooling of the frame logits", family="video",
                options=VIDEO_OPTIONS)
def video_max(num_classes=7, **kw):
    return VideoNet(num_classes, "max", **kw)
