"""reporting views for BI tools (Grafana, Metabase)

Read-only SQL views over the job tables, documented in docs/reporting-views.md:
``v_jobs`` (one row per job), ``v_stage_latency`` (per stage and hour),
``v_daily_verdicts`` (per tenant and day). All times are UTC.

A later migration that changes a column these views read must drop and re-create
them (Postgres refuses ``ALTER COLUMN ... TYPE`` on a column a view uses).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 09:00:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: Pipeline stages in chain order (common.queues.STAGES when this revision was written).
STAGES = ("classify", "gradcam", "explain", "notify")
TIERS = ("mostly real", "probably real", "probably fake", "mostly fake")


def _last_duration(stage: str) -> str:
    """The duration of the stage's latest finished run (a retried stage has several)."""
    return (
        f"(array_agg(s.duration_ms ORDER BY s.id DESC) "
        f"FILTER (WHERE s.stage = '{stage}' AND s.status <> 'running'))[1] AS {stage}_ms"
    )


_STAGE_DURATIONS = ",\n        ".join(_last_duration(stage) for stage in STAGES)

V_JOBS = f"""
CREATE VIEW v_jobs AS
SELECT
    j.id AS job_id,
    j.tenant_id,
    t.name AS tenant_name,
    j.status,
    j.created_at,
    j.classified_at,
    j.finished_at,
    j.model_id,
    j.label,
    CASE j.label WHEN 0 THEN 'REAL' WHEN 1 THEN 'FAKE' END AS label_name,
    j.probability,
    j.tier,
    j.cached_from IS NOT NULL AS cached,
    j.explain AS explain_requested,
    j.image_sha256,
    i.format AS image_format,
    i.width AS image_width,
    i.height AS image_height,
    i.size_bytes AS image_bytes,
    j.gradcam_status,
    CASE WHEN jsonb_typeof(j.rois -> 'rois') = 'array'
         THEN jsonb_array_length(j.rois -> 'rois') ELSE 0 END AS roi_count,
    j.explain_status,
    j.explanation_source,
    j.error,
    (EXTRACT(EPOCH FROM j.classified_at - j.created_at) * 1000)::double precision
        AS time_to_verdict_ms,
    (EXTRACT(EPOCH FROM j.finished_at - j.created_at) * 1000)::double precision AS total_ms,
    {", ".join(f"st.{stage}_ms" for stage in STAGES)},
    COALESCE(st.stage_runs, 0) AS stage_runs,
    COALESCE(st.failed_stage_runs, 0) AS failed_stage_runs,
    COALESCE(r.decision, 'unreviewed') AS review_state,
    r.decision AS review_decision,
    r.reviewer,
    r.note AS review_note,
    r.updated_at AS reviewed_at,
    CASE r.decision WHEN 'confirmed' THEN j.label WHEN 'overturned' THEN 1 - j.label END
        AS true_label
FROM jobs j
JOIN tenants t ON t.id = j.tenant_id
JOIN images i ON i.sha256 = j.image_sha256
LEFT JOIN reviews r ON r.job_id = j.id
LEFT JOIN LATERAL (
    SELECT
        {_STAGE_DURATIONS},
        count(*) AS stage_runs,
        count(*) FILTER (WHERE s.status = 'failed') AS failed_stage_runs
    FROM job_stages s
    WHERE s.job_id = j.id
) st ON true
"""

V_STAGE_LATENCY = """
CREATE VIEW v_stage_latency AS
SELECT
    date_trunc('hour', s.started_at, 'UTC') AS hour,
    s.stage,
    count(*) AS runs,
    count(*) FILTER (WHERE s.status = 'failed') AS failures,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY s.duration_ms) AS p50_ms,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY s.duration_ms) AS p90_ms,
    percentile_cont(0.95) WITHIN GROUP (ORDER BY s.duration_ms) AS p95_ms,
    percentile_cont(0.99) WITHIN GROUP (ORDER BY s.duration_ms) AS p99_ms,
    avg(s.duration_ms) AS mean_ms,
    max(s.duration_ms) AS max_ms
FROM job_stages s
WHERE s.status <> 'running'
GROUP BY 1, 2
"""

_TIER_COUNTS = ",\n    ".join(
    f"count(*) FILTER (WHERE j.tier = '{tier}') AS {tier.replace(' ', '_')}" for tier in TIERS
)

V_DAILY_VERDICTS = f"""
CREATE VIEW v_daily_verdicts AS
SELECT
    (j.created_at AT TIME ZONE 'UTC')::date AS day,
    j.tenant_id,
    t.name AS tenant_name,
    count(*) AS jobs,
    count(*) FILTER (WHERE j.label = 0) AS real_jobs,
    count(*) FILTER (WHERE j.label = 1) AS fake_jobs,
    count(*) FILTER (WHERE j.label IS NULL) AS no_verdict_jobs,
    {_TIER_COUNTS},
    count(*) FILTER (WHERE j.status = 'failed') AS failed_jobs,
    count(*) FILTER (WHERE j.cached_from IS NOT NULL) AS cached_jobs,
    avg(j.probability) AS mean_probability,
    count(r.id) AS reviewed,
    count(*) FILTER (WHERE r.decision = 'confirmed') AS confirmed,
    count(*) FILTER (WHERE r.decision = 'overturned') AS overturned,
    count(*) FILTER (WHERE j.explanation_source = 'llm') AS explained_by_llm,
    count(*) FILTER (WHERE j.explanation_source = 'evidence') AS explained_by_evidence
FROM jobs j
JOIN tenants t ON t.id = j.tenant_id
LEFT JOIN reviews r ON r.job_id = j.id
GROUP BY 1, 2, 3
"""

COMMENTS = {
    "v_jobs": "One row per job: verdict, tier, stage timings (ms), review and explanation "
    "source. See docs/reporting-views.md.",
    "v_stage_latency": "Per pipeline stage and UTC hour: finished runs, failures and "
    "duration percentiles (ms) from job_stages. See docs/reporting-views.md.",
    "v_daily_verdicts": "Per tenant and UTC day: jobs by verdict and tier, failures, "
    "reviews and explanation sources. See docs/reporting-views.md.",
}


def upgrade() -> None:
    op.execute(V_JOBS)
    op.execute(V_STAGE_LATENCY)
    op.execute(V_DAILY_VERDICTS)
    for view, comment in COMMENTS.items():
        op.execute(f"COMMENT ON VIEW {view} IS '{comment}'")


def downgrade() -> None:
    for view in ("v_daily_verdicts", "v_stage_latency", "v_jobs"):
        op.execute(f"DROP VIEW IF EXISTS {view}")
