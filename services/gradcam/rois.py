"""Regions of interest: connected hot regions of the heatmap, ranked by share of heat."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


def position_in_words(cx: float, cy: float) -> str:
    """Where a point (normalised 0..1) sits, in a 3x3 grid: 'upper left' ... 'centre'."""
    row = "upper" if cy < 1 / 3 else ("lower" if cy > 2 / 3 else "middle")
    col = "left" if cx < 1 / 3 else ("right" if cx > 2 / 3 else "centre")
    if row == "middle" and col == "centre":
        return "centre"
    if row == "middle":
        return f"middle {col}"
    if col == "centre":
        return f"{row} centre"
    return f"{row} {col}"


@dataclass(frozen=True)
class Region:
    rank: int
    x0: int
    y0: int
    x1: int
    y1: int
    area: int
    heat_share: float
    peak: float
    mean_heat: float
    position: str

    def as_dict(self, width: int, height: int, scale_x: float, scale_y: float) -> dict[str, object]:
        """Box in original-image pixels (exclusive x1/y1) and normalised to 0..1."""
        box = [
            round(self.x0 * scale_x),
            round(self.y0 * scale_y),
            round(self.x1 * scale_x),
            round(self.y1 * scale_y),
        ]
        return {
            "rank": self.rank,
            "box": box,
            "box_normalized": [
                round(self.x0 / width, 4),
                round(self.y0 / height, 4),
                round(self.x1 / width, 4),
                round(self.y1 / height, 4),
            ],
            "area_fraction": round(self.area / (width * height), 4),
            "heat_share": round(self.heat_share, 4),
            "peak": round(self.peak, 4),
            "mean_heat": round(self.mean_heat, 4),
            "position": self.position,
        }


def extract_regions(heatmap: np.ndarray, threshold: float = 0.5, top_k: int = 5) -> list[Region]:
    """Connected regions (8-connectivity) of ``heatmap >= threshold``, top ``top_k``."""
    heat = np.clip(np.asarray(heatmap, dtype=np.float32), 0.0, None)
    total = float(heat.sum())
    if total <= 0:
        return []
    mask = (heat >= threshold * float(heat.max())).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    height, width = heat.shape
    regions = []
    for index in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[index])
        inside = labels == index
        values = heat[inside]
        share = float(values.sum()) / total
        ys, xs = np.nonzero(inside)
        weights = values / max(float(values.sum()), 1e-12)
        cx = float((xs * weights).sum() + 0.5) / width
        cy = float((ys * weights).sum() + 0.5) / height
        regions.append(
            (
                share,
                x,
                y,
                w,
                h,
                area,
                float(values.max()),
                float(values.mean()),
                position_in_words(cx, cy),
            )
        )
    regions.sort(key=lambda r: -r[0])
    return [
        Region(
            rank=i + 1,
            x0=x,
            y0=y,
            x1=x + w,
            y1=y + h,
            area=area,
            heat_share=share,
            peak=peak,
            mean_heat=mean,
            position=pos,
        )
        for i, (share, x, y, w, h, area, peak, mean, pos) in enumerate(regions[:top_k])
    ]
