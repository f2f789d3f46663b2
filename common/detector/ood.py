"""Out-of-distribution scores from the detector's own pooled features.

The classifier gives a label to anything; this module says when an image lies outside
what it was trained on, so that the verdict can be ``uncertain`` instead of a confident
tier about random noise. Two scores are stored per checkpoint (``aigi fit-ood`` measures
both and keeps the better, see docs/trust.md):

* ``mahalanobis`` (Lee et al., NeurIPS 2018): distance to the nearer class mean under a
  covariance shared by both classes. The pooled features of EfficientNet-Lite have 1280
  dimensions, more than the few thousand fitting images pin down, so the covariance is
  a probabilistic PCA (Tipping & Bishop): the top ``k`` eigen-directions exactly, the
  rest as one isotropic residual variance. That is also what keeps the file small.
* ``knn`` (Sun et al., ICML 2022): cosine distance to the k-th nearest neighbour in a
  bank of L2-normalised training features.

Either score reads one of two feature sets (``OodConfig.features``):

* ``pooled``: the globally pooled features the head reads;
* ``early``: per channel, the spatial mean and standard deviation of the outputs of two
  early stages (EfficientNet ``blocks[1]``/``blocks[2]``, compact ``stages[0]``/
  ``stages[1]``): the image statistics (texture, contrast, flatness) the network sees
  before it abstracts them away. On the EfficientNet-Lite0 wild model, pooled features
  put noise, solid colours and text screenshots *closer* to the training images than
  held-out photographs are, while the early statistics separate them almost perfectly
  (the AUROCs are in docs/trust.md).

Higher means further out. The threshold is the ``pass_rate`` quantile of the
in-distribution validation scores; the public ``ood_score`` is raw / threshold.
The statistics file records the sha256 of the weights it was fitted on: statistics of
other weights are ignored (with a warning), never applied.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from common.detector.config import DetectorConfig, OodConfig
from common.detector.model import CheckpointError, Detector

log = logging.getLogger(__name__)
KNN_K = 5
MAX_COMPONENTS = 256


def early_layers(model: Detector) -> list[nn.Module]:
    """The two early stages whose statistics make the ``early`` features."""
    backbone = model.backbone
    blocks = getattr(getattr(backbone, "model", None), "blocks", None)
    if isinstance(blocks, nn.Sequential) and len(blocks) > 2:
        return [blocks[1], blocks[2]]
    stages = getattr(backbone, "stages", None)
    if isinstance(stages, nn.ModuleList) and len(stages) >= 2:
        return [stages[0], stages[1]]
    raise CheckpointError(
        f"'early' OOD features need a compact or EfficientNet backbone, not "
        f"{model.config.backbone.kind}; fit with pooled features"
    )


class EarlyTap:
    """Records the early stages' outputs on every forward pass of ``model`` (per thread,
    so that two threads sharing one engine never read each other's maps)."""

    def __init__(self, model: Detector) -> None:
        self._local = threading.local()
        self.handles = [
            layer.register_forward_hook(self._hook(i))
            for i, layer in enumerate(early_layers(model))
        ]

    def _hook(self, index: int) -> Callable[..., None]:
        def record(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            self.maps[index] = output.detach()

        return record

    @property
    def maps(self) -> dict[int, torch.Tensor]:
        maps: dict[int, torch.Tensor] = self._local.__dict__.setdefault("maps", {})
        return maps

    def features(self) -> torch.Tensor:
        """N × (2 · channels): per stage, the spatial mean then the spatial std."""
        parts = []
        for index in sorted(self.maps):
            flat = self.maps[index].float().flatten(2)
            parts += [flat.mean(dim=2), flat.std(dim=2, correction=0)]
        return torch.cat(parts, dim=1).cpu()

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


@dataclass(frozen=True)
class OodStats:
    config: OodConfig
    tensors: dict[str, torch.Tensor]

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def features(self) -> str:
        return self.config.features

    def raw_scores(self, features: torch.Tensor) -> torch.Tensor:
        """One raw score per feature row (higher = further out)."""
        if self.method == "mahalanobis":
            return mahalanobis_scores(self.tensors, features)
        return knn_scores(self.tensors, features)

    def image_score(self, crop_features: torch.Tensor) -> float:
        """One image's ``ood_score`` from its crops' (or its thumbnail's) features."""
        if self.config.aggregation == "mean-feature" or len(crop_features) == 1:
            raw = self.raw_scores(crop_features.mean(dim=0, keepdim=True))[0]
        else:
            raw = self.raw_scores(crop_features).mean()
        return float(raw) / self.config.threshold


def fit_mahalanobis(
    features: torch.Tensor, labels: torch.Tensor, components: int = MAX_COMPONENTS
) -> dict[str, torch.Tensor]:
    """Class means and the shared covariance's top eigenpairs + residual variance."""
    x = features.double()
    means = torch.stack([x[labels == c].mean(dim=0) for c in (0, 1)])
    centred = x - means[labels.long()]
    cov = centred.T @ centred / max(1, len(x) - 2)
    eigvals, eigvecs = torch.linalg.eigh(cov)
    eigvals, eigvecs = eigvals.flip(0).clamp_min(0), eigvecs.flip(1)
    floor = float(eigvals[0]) * 1e-6 + 1e-12
    k = min(components, x.shape[1], max(1, len(x) - 2))
    rest = eigvals[k:]
    residual = float(rest.mean()) if len(rest) else floor
    return {
        "means": means.float(),
        "components": eigvecs[:, :k].T.contiguous().float(),
        "eigenvalues": eigvals[:k].clamp_min(floor).float(),
        "residual_variance": torch.tensor([max(residual, floor)], dtype=torch.float32),
    }


def mahalanobis_scores(tensors: dict[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    x = features.float()
    comps, eig = tensors["components"], tensors["eigenvalues"]
    residual_var = tensors["residual_variance"][0]
    best = None
    for mean in tensors["means"]:
        d = x - mean
        proj = d @ comps.T
        score = (proj.square() / eig).sum(dim=1)
        if comps.shape[0] < x.shape[1]:  # all directions kept: no residual to add
            rest = (d.square().sum(dim=1) - proj.square().sum(dim=1)).clamp_min(0)
            score = score + rest / residual_var
        best = score if best is None else torch.minimum(best, score)
    assert best is not None
    return best / x.shape[1]


def fit_knn(
    features: torch.Tensor, bank_size: int = 1024, seed: int = 0
) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(len(features), generator=g)[:bank_size]
    bank = torch.nn.functional.normalize(features[chosen].float(), dim=1)
    return {"bank": bank.contiguous()}


def knn_scores(
    tensors: dict[str, torch.Tensor], features: torch.Tensor, k: int = KNN_K
) -> torch.Tensor:
    bank = tensors["bank"]
    x = torch.nn.functional.normalize(features.float(), dim=1)
    distances = 1.0 - x @ bank.T
    k = min(k, bank.shape[0])
    return distances.topk(k, dim=1, largest=False).values[:, -1]


def weights_digest(folder: Path) -> str:
    from common.detector.checkpoint import WEIGHTS_FILE

    return hashlib.sha256((Path(folder) / WEIGHTS_FILE).read_bytes()).hexdigest()


def save_ood(folder: Path, config: OodConfig, tensors: dict[str, torch.Tensor]) -> Path:
    path = Path(folder) / config.file
    tmp = path.with_name(f".{path.name}.tmp")
    metadata = {
        "method": config.method,
        "features": config.features,
        "weights_sha256": weights_digest(folder),
    }
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    tmp.replace(path)
    return path


def load_ood(folder: Path, config: DetectorConfig) -> OodStats | None:
    """The checkpoint's OOD statistics; None when it has none (or they are stale)."""
    if config.ood is None:
        return None
    path = Path(folder) / config.ood.file
    if not path.is_file():
        raise CheckpointError(
            f"{folder}/config.json names OOD statistics {config.ood.file}, which are missing: "
            "run `aigi fit-ood --model FOLDER` again, or drop the 'ood' field from config.json"
        )
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path} is unreadable or truncated: {exc}") from exc
    if metadata.get("weights_sha256") != weights_digest(folder):
        log.warning(
            "OOD statistics in %s were fitted on other weights; ignoring them (tiers from the "
            "probability alone). Run `aigi fit-ood --model %s` to refit.",
            path,
            folder,
        )
        return None
    return OodStats(config.ood, tensors)


def attach(model: Detector, stats: OodStats | None) -> None:
    """Keep ``stats`` with the model, outside its state dict (never saved as weights)."""
    model.__dict__["ood_stats"] = stats


def stats_of(model: Detector) -> OodStats | None:
    stats = model.__dict__.get("ood_stats")
    return stats if isinstance(stats, OodStats) else None
