"""Checkpoint folders: ``config.json`` + ``model.safetensors``, loaded without network.

The shipped detector lives in ``common/detector/weights/`` and is the default of every
command and service.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from common.detector.config import SHIPPED_MODEL, ClipBackboneConfig, DetectorConfig
from common.detector.model import CheckpointError, Detector

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def default_checkpoint() -> Path:
    return SHIPPED_MODEL


def read_config(folder: Path) -> DetectorConfig:
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise CheckpointError(
            f"checkpoint {folder} is not a folder (expected {CONFIG_FILE} + {WEIGHTS_FILE} inside)"
        )
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {folder} has no {CONFIG_FILE}; it is not an aigi "
            "checkpoint (train one with `aigi train`)"
        )
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    try:
        return DetectorConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise CheckpointError(f"{path} is inconsistent: {problems}") from exc


def _stored_keys(config: DetectorConfig, model: Detector) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    backbone = config.backbone
    if isinstance(backbone, ClipBackboneConfig) and not backbone.weights_in_checkpoint:
        state = {k: v for k, v in state.items() if not k.startswith("backbone.")}
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_checkpoint(model: Detector, folder: Path, config: DetectorConfig | None = None) -> Path:
    """Write weights and config; each file is replaced atomically, other files are kept."""
    config = config or model.config
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights_tmp = folder / f".{WEIGHTS_FILE}.tmp"
    config_tmp = folder / f".{CONFIG_FILE}.tmp"
    save_file(_stored_keys(config, model), str(weights_tmp), metadata={"model_id": config.model_id})
    config_tmp.write_text(json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
    os.replace(weights_tmp, folder / WEIGHTS_FILE)
    os.replace(config_tmp, folder / CONFIG_FILE)
    return folder


def load_checkpoint(folder: Path | None = None, map_location: str = "cpu") -> Detector:
    """Rebuild a detector from a checkpoint folder, or raise :class:`CheckpointError`."""
    folder = Path(folder) if folder is not None else default_checkpoint()
    config = read_config(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {folder} has no {WEIGHTS_FILE}")
    try:
        tensors = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights} is unreadable or truncated: {exc}") from exc
    if config.quantization is not None:
        from common.detector.quantize import load_quantized

        return _with_ood(load_quantized(config, tensors), folder)
    model = Detector(config)
    partial = isinstance(config.backbone, ClipBackboneConfig) and not (
        config.backbone.weights_in_checkpoint
    )
    expected = _stored_keys(config, model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(
        k
        for k in set(expected) & set(tensors)
        if tuple(expected[k].shape) != tuple(tensors[k].shape)
    )
    if missing or unexpected or wrong:
        detail = []
        if missing:
            detail.append(f"missing {missing[:5]}")
        if unexpected:
            detail.append(f"unexpected {unexpected[:5]}")
        if wrong:
            detail.append(f"shape mismatch {wrong[:5]}")
        raise CheckpointError(
            f"{weights} does not match {folder / CONFIG_FILE}: {', '.join(detail)}. The config "
            "describes a different architecture than the weights; re-save the checkpoint."
        )
    model.load_state_dict(tensors, strict=not partial)
    model.eval()
    return _with_ood(model, folder)


def _with_ood(model: Detector, folder: Path) -> Detector:
    from common.detector.ood import attach, load_ood

    attach(model, load_ood(folder, model.config))
    return model
