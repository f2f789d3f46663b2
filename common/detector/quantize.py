"""Dynamic int8 quantisation for CPU serving (``aigi quantize``).

``torch.ao.quantization.quantize_dynamic`` converts ``nn.Linear`` layers: weights are
stored as int8 with a per-output-channel scale, activations are quantised on the fly.
That is where a ViT spends its time; the compact CNN's convolutions stay fp32, so for
it the gain is small (the command reports what it measured). The checkpoint stores the
int8 weights and their scales in safetensors and re-quantises them on load, which
reproduces the same int8 values.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from common.detector.checkpoint import CONFIG_FILE, WEIGHTS_FILE, read_config
from common.detector.config import ClipBackboneConfig, DetectorConfig, Quantization
from common.detector.model import CheckpointError, Detector

_INT8 = ".weight_int8"
_SCALE = ".weight_scale"


def _quantize_dynamic(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        # torch.ao.quantization announces its move to torchao; the API still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def _int8_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Per-channel symmetric int8 weights and scales for every Linear layer."""
    tensors: dict[str, torch.Tensor] = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            weight = module.weight.detach().float()
            scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
            q = torch.clamp(torch.round(weight / scale[:, None]), -127, 127).to(torch.int8)
            tensors[name + _INT8] = q.contiguous()
            tensors[name + _SCALE] = scale.contiguous()
    return tensors


def quantized_state(model: Detector) -> dict[str, torch.Tensor]:
    linear_names = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    state = {
        k: v.detach().contiguous()
        for k, v in model.state_dict().items()
        if not (k.endswith(".weight") and k[: -len(".weight")] in linear_names)
    }
    state.update(_int8_weights(model))
    return state


def load_quantized(config: DetectorConfig, tensors: dict[str, torch.Tensor]) -> Detector:
    fp32_config = config.model_copy(update={"quantization": None})
    model = Detector(fp32_config)
    state = {k: v for k, v in tensors.items() if not k.endswith((_INT8, _SCALE))}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            try:
                q, scale = tensors[name + _INT8], tensors[name + _SCALE]
            except KeyError as exc:
                raise CheckpointError(
                    f"quantised checkpoint lacks int8 weights for {name}"
                ) from exc
            state[name + ".weight"] = q.float() * scale[:, None]
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"quantised weights do not match the config: {exc}") from exc
    model.eval()
    quantized = _quantize_dynamic(model)
    quantized.config = config  # type: ignore[assignment]
    return quantized  # type: ignore[return-value]


def quantize_checkpoint(source: Path, target: Path) -> Path:
    """Write an int8 copy of ``source`` to ``target``."""
    from safetensors.torch import save_file

    from common.detector.checkpoint import load_checkpoint

    config = read_config(source)
    if config.quantization is not None:
        raise CheckpointError(f"{source} is already quantised")
    model = load_checkpoint(source)
    update: dict[str, object] = {
        "quantization": Quantization(),
        "model_id": f"{config.model_id}-int8",
    }
    if isinstance(config.backbone, ClipBackboneConfig) and config.backbone.vision_config:
        # The int8 copy is self-contained: it stores the backbone too.
        update["backbone"] = config.backbone.model_copy(update={"weights_in_checkpoint": True})
    qconfig = config.model_copy(update=update)
    target.mkdir(parents=True, exist_ok=True)
    save_file(
        quantized_state(model), str(target / WEIGHTS_FILE), metadata={"model_id": qconfig.model_id}
    )
    (target / CONFIG_FILE).write_text(qconfig.model_dump_json(indent=2) + "\n")
    return target
