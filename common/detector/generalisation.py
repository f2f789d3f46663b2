"""`aigi generalisation`: does the detector work beyond the data it was trained on?

One JSON and one Markdown table, written beside the weights (the model card links them):

* **CIFAKE validation**: the stratified 20 % split `aigi train` holds out (seed 0);
* **wild-dev**: overall and per category (people, city, nature, interior) — an
  evaluation set only, never used to train or choose;
* **leave-one-source-out**: for each generator group of wild-train
  (:data:`~common.detector.wild_data.FAKE_GROUPS`) a model trained without the group
  (``aigi train-wild --exclude-group G``, one folder per group under ``--loso-runs``)
  scored on all of that group's images against the real photos of the validation split,
  which no fold trained on; optionally again after a :data:`STRESS` shift of both sides
  (``--loso-shift web_pipeline``: does an unseen generator survive a web upload pipeline?);
* **content-only baseline** (``--content-baseline``): the same folds scored by a probe on
  frozen ImageNet features, which sees only what the pictures show, and each fold's
  content-matched ROC-AUC (:mod:`common.detector.content_baseline`);
* **stress**: the shipped model on the wild-train validation split under JPEG, blur,
  resizing and cropping, as a platform's pipeline would alter an upload.

Every score goes through :class:`~common.detector.inference.DetectorEngine`, the path
the classify worker uses (native crops, calibrated temperature).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from common.detector.checkpoint import load_checkpoint
from common.detector.content_baseline import (
    ProbeScores,
    content_matched_auc,
    content_probe_scores,
    content_table,
)
from common.detector.dataset import scan, stratified_split
from common.detector.inference import DetectorEngine
from common.detector.metrics import classification_metrics
from common.detector.wild_data import FAKE_GROUPS, read_manifest, split_by_group
from common.images import decode_rgb

log = logging.getLogger(__name__)
Transform = Callable[[Image.Image], Image.Image]


def jpeg_recompress(quality: int) -> Transform:
    def apply(image: Image.Image) -> Image.Image:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")

    return apply


def rescale(factor: float) -> Transform:
    def apply(image: Image.Image) -> Image.Image:
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        return image.resize(size, Image.Resampling.BICUBIC)

    return apply


def _centre_crop(fraction: float) -> Transform:
    def apply(image: Image.Image) -> Image.Image:
        w, h = image.size
        cw, ch = max(1, round(w * fraction)), max(1, round(h * fraction))
        left, top = (w - cw) // 2, (h - ch) // 2
        return image.crop((left, top, left + cw, top + ch))

    return apply


def _chain(*steps: Transform) -> Transform:
    def apply(image: Image.Image) -> Image.Image:
        for step in steps:
            image = step(image)
        return image

    return apply


#: What a platform's pipeline does to an upload before it reaches us.
STRESS: dict[str, Transform] = {
    "none": lambda image: image,
    "jpeg_q90": jpeg_recompress(90),
    "jpeg_q75": jpeg_recompress(75),
    "jpeg_q50": jpeg_recompress(50),
    "blur_sigma1": lambda image: image.filter(ImageFilter.GaussianBlur(1.0)),
    "downscale_0.5": rescale(0.5),
    "upscale_2x_bicubic": rescale(2.0),
    "crop_50pct": _centre_crop(0.5),
    "grayscale": lambda image: image.convert("L").convert("RGB"),
    # A site that shrinks uploads and re-encodes them, then a re-save at high quality.
    "web_pipeline": _chain(rescale(0.5), jpeg_recompress(80), jpeg_recompress(95)),
}


def _load(paths: Sequence[Path]) -> list[Image.Image]:
    return [decode_rgb(Path(p).read_bytes()) for p in paths]


def score(engine: DetectorEngine, images: Sequence[Image.Image]) -> tuple[np.ndarray, list[str]]:
    """Calibrated p(FAKE) and the tier per image, through the worker's own path."""
    predictions = engine.predict(list(images))
    return np.array([p.probability for p in predictions], dtype=np.float64), [
        p.tier for p in predictions
    ]


def summary(
    labels: np.ndarray, probs: np.ndarray, tiers: Sequence[str] | None = None
) -> dict[str, Any]:
    """Accuracy, ROC-AUC, ECE, error rates; with the verdicts' ``tiers`` (engine
    predictions' ``.tier``) also coverage, selective accuracy and confidently wrong."""
    metrics = classification_metrics(labels, probs)
    predicted = probs >= 0.5
    out: dict[str, Any] = {
        "n": len(labels),
        "accuracy": round(float(metrics["accuracy"]), 4),
        "roc_auc": None if metrics["roc_auc"] is None else round(float(metrics["roc_auc"]), 4),
        "ece": round(float(metrics["ece"]), 4),
    }
    if (labels == 0).any():
        out["real_called_fake"] = round(float(predicted[labels == 0].mean()), 4)
    if (labels == 1).any():
        out["fake_called_real"] = round(float((~predicted[labels == 1]).mean()), 4)
    if tiers is not None:
        from common.detector.metrics import selective_metrics

        selective = selective_metrics(labels, probs, tiers)
        for key in ("coverage", "selective_accuracy", "confidently_wrong"):
            out[key] = round(selective[key], 4)
    return out


def cifake_validation(
    engine: DetectorEngine, root: Path, limit: int, seed: int = 0
) -> dict[str, Any]:
    _, val = stratified_split(scan(root), 0.2, seed=0)
    rng = np.random.default_rng(seed)
    chosen = [val[i] for i in sorted(rng.permutation(len(val))[:limit])]
    labels = np.array([s.label for s in chosen])
    return summary(labels, *score(engine, _load([s.path for s in chosen])))


def wild_dev(engine: DetectorEngine, root: Path) -> dict[str, Any]:
    samples = read_manifest(root)
    labels = np.array([s.label for s in samples])
    probs, tiers = score(engine, _load([s.path for s in samples]))
    result: dict[str, Any] = {"overall": summary(labels, probs, tiers), "per_category": {}}
    for category in sorted({s.category for s in samples}):
        mask = np.array([s.category == category for s in samples])
        in_category = [t for t, keep in zip(tiers, mask, strict=True) if keep]
        result["per_category"][category] = summary(labels[mask], probs[mask], in_category)
    return result


def leave_one_source_out(
    runs: Path,
    wild_train: Path,
    val_fraction: float = 0.15,
    seed: int = 0,
    shift: str = "none",
    content: dict[str, ProbeScores] | None = None,
) -> dict[str, Any]:
    """Each fold's model on its held-out group against the validation split's photos,
    both sides first put through ``STRESS[shift]``; with the content probe's scores
    (``content``) also the content-matched ROC-AUC."""
    transform = STRESS[shift]
    samples = read_manifest(wild_train)
    _, val = split_by_group(samples, val_fraction, seed)
    reals = [s for s in val if s.label == 0]
    real_images = [transform(image) for image in _load([s.path for s in reals])]
    rows: dict[str, Any] = {}
    for group in FAKE_GROUPS:
        folder = Path(runs) / group
        if not (folder / "config.json").is_file():
            rows[group] = {"status": f"not trained: aigi train-wild --exclude-group {group}"}
            continue
        engine = DetectorEngine(load_checkpoint(folder))
        fakes = [s for s in samples if s.group == group]
        real_probs, real_tiers = score(engine, real_images)
        fake_images = [transform(image) for image in _load([s.path for s in fakes])]
        fake_probs, fake_tiers = score(engine, fake_images)
        labels = np.array([0] * len(reals) + [1] * len(fakes))
        probs = np.concatenate([real_probs, fake_probs])
        rows[group] = summary(labels, probs, real_tiers + fake_tiers)
        if content is not None and group in content:
            fold = content[group]
            by_path = dict(zip([s.path for s in reals + fakes], probs.tolist(), strict=True))
            rows[group]["content_matched_roc_auc"] = content_matched_auc(
                fold.labels, [by_path[path] for path in fold.paths], fold.probe
            )
        rows[group]["held_out_images"] = len(fakes)
        rows[group]["training_steps"] = engine.config.training.get("steps")
        log.info("leave-one-source-out %s (%s): %s", group, shift, rows[group])
    aucs = [r["roc_auc"] for r in rows.values() if r.get("roc_auc") is not None]
    return {
        "groups": rows,
        "mean_roc_auc": round(float(np.mean(aucs)), 4) if aucs else None,
        "test_reals": len(reals),
        "shift": shift,
    }


def stress(
    engine: DetectorEngine, wild_train: Path, val_fraction: float = 0.15, seed: int = 0
) -> dict[str, Any]:
    _, val = split_by_group(read_manifest(wild_train), val_fraction, seed)
    images = _load([s.path for s in val])
    labels = np.array([s.label for s in val])
    return {
        name: summary(labels, *score(engine, [t(im) for im in images]))
        for name, t in STRESS.items()
    }


def to_markdown(report: dict[str, Any]) -> str:
    def row(name: str, m: dict[str, Any]) -> str:
        if "status" in m:
            return f"| {name} | — | — | — | {m['status']} |"
        notes = f"ECE {m['ece']:.3f}"
        if "coverage" in m:
            notes += (
                f"; coverage {m['coverage']:.3f}, selective accuracy "
                f"{m['selective_accuracy']:.3f}, confidently wrong {m['confidently_wrong']:.3f}"
            )
        if m.get("content_matched_roc_auc") is not None:
            notes += f"; content-matched ROC-AUC {m['content_matched_roc_auc']:.3f}"
        if "held_out_images" in m:
            notes += f"; {m['held_out_images']} held-out images, {m['training_steps']} steps"
        return (
            f"| {name} | {m['n']} | {m['accuracy']:.3f} | "
            f"{'—' if m['roc_auc'] is None else format(m['roc_auc'], '.3f')} | {notes} |"
        )

    lines = [f"# Generalisation report: `{report['model_id']}`", ""]
    head = ["| set | n | accuracy | ROC-AUC | notes |", "|---|---|---|---|---|"]
    if "cifake_validation" in report:
        lines += [
            "## CIFAKE validation",
            "",
            *head,
            row("CIFAKE val", report["cifake_validation"]),
            "",
        ]
    if "wild_dev" in report:
        dev = report["wild_dev"]
        lines += ["## wild-dev (evaluation only)", "", *head, row("overall", dev["overall"])]
        lines += [row(k, v) for k, v in dev["per_category"].items()] + [""]
    for key in ("leave_one_source_out", "leave_one_source_out_shifted"):
        if key not in report:
            continue
        loso = report[key]
        shift = loso.get("shift", "none")
        after = f", both sides after `{shift}`" if shift != "none" else ""
        lines += [
            "## Leave one source out" + after,
            "",
            f"Held-out group's images vs {loso['test_reals']} validation photos; mean ROC-AUC "
            f"{loso['mean_roc_auc']}.",
            "",
            *head,
        ]
        lines += [row(k, v) for k, v in loso["groups"].items()] + [""]
    if "content_baseline" in report:
        base = report["content_baseline"]
        lines += [
            "## Content-only baseline on the same folds",
            "",
            f"{base['features']}: what the pictures show, nothing of how they were made; "
            f"mean ROC-AUC {base['mean_roc_auc']}. Read each fold above against it.",
            "",
            "| held-out group | n | ROC-AUC |",
            "|---|---|---|",
        ]
        for group, m in base["groups"].items():
            auc = m.get("roc_auc")
            lines.append(
                f"| {group} | {m.get('n', '—')} | {'—' if auc is None else format(auc, '.3f')} |"
            )
        lines.append("")
    if "stress" in report:
        lines += ["## Stress (wild-train validation split)", "", *head]
        lines += [row(k, v) for k, v in report["stress"].items()] + [""]
    return "\n".join(lines)


def generalisation_report(
    model: Path,
    out: Path,
    cifake: Path | None = None,
    wild_dev_root: Path | None = None,
    wild_train: Path | None = None,
    loso_runs: Path | None = None,
    cifake_limit: int = 4000,
    loso_shift: str | None = None,
    content_baseline: bool = False,
) -> dict[str, Any]:
    """Measure what the inputs allow; write ``generalisation.json`` and ``.md`` to ``out``."""
    engine = DetectorEngine(load_checkpoint(model))
    report: dict[str, Any] = {"model_id": engine.model_id}
    if cifake is not None:
        report["cifake_validation"] = cifake_validation(engine, cifake, cifake_limit)
    if wild_dev_root is not None:
        report["wild_dev"] = wild_dev(engine, wild_dev_root)
    if wild_train is not None:
        training = engine.config.training
        # The wild-train validation split of the train-wild recipe (15 %), for every model.
        wild_recipe = training.get("recipe") == "train-wild"
        val_fraction = float(training.get("val_fraction", 0.15)) if wild_recipe else 0.15
        report["stress"] = stress(engine, wild_train, val_fraction)
        content = None
        if content_baseline:
            content = content_probe_scores(wild_train, val_fraction)
            report["content_baseline"] = content_table(content)
        if loso_runs is not None:
            report["leave_one_source_out"] = leave_one_source_out(
                loso_runs, wild_train, val_fraction, content=content
            )
            if loso_shift not in (None, "none"):
                report["leave_one_source_out_shifted"] = leave_one_source_out(
                    loso_runs, wild_train, val_fraction, shift=loso_shift, content=content
                )
    out.mkdir(parents=True, exist_ok=True)
    (out / "generalisation.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "generalisation.md").write_text(to_markdown(report) + "\n")
    return report
