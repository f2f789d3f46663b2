"""Grad-CAM for the detector, built once per process, with a truncated backward pass.

pytorch-grad-cam runs ``loss.backward()`` through the whole network. Grad-CAM only
needs the gradient at the target layer, so :class:`DetectorCAM` freezes the weights
and marks the target layer's *output* as the start of the autograd graph: the forward
pass before that layer builds no graph, and the backward pass stops there. The heatmap
is the same as the full backward's (asserted in the tests); the cost is one forward
pass plus the backward of the layers after the target (the head for the compact CNN,
one transformer block for a ViT). With no weight needing a gradient, pytorch-grad-cam's
per-call ``model.zero_grad()`` has nothing to reset; it still walks every module and
parameter, a cost the compact CNN's short forward pass notices (docs/benchmarks.md),
so the truncated CAM hands pytorch-grad-cam the model behind :class:`_FrozenWeights`,
which skips it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from common.detector.model import ClipVisionBackbone, Detector


def vit_reshape_transform(grid: int) -> Any:
    """Drop the CLS token and fold the patch tokens into a (grid x grid) map."""

    def reshape(tensor: torch.Tensor) -> torch.Tensor:
        tokens = tensor[:, 1:, :]
        side = grid if grid * grid == tokens.shape[1] else math.isqrt(tokens.shape[1])
        result = tokens.reshape(tensor.size(0), side, side, tensor.size(2))
        return result.permute(0, 3, 1, 2)

    return reshape


def _start_graph_here(_: nn.Module, __: Any, output: Any) -> None:
    if isinstance(output, torch.Tensor) and not output.requires_grad and output.grad_fn is None:
        output.requires_grad_(True)


class _FrozenWeights(nn.Module):
    """``model`` for pytorch-grad-cam when no weight needs a gradient: same forward,
    no-op ``zero_grad`` (no weight can hold a gradient to reset)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x)

    def zero_grad(self, set_to_none: bool = True) -> None:
        return None


class _ImageDecisionTarget:
    """The logit of the class the *whole batch* decides (mean logits over its crops).

    pytorch-grad-cam calls targets after the batch's forward pass, with one output row
    each; this target reads the batch's outputs from the CAM, so every crop of an image
    is explained for the image's verdict, from that single forward pass.
    """

    def __init__(self, cam: GradCAM) -> None:
        self.cam = cam

    def __call__(self, row: torch.Tensor) -> torch.Tensor:
        outputs = self.cam.outputs
        decided = int(outputs.detach().float().mean(dim=0).argmax().item())
        return row[decided] if row.dim() == 1 else row[:, decided]


class DetectorCAM:
    """Grad-CAM for the predicted class. Use as a context manager to release hooks."""

    def __init__(self, model: Detector, truncated: bool = True) -> None:
        self.model = model.eval()
        self.truncated = truncated
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        layer = model.gradcam_layer
        reshape = None
        if isinstance(model.backbone, ClipVisionBackbone):
            reshape = vit_reshape_transform(model.backbone.patch_grid)
        self._saved_flags = [(p, p.requires_grad) for p in model.parameters()]
        for param in model.parameters():
            # Truncated: no weight needs a gradient. Full: every weight does, as in training.
            param.requires_grad_(not truncated)
        if truncated:
            # Registered before pytorch-grad-cam's hooks, so theirs see a grad-enabled output.
            self._handles.append(layer.register_forward_hook(_start_graph_here))
        seen_by_cam: nn.Module = _FrozenWeights(model) if truncated else model
        self.cam = GradCAM(model=seen_by_cam, target_layers=[layer], reshape_transform=reshape)

    def __enter__(self) -> DetectorCAM:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()

    def release(self) -> None:
        """Remove every hook and restore the weights' requires_grad flags."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.cam.activations_and_grads.release()
        for param, flag in self._saved_flags:
            param.requires_grad_(flag)
        self._saved_flags.clear()

    def __call__(
        self, batch: torch.Tensor, classes: list[int] | None = None, one_image: bool = False
    ) -> tuple[np.ndarray, torch.Tensor]:
        """Heatmaps in [0, 1] at the model's input size (N, H, W), and the logits.

        ``classes=None`` explains the predicted (arg-max) class of each image, from the
        same forward pass. ``one_image=True``: the batch is the crops of one image, each
        explained for the class their mean logits decide.
        """
        targets: list[Any] | None = None
        if one_image:
            targets = [_ImageDecisionTarget(self.cam)] * int(batch.shape[0])
        elif classes is not None:
            targets = [ClassifierOutputTarget(c) for c in classes]
        try:
            with torch.enable_grad():
                heatmaps = self.cam(input_tensor=batch, targets=targets)
            logits = self.cam.outputs.detach().float().cpu()
        finally:
            self.cam.activations_and_grads.clear()
            self.cam.outputs = None
        return np.nan_to_num(np.asarray(heatmaps, dtype=np.float32), nan=0.0), logits
