"""the fifth tier, ``uncertain``: OOD score and reason per verdict

``jobs.ood_score`` (the classifier's out-of-distribution score, raw / threshold: above
1 is outside the training distribution; NULL for a checkpoint without OOD statistics)
and ``jobs.verdict_reason`` (why the tier is ``uncertain``). ``jobs.tier`` is a free
VARCHAR(20), so ``uncertain`` needs no constraint change. The reporting views are
dropped and re-created: ``v_jobs`` gains both columns after ``tier``,
``v_daily_verdicts`` gains ``uncertain`` after ``mostly_fake`` (see
docs/reporting-views.md).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 14:30:00.000000
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

VIEWS = ("v_daily_verdicts", "v_stage_latency", "v_jobs")


def _views_0002() -> ModuleType:
    """Revision 0002's view definitions (a migration file never changes once released)."""
    path = Path(__file__).with_name("0002_reporting_views.py")
    spec = importlib.util.spec_from_file_location("_aigi_views_0002", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _uncertain_views(base: ModuleType) -> tuple[str, str]:
    v_jobs = base.V_JOBS.replace(
        "    j.tier,\n", "    j.tier,\n    j.verdict_reason,\n    j.ood_score,\n", 1
    )
    mostly_fake = "count(*) FILTER (WHERE j.tier = 'mostly fake') AS mostly_fake"
    daily = base.V_DAILY_VERDICTS.replace(
        mostly_fake,
        f"{mostly_fake},\n    count(*) FILTER (WHERE j.tier = 'uncertain') AS uncertain",
        1,
    )
    if v_jobs == base.V_JOBS or daily == base.V_DAILY_VERDICTS:
        raise RuntimeError("revision 0002's view SQL changed; 0004 cannot extend it")
    return v_jobs, daily


def _create(v_jobs: str, v_stage_latency: str, v_daily: str, comments: dict[str, str]) -> None:
    op.execute(v_jobs)
    op.execute(v_stage_latency)
    op.execute(v_daily)
    for view, comment in comments.items():
        op.execute(f"COMMENT ON VIEW {view} IS '{comment}'")


def upgrade() -> None:
    base = _views_0002()
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.add_column("jobs", sa.Column("ood_score", sa.Float(), nullable=True))
    op.add_column("jobs", sa.Column("verdict_reason", sa.String(length=60), nullable=True))
    v_jobs, daily = _uncertain_views(base)
    _create(v_jobs, base.V_STAGE_LATENCY, daily, base.COMMENTS)


def downgrade() -> None:
    base = _views_0002()
    for view in VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.drop_column("jobs", "verdict_reason")
    op.drop_column("jobs", "ood_score")
    _create(base.V_JOBS, base.V_STAGE_LATENCY, base.V_DAILY_VERDICTS, base.COMMENTS)
