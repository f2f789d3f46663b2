"""The epochs of `aigi train`: one pass over the training set, the validation after it,
and the state saved after each epoch so that ``--resume`` continues where a run stopped.

:mod:`common.detector.training` decides what trains (a :class:`TrainingSetup`) and
with what optimiser (an :class:`Optimisation`); this module only runs them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.detector.config import Preprocessing
from common.detector.dataset import TensorImageDataset
from common.detector.model import Detector
from common.detector.preprocess import normalize

log = logging.getLogger(__name__)


def _autocast(device: str, dtype: torch.dtype | None) -> torch.autocast:
    """Mixed precision in ``dtype`` on ``device``; a no-op for None (fp32)."""
    return torch.autocast(
        device.split(":")[0], dtype=dtype or torch.float32, enabled=dtype is not None
    )


def evaluate_logits(
    model: nn.Module,
    images: torch.Tensor,
    pre: Preprocessing,
    device: str,
    dtype: torch.dtype | None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Logits (N×2, fp32 on the CPU) of uint8 ``images``, in eval and inference mode."""
    model.eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = normalize(images[start : start + batch_size], pre).to(device)
            with _autocast(device, dtype):
                chunks.append(model(x).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0, 2)


@dataclass
class TrainingSetup:
    """What the epochs train and validate, and where.

    Either the whole model on augmented uint8 images (``pre`` normalises them), or,
    for a linear probe, only the head on the frozen backbone's cached features
    (``pre`` is None: the features are the inputs as they are).
    """

    #: Whose parameters the optimiser steps; also what computes the logits.
    trainable: nn.Module
    train_set: TensorImageDataset
    val_inputs: torch.Tensor
    pre: Preprocessing | None
    device: str
    #: The autocast dtype; None for fp32.
    dtype: torch.dtype | None
    #: Inputs in channels-last layout (the compact CNN's convolutions are faster so).
    channels_last: bool = False
    #: A part of the model kept in eval mode while the rest trains.
    frozen: nn.Module | None = None

    def train_mode(self) -> None:
        self.trainable.train()
        if self.frozen is not None:
            self.frozen.eval()

    def batch_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """One training batch as the trainable module takes it, on the device."""
        x = inputs if self.pre is None else normalize(inputs, self.pre)
        x = x.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def validation_logits(self) -> torch.Tensor:
        if self.pre is None:  # cached features
            self.trainable.eval()
            with torch.inference_mode():
                return self.trainable(self.val_inputs.to(self.device)).float().cpu()
        return evaluate_logits(self.trainable, self.val_inputs, self.pre, self.device, self.dtype)


@dataclass
class Optimisation:
    """The optimiser, its per-batch learning-rate schedule (None: constant) and the
    loss scaler (active only for fp16 on CUDA)."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    scaler: torch.amp.GradScaler

    def step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])


def make_loader(train_set: TensorImageDataset, batch_size: int, seed: int) -> DataLoader[Any]:
    """Shuffled batches from a generator of its own (so a resumed run, seeded with
    its next epoch, does not replay the first epoch's order); a last partial batch
    is dropped unless it is the only one."""
    return DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        drop_last=len(train_set) > batch_size,
    )


def train_one_epoch(
    setup: TrainingSetup,
    loader: DataLoader[Any],
    optimisation: Optimisation,
    loss_fn: nn.Module,
    desc: str,
    show_progress: bool,
) -> tuple[float, float]:
    """One pass over ``loader``; the mean training loss and accuracy."""
    setup.train_mode()
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=desc, unit="batch", disable=not show_progress, leave=False)
    for inputs, targets in bar:
        x = setup.batch_inputs(inputs)
        targets = targets.to(setup.device)
        with _autocast(setup.device, setup.dtype):
            logits = setup.trainable(x)
            loss = loss_fn(logits.float(), targets)
        optimisation.step(loss)
        total_loss += float(loss.item()) * len(targets)
        correct += int((logits.argmax(1) == targets).sum().item())
        seen += len(targets)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", acc=f"{correct / seen:.4f}")
    return total_loss / max(seen, 1), correct / max(seen, 1)


def validate(setup: TrainingSetup, val_y: torch.Tensor, loss_fn: nn.Module) -> tuple[float, float]:
    """Validation loss and accuracy."""
    logits = setup.validation_logits()
    loss = float(loss_fn(logits, val_y).item())
    accuracy = float((logits.argmax(1) == val_y).float().mean().item())
    return loss, accuracy


@dataclass
class Progress:
    """How far a run got: the next epoch, early stopping's count and the history."""

    next_epoch: int = 0
    best_acc: float = -1.0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def update(self, val_acc: float) -> bool:
        """Count one epoch's validation accuracy; True when it is the best so far."""
        if val_acc > self.best_acc:
            self.best_acc, self.bad_epochs = val_acc, 0
            return True
        self.bad_epochs += 1
        return False


def save_progress(
    path: Path, model: Detector, optimisation: Optimisation, epoch: int, progress: Progress
) -> None:
    """Everything ``--resume`` needs after ``epoch`` (0-based), the RNG state included."""
    scheduler = optimisation.scheduler
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimisation.optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler else None,
            "epoch": epoch,
            "best_acc": progress.best_acc,
            "bad": progress.bad_epochs,
            "history": progress.history,
            "torch_rng": torch.get_rng_state(),
        },
        path,
    )


def load_progress(path: Path, model: Detector, optimisation: Optimisation) -> Progress:
    """Restore what :func:`save_progress` wrote into ``model`` and ``optimisation``."""
    state = torch.load(path, weights_only=False)
    model.load_state_dict(state["model"])
    optimisation.optimizer.load_state_dict(state["optimizer"])
    if optimisation.scheduler is not None and state.get("scheduler"):
        optimisation.scheduler.load_state_dict(state["scheduler"])
    progress = Progress(state["epoch"] + 1, state["best_acc"], state["bad"], state["history"])
    torch.set_rng_state(state["torch_rng"])
    log.info(
        "resumed after epoch %d (best validation accuracy %.4f)",
        progress.next_epoch,
        progress.best_acc,
    )
    return progress
