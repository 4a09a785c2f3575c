"""GLAMOR-Net, CAER-Net-S and the ablation variants, as the reference code builds them.

Layer list: ../shared/reference/REFERENCE.md ("GLAMOR-Net as the reference code
implements it"). Inputs: face (B, 3, 96, 96) (160x160 for caer-resnet18) and context (B, 3, 112, 112),
both in [0, 1] (or ImageNet-normalised). Every model takes both and ignores what its
setting does not use, so training and evaluation code is the same for all.

Settings of the paper's ablation (Table 2):
- face only;
- context only (masked or visible face: a data setting), attention none/CA/GLA;
  with GLA the face features guide the attention but do not enter the fusion;
- face + context, attention none/CA/GLA (GLA: `glamor`; CA: `face-context-ca`).
The cells differ only in streams and attention: all take GLAMOR-Net's numerics (below) and
none normalises the vectors before the fusion, as GLAMOR-Net's code has no such layer.

GLAMOR-Net's reference is Keras (minhnhatvt/glamor-net model.py): BatchNormalization with
momentum 0.99 and epsilon 1e-3, Conv2D/Dense with glorot_uniform weights and zero biases.
`numerics="keras"` (the default) sets the same; "torch" keeps PyTorch's defaults.
`bn_momentum` (PyTorch's convention) replaces the BatchNorm momentum: Keras' 0.01 per step
needs about 500 steps for the running statistics to forget their start, so short runs on
small data evaluate with statistics that are not yet the data's (`--bn-momentum 0.1`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .encoders import ConvEncoder, ResNetFaceEncoder
from .registry import register_model

ATTENTIONS = ("none", "ca", "gla")
NUMERICS = ("keras", "torch")
BN_OPTIONS = ("bn_momentum",)  # what `ncaer train` may set on these models
# how these models were built before they took GLAMOR-Net's Keras numerics: for checkpoints saved then
LEGACY_KWARGS = {name: {"numerics": "torch"} for name in (
    "glamor", "face-context-none", "face-only", "context-none", "context-gla")}
LEGACY_KWARGS["context-ca"] = {"numerics": "torch", "vector_bn": True}


def set_bn_momentum(module: nn.Module, momentum: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = momentum


def keras_numerics(module: nn.Module, skip: nn.Module | None = None) -> None:
    """Keras' defaults on every conv, dense and BatchNorm layer of `module` outside `skip`: glorot-uniform
    weights (the same fans as Keras: in/out channels times the kernel area), zero biases; BatchNorm momentum
    0.99 in Keras' convention (PyTorch's 0.01: the new batch's share) and epsilon 1e-3."""
    skipped = set(skip.modules()) if skip is not None else set()
    for m in module.modules():
        if m in skipped:
            continue
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum, m.eps = 0.01, 1e-3


class GlobalLocalAttention(nn.Module):
    """Face vector concatenated to every context position -> Dense 128 ReLU -> BN -> ReLU -> Dense 1,
    softmax over positions; the context vector is the attention-weighted sum."""

    def __init__(self, face_dim: int, context_dim: int, hidden: int = 128):
        super().__init__()
        self.fc1 = nn.Linear(face_dim + context_dim, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, face_vec, context_map):
        b, c, h, w = context_map.shape
        positions = context_map.flatten(2).transpose(1, 2)  # (B, HW, C)
        joint = torch.cat([face_vec[:, None, :].expand(-1, h * w, -1), positions], dim=2)
        x = F.relu(self.fc1(joint))
        x = F.relu(self.bn(x.reshape(b * h * w, -1)).reshape(b, h * w, -1))
        attention = torch.softmax(self.fc2(x).squeeze(2), dim=1)  # (B, HW)
        return (positions * attention[:, :, None]).sum(1), attention


class ContextAttention(nn.Module):
    """CAER-Net-S: Conv 3x3 256->128 -> BN -> ReLU -> Conv 3x3 128->1 -> BN -> ReLU, softmax over HxW;
    the context vector is the average pool of map x attention (CAER's ResNet-18 variant: 512->64->1)."""

    def __init__(self, channels: int, hidden: int = 128):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 3, padding=1), nn.BatchNorm2d(1), nn.ReLU(inplace=True),
        )

    def forward(self, context_map):
        attention = torch.softmax(self.net(context_map).flatten(1), dim=1)  # (B, HW)
        attended = context_map * attention.view(context_map.shape[0], 1, *context_map.shape[2:])
        return attended.mean(dim=(2, 3)), attention


class AdaptiveFusion(nn.Module):
    """Per-stream score (Dense 128 ReLU -> Dense 1), softmax over streams, weighted vectors concatenated."""

    def __init__(self, dims: list[int], hidden: int = 128):
        super().__init__()
        self.scorers = nn.ModuleList(nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))
                                     for d in dims)

    def forward(self, vectors):
        scores = torch.cat([s(v) for s, v in zip(self.scorers, vectors)], dim=1)
        weights = torch.softmax(scores, dim=1)
        return torch.cat([v * weights[:, i : i + 1] for i, v in enumerate(vectors)], dim=1), weights


class ContextEmotionNet(nn.Module):
    """One network for every setting: `streams` "face", "context" or "face+context"; `attention` on the context."""

    def __init__(self, num_classes: int = 7, streams: str = "face+context", attention: str = "gla",
                 vector_bn: bool = False, face_encoder: nn.Module | None = None,
                 context_filters=(32, 64, 128, 256, 256), context_pool_last: bool = False, ca_hidden: int = 128,
                 dropout: float = 0.5, numerics: str = "keras", bn_momentum: float | None = None):
        super().__init__()
        if numerics not in NUMERICS:
            raise ValueError(f"numerics must be one of {NUMERICS}, not {numerics!r}")
        if streams not in ("face", "context", "face+context"):
            raise ValueError(f"streams must be face, context or face+context, not {streams!r}")
        if attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, not {attention!r}")
        self.streams, self.attention_kind = streams, attention
        uses_face_encoder = streams != "context" or attention == "gla"
        self.face_encoder = (face_encoder or ConvEncoder()) if uses_face_encoder else None
        self.context_encoder = ConvEncoder(context_filters, context_pool_last) if streams != "face" else None
        face_dim = self.face_encoder.out_channels if self.face_encoder is not None else 0
        context_dim = self.context_encoder.out_channels if self.context_encoder is not None else 0
        self.attention = None
        if self.context_encoder is not None and attention == "gla":
            self.attention = GlobalLocalAttention(face_dim, context_dim)
        elif self.context_encoder is not None and attention == "ca":
            self.attention = ContextAttention(context_dim, ca_hidden)
        dims = ([face_dim] if streams != "context" else []) + ([context_dim] if streams != "face" else [])
        # CAER-Net-S normalises both vectors before the fusion
        self.vector_bn = nn.ModuleList(nn.BatchNorm1d(d) for d in dims) if vector_bn else None
        self.fusion = AdaptiveFusion(dims) if len(dims) == 2 else None
        self.classifier = nn.Sequential(nn.Linear(sum(dims), 128), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                        nn.Linear(128, num_classes))
        if numerics == "keras":  # a face encoder given from outside (a ResNet) keeps its own
            keras_numerics(self, skip=face_encoder)
        if bn_momentum is not None:
            if not 0 < bn_momentum <= 1:
                raise ValueError(f"bn_momentum must be in (0, 1], not {bn_momentum}")
            set_bn_momentum(self, bn_momentum)

    def forward_all(self, face: torch.Tensor, context: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits plus what the paper plots: context attention (B, H*W) and fusion weights (B, 2)."""
        out = {}
        face_vec = self.face_encoder(face).mean(dim=(2, 3)) if self.face_encoder is not None else None
        vectors = [face_vec] if self.streams != "context" else []
        if self.context_encoder is not None:
            cmap = self.context_encoder(context)
            out["attention_shape"] = torch.tensor(cmap.shape[2:])
            if self.attention_kind == "gla":
                context_vec, out["attention"] = self.attention(face_vec, cmap)
            elif self.attention_kind == "ca":
                context_vec, out["attention"] = self.attention(cmap)
            else:
                context_vec = cmap.mean(dim=(2, 3))
            vectors.append(context_vec)
        if self.vector_bn is not None:
            vectors = [bn(v) for bn, v in zip(self.vector_bn, vectors)]
        if self.fusion is not None:
            fused, out["fusion_weights"] = self.fusion(vectors)
        else:
            fused = vectors[0]
        out["logits"] = self.classifier(fused)
        return out

    def forward(self, face: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.forward_all(face, context)["logits"]


@register_model("glamor", "GLAMOR-Net: face + masked context, Global-Local Attention, adaptive fusion",
                options=BN_OPTIONS)
def glamor(num_classes=7, **kw):
    return ContextEmotionNet(num_classes, "face+context", "gla", **kw)


@register_model("caer-net-s", "CAER-Net-S: face + context, standard context attention (CA), BN on both vectors",
                options=BN_OPTIONS)
def caer_net_s(num_classes=7, **kw):
    # a PyTorch reference (ndkhanh360/CAER): PyTorch's initialisation and BatchNorm constants
    return ContextEmotionNet(num_classes, "face+context", "ca", vector_bn=True, numerics="torch", **kw)


@register_model("face-context-ca", "face + context, standard context attention (CA): the ablation's CA cell",
                options=BN_OPTIONS)
def face_context_ca(num_classes=7, **kw):
    return ContextEmotionNet(num_classes, "face+context", "ca", **kw)


@register_model("face-context-none", "face + context, context average-pooled (no attention)", options=BN_OPTIONS)
def face_context_none(num_classes=7, **kw):
    return ContextEmotionNet(num_classes, "face+context", "none", **kw)


@register_model("face-only", "face stream only", options=BN_OPTIONS)
def face_only(num_classes=7, **kw):
    return ContextEmotionNet(num_classes, "face", "none", **kw)


@register_model("context-none", "context stream only, average-pooled (no attention)", options=BN_OPTIONS)
def context_none(num_classes=7, **kw):
    return ContextEmotionNet(num_classes, "context", "none", **kw)


@register_model("context-ca", "context stream only, standard context attention (CA)", options=BN_OPTIONS)
def context_ca(num_classes=7, **kw):
    return ContextEmotionNet(num_classes, "context", "ca", **kw)


@register_model("context-gla", "context stream only; face features guide the GLA but do not enter the fusion",
                options=BN_OPTIONS)
def context_gla(num_classes=7, **kw):
    return ContextEmotionNet(num_classes, "context", "gla", **kw)


# ndkhanh360/CAER at commit 4bd7625 (model/model.py; its class is CAERSNet: context attention, not GLA)
FACE_RECOGNITION_WEIGHTS = (
    "a face-recognition ResNet-18 state dict in torchvision format; the reference loads ijba_res18_naive.pth "
    "(DREAM's ResNet-18 trained on MS-Celeb-1M, as FER code such as RAN and SCN redistributes it; its 'module.' "
    "prefixes and classifier are dropped on loading). Nothing is downloaded.")


@register_model("caer-resnet18", "CAER-Net-S with a face-recognition ResNet-18 face branch (frozen but layer4[1]) "
                                 "and a 512-filter context CNN: ndkhanh360/CAER 4bd7625",
                options=("face_weights", *BN_OPTIONS), required={"face_weights": FACE_RECOGNITION_WEIGHTS})
def caer_resnet18(num_classes=7, face_weights: str | None = None, **kw):
    """Face 160x160 -> ResNet-18 with fc removed (model.py:39,55), only layer4[1] learning (:57-61) -> 512;
    context: Encoder [3, 32, 64, 128, 256, 512] pooling after every block (:24, :38,64; 112 -> 3x3), attention
    Encoder [512, 64, 1] without pools (:65), map x softmax average-pooled (:71-74, :94); no BatchNorm on the
    vectors; fusion Linear 512->128->1 per stream (:81-84), Linear 1024->128 -> ReLU -> Dropout 0.5 ->
    Linear (:87-90, :110-116). PyTorch's initialisation. Without `face_weights` (a trained checkpoint being
    loaded) the face branch starts random."""
    return ContextEmotionNet(num_classes, "face+context", "ca", face_encoder=ResNetFaceEncoder(face_weights,
                                                                                                "layer4.1."),
                             context_filters=(32, 64, 128, 256, 512), context_pool_last=True, ca_hidden=64,
                             numerics="torch", **kw)
