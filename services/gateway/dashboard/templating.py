"""The Jinja2 environment of the dashboard, with its formatting filters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.templating import Jinja2Templates

from services.gateway.dashboard import STATIC_PATH, TEMPLATES_DIR


def fmt_time(value: datetime | None) -> str:
    if value is None:
        return "–"
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S") + " UTC"


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    if value >= 100:
        return f"{value:.0f} ms"
    return f"{value:.1f} ms"


def fmt_prob(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def fmt_num(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_share(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def percent(part: int, whole: int) -> str:
    return "–" if not whole else f"{100 * part / whole:.0f}%"


templates = Jinja2Templates(directory=TEMPLATES_DIR)
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True
templates.env.filters.update(
    {"time": fmt_time, "ms": fmt_ms, "prob": fmt_prob, "num": fmt_num, "share": fmt_share}
)
templates.env.globals.update({"static": STATIC_PATH, "percent": percent})
