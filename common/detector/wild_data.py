"""The wild-train manifest: sources, the leave-one-source-out groups, balanced sampling.

``wild-train/manifest.csv`` names the source repository and generator of every image.
Generators are pooled into *groups* of one family (GAN faces, the DALL-E family, …):
a group is what the leave-one-source-out table holds out, and sampling weights are
per group, so no single source (973 ImageNet samples, 369 DALL-E mini pictures)
decides what the detector learns.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.detector.config import LABELS
from common.detector.dataset import DatasetError

#: FAKE generator families held out one at a time (substring match on the generator).
FAKE_GROUPS: dict[str, tuple[str, ...]] = {
    "gan-faces": ("StyleGAN",),
    "dall-e": ("DALL-E",),
    "latent-diffusion-2022": ("Latent Diffusion", "GLID-3", "Majesty"),
    "clip-guided": ("Disco Diffusion", "Simulacra", "pixray"),
    "stable-diffusion-1-2-xl": (
        "Stable Diffusion (v1",
        "Stable Diffusion 1.x",
        "SD 2.1",
        "SDXL",
        "LCM",
    ),
    "midjourney-2022": ("Midjourney",),
    "modern-2024-25": (
        "FLUX",
        "Stable Diffusion 3",
        "Stable Cascade",
        "GPT-4o",
        "AuraFlow",
        "Chroma",
        "HiDream",
        "Qwen-Image",
        "Z-Image",
        "Lumina",
        "OmniGen",
        "Hunyuan",
        "Cosmos",
    ),
}
UNGROUPED_FAKE = "other-fake"


@dataclass(frozen=True)
class WildSample:
    path: Path
    label: int
    source: str
    generator: str
    group: str
    category: str


def group_of(label: int, generator: str, source: str) -> str:
    if label == 0:
        return f"real:{source}"
    for group, needles in FAKE_GROUPS.items():
        if any(needle in generator for needle in needles):
            return group
    return UNGROUPED_FAKE


def read_manifest(root: Path) -> list[WildSample]:
    """Every image listed in ``root/manifest.csv`` that exists under ``root``."""
    path = Path(root) / "manifest.csv"
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing: extract wild-train.tar.gz/wild-dev.tar.gz from "
            "../shared/data (each holds REAL/, FAKE/ and manifest.csv)"
        )
    samples = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            label = LABELS.index(row["label"])
            file = Path(root) / row["label"] / row["file"]
            if not file.is_file():
                raise DatasetError(
                    f"{file} is listed in {path} but missing; re-extract the archive"
                )
            samples.append(
                WildSample(
                    file,
                    label,
                    row["source_repo"],
                    row["generator"],
                    group_of(label, row["generator"], row["source_repo"]),
                    row.get("category", ""),
                )
            )
    return samples


def split_by_group(
    samples: list[WildSample], val_fraction: float, seed: int
) -> tuple[list[WildSample], list[WildSample]]:
    """A validation split stratified by (label, group): every family in both sides."""
    rng = np.random.default_rng(seed)
    train: list[WildSample] = []
    val: list[WildSample] = []
    keys = sorted({(s.label, s.group) for s in samples})
    for key in keys:
        members = [s for s in samples if (s.label, s.group) == key]
        order = rng.permutation(len(members))
        n_val = round(len(members) * val_fraction)
        val.extend(members[i] for i in order[:n_val])
        train.extend(members[i] for i in order[n_val:])
    return train, val


def balanced_weights(samples: list[WildSample]) -> np.ndarray:
    """Sampling weights: classes equal; inside a class each group ∝ sqrt(its size).

    Fully equal groups would show the 2 AuraFlow pictures as often as 369 DALL-E mini
    ones; the square root keeps big families from dominating without repeating the
    tiny ones hundreds of times.
    """
    counts = Counter((s.label, s.group) for s in samples)
    raw = np.array([1.0 / np.sqrt(counts[(s.label, s.group)]) for s in samples])
    for label in (0, 1):
        mask = np.array([s.label == label for s in samples])
        if mask.any():
            raw[mask] /= raw[mask].sum()
    return raw / raw.sum()
