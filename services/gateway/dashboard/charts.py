"""Charts as inline SVG, rendered on the server (no JavaScript, no chart library)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from markupsafe import Markup, escape

#: Colour per series name (verdicts and tiers); anything else is grey.
COLOURS = {
    "REAL": "#2f7d4f",
    "FAKE": "#b8322a",
    "mostly real": "#1f6b3f",
    "probably real": "#7dbb8c",
    "probably fake": "#eb9486",
    "mostly fake": "#a8231b",
    "uncertain": "#d9a521",
    "no verdict": "#b9bec7",
    "llm": "#3a5fae",
    "evidence": "#8a6fc2",
    "none": "#b9bec7",
}


def _colour(name: str) -> str:
    return COLOURS.get(name, "#8c939d")


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def bucket_label(start: datetime, unit: str) -> str:
    return start.strftime("%H:00") if unit == "hour" else start.strftime("%m-%d")


def stacked_bars(
    title: str,
    buckets: Sequence[datetime],
    unit: str,
    series: dict[str, list[int]],
    width: int = 1100,
    height: int = 210,
) -> Markup:
    """A stacked bar per time bucket, one colour per series, with a legend and tooltips."""
    left, right, top, bottom = 36, 8, 10, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(buckets))
    totals = [sum(values[i] for values in series.values()) for i in range(n)]
    peak = max([*totals, 1])
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.78)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMidYMid meet" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        # axes and the peak gridline
        f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
        'stroke="#555" stroke-width="1"/>',
        f'<line x1="{left}" y1="{top}" x2="{left + plot_w}" y2="{top}" stroke="#ddd" '
        'stroke-dasharray="3 3"/>',
        f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" class="axis">{peak}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" text-anchor="end" class="axis">0</text>',
    ]
    label_every = max(1, round(n / 12))
    for i, start in enumerate(buckets):
        x = left + i * slot + (slot - bar_w) / 2
        y: float = top + plot_h
        for name, values in series.items():
            count = values[i]
            if not count:
                continue
            h = plot_h * count / peak
            y -= h
            tip = f"{bucket_label(start, unit)} {start:%Y-%m-%d}: {name} {count}"
            parts.append(
                f'<rect x="{_fmt(x)}" y="{_fmt(y)}" width="{_fmt(bar_w)}" height="{_fmt(h)}" '
                f'fill="{_colour(name)}" data-series="{escape(name)}" data-count="{count}">'
                f"<title>{escape(tip)}</title></rect>"
            )
        if i % label_every == 0:
            parts.append(
                f'<text x="{_fmt(left + i * slot + slot / 2)}" y="{top + plot_h + 14}" '
                f'text-anchor="middle" class="axis">{escape(bucket_label(start, unit))}</text>'
            )
    # legend
    x = float(left)
    for name, values in series.items():
        parts.append(
            f'<rect x="{_fmt(x)}" y="{height - 16}" width="10" height="10" '
            f'fill="{_colour(name)}"/>'
            f'<text x="{_fmt(x + 14)}" y="{height - 7}" class="legend">'
            f"{escape(name)} ({sum(values)})</text>"
        )
        x += 14 + 7.2 * (len(name) + len(str(sum(values))) + 3) + 12
    parts.append("</svg>")
    return Markup("".join(parts))


def share_bar(title: str, shares: dict[str, int], width: int = 1100, height: int = 46) -> Markup:
    """One horizontal bar split by share (e.g. explanation source), with percentages."""
    total = sum(shares.values())
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="100%" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>'
    ]
    if total == 0:
        parts.append(
            f'<rect x="0" y="0" width="{width}" height="22" fill="#eef0f3"/>'
            f'<text x="8" y="15" class="legend">no explanations in this window</text>'
        )
    x = 0.0
    for name, count in shares.items():
        if not count:
            continue
        w = width * count / total
        parts.append(
            f'<rect x="{_fmt(x)}" y="0" width="{_fmt(w)}" height="22" fill="{_colour(name)}" '
            f'data-series="{escape(name)}" data-count="{count}">'
            f"<title>{escape(name)}: {count} ({100 * count / total:.0f}%)</title></rect>"
        )
        x += w
    x = 0.0
    for name, count in shares.items():
        pct = f"{100 * count / total:.0f}%" if total else "–"
        parts.append(
            f'<rect x="{_fmt(x)}" y="{height - 16}" width="10" height="10" '
            f'fill="{_colour(name)}"/><text x="{_fmt(x + 14)}" y="{height - 7}" '
            f'class="legend">{escape(name)}: {count} ({pct})</text>'
        )
        x += 14 + 7.2 * (len(name) + len(str(count)) + len(pct) + 6) + 16
    parts.append("</svg>")
    return Markup("".join(parts))
