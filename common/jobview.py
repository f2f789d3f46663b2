"""The public representation of a job: the API response and the webhook payload."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from common.db.models import Image, Job, JobStage, StageStatus
from common.detector.config import LABELS, REASON_BAND, REASON_OOD
from common.queues import STAGES
from common.vocabulary import LabelName, ReasonText, StatusName, TierName


class Verdict(BaseModel):
    label: int = Field(description="0 = REAL, 1 = FAKE (AI-generated)")
    label_name: LabelName
    probability: float = Field(description="calibrated probability that the image is AI-generated")
    tier: TierName = Field(
        description="uncertain: outside the training distribution, or too close to the "
        "decision threshold to act on; label and probability are still given"
    )
    model_id: str
    ood_score: float | None = Field(
        default=None,
        description="out-of-distribution score: above 1 the image lies outside what the "
        "detector was trained on; null when the model has no OOD statistics",
    )
    reason: ReasonText | None = Field(
        default=None, description="why the tier is uncertain (null otherwise)"
    )


class StageTiming(BaseModel):
    status: str
    queue: str | None = None
    worker: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    attempts: int = 0
    error: str | None = None


class Evidence(BaseModel):
    status: str = Field(description="done, failed, not_computed or skipped")
    rois: list[dict[str, Any]] = Field(default_factory=list)
    image: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    heatmap_url: str | None = None
    overlay_url: str | None = None
    error: str | None = None


class Explanation(BaseModel):
    status: str
    source: Literal["llm", "evidence"] | None = None
    artifacts: dict[str, str] = Field(default_factory=dict)
    model: str | None = None
    prompt_version: str | None = None
    summary: str | None = None
    error: str | None = None
    grounded_rate: float | None = Field(
        default=None,
        description="share of the LLM's claims that named their region or measurement and "
        "agreed with it and the verdict (null: the LLM made no claim)",
    )


class ImageInfoOut(BaseModel):
    sha256: str
    width: int
    height: int
    format: str
    size_bytes: int


class JobOut(BaseModel):
    id: uuid.UUID
    status: StatusName
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    cached: bool = Field(default=False, description="result reused from an identical image")
    source_url: str | None = None
    image: ImageInfoOut
    verdict: Verdict | None = None
    evidence: Evidence | None = None
    explanation: Explanation | None = None
    stages: dict[str, StageTiming] = Field(default_factory=dict)
    error: str | None = None
    status_url: str


def stage_timings(stages: list[JobStage]) -> dict[str, StageTiming]:
    out: dict[str, StageTiming] = {}
    for name in STAGES:
        runs = [s for s in stages if s.stage == name]
        if not runs:
            continue
        finished = [s for s in runs if s.status != StageStatus.RUNNING]
        last = finished[-1] if finished else runs[-1]
        out[name] = StageTiming(
            status=last.status,
            queue=last.queue,
            worker=last.worker,
            started_at=last.started_at,
            finished_at=last.finished_at,
            duration_ms=last.duration_ms,
            attempts=len(runs),
            error=last.error,
        )
    return out


def job_view(
    job: Job, base_url: str, image: Image | None = None, stages: list[JobStage] | None = None
) -> JobOut:
    """The public view of ``job``. A caller that already holds its image row and stage
    runs (a job just created has none) passes them, saving two queries."""
    base = base_url.rstrip("/")
    verdict = None
    if job.label is not None and job.probability is not None and job.tier and job.model_id:
        reason = job.verdict_reason if job.verdict_reason in (REASON_OOD, REASON_BAND) else None
        verdict = Verdict(
            label=job.label,
            label_name=LABELS[job.label],
            probability=job.probability,
            tier=job.tier,
            model_id=job.model_id,
            ood_score=job.ood_score,
            reason=reason,
        )
    evidence = None
    if job.gradcam_status:
        doc = job.rois or {}
        evidence = Evidence(
            status=job.gradcam_status,
            rois=doc.get("rois", []),
            image=doc.get("image"),
            metadata=doc.get("metadata"),
            heatmap_url=f"{base}/v1/jobs/{job.id}/heatmap.png" if job.heatmap_key else None,
            overlay_url=f"{base}/v1/jobs/{job.id}/overlay.png" if job.overlay_key else None,
            error=doc.get("error"),
        )
    explanation = None
    if job.explain_status:
        doc = job.explanation or {}
        explanation = Explanation(
            status=job.explain_status,
            source=job.explanation_source,  # type: ignore[arg-type]
            artifacts=doc.get("artifacts", {}),
            model=doc.get("model"),
            prompt_version=doc.get("prompt_version"),
            summary=doc.get("summary"),
            error=doc.get("error"),
            grounded_rate=doc.get("grounded_rate"),
        )
    image = image if image is not None else job.image
    return JobOut(
        id=job.id,
        status=job.status,
        created_at=job.created_at,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
        cached=job.cached_from is not None,
        source_url=job.source_url,
        image=ImageInfoOut(
            sha256=image.sha256,
            width=image.width,
            height=image.height,
            format=image.format,
            size_bytes=image.size_bytes,
        ),
        verdict=verdict,
        evidence=evidence,
        explanation=explanation,
        stages=stage_timings(job.stages if stages is None else stages),
        error=job.error,
        status_url=f"{base}/v1/jobs/{job.id}",
    )
