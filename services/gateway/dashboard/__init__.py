"""The moderators' dashboard: sessions, queries, charts and templating.

Routes live in ``services.gateway.routes.dashboard``; templates and static files in
``services/gateway/templates`` and ``services/gateway/static``.
"""

from __future__ import annotations

from pathlib import Path

GATEWAY_DIR = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = GATEWAY_DIR / "templates"
STATIC_DIR = GATEWAY_DIR / "static"
STATIC_PATH = "/dashboard/static"
