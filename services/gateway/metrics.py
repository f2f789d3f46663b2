"""Prometheus metrics, computed at scrape time from Postgres and Redis.

The workers are separate processes (and machines); Postgres already holds every stage
run with its duration, so the gateway derives the cluster-wide numbers from it instead
of aggregating per-process counters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from common.db.models import Job, JobStage, StageStatus
from common.db.session import session_factory
from common.queues import QUEUES
from services.gateway.state import GatewayState

log = logging.getLogger("aigi.gateway")
BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)


class PipelineCollector(Collector):
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        jobs = GaugeMetricFamily("aigi_jobs", "Jobs by status", labels=["status"])
        verdicts = GaugeMetricFamily("aigi_verdicts", "Jobs by verdict", labels=["label"])
        latency = HistogramMetricFamily(
            "aigi_stage_duration_seconds", "Duration of finished stage runs", labels=["stage"]
        )
        failures = GaugeMetricFamily("aigi_stage_failures", "Failed stage runs", labels=["stage"])
        try:
            with session_factory(self.state.settings.database_url)() as session:
                for status, count in session.execute(
                    select(Job.status, func.count()).group_by(Job.status)
                ):
                    jobs.add_metric([status], count)
                for label, count in session.execute(
                    select(Job.label, func.count())
                    .where(Job.label.is_not(None))
                    .group_by(Job.label)
                ):
                    verdicts.add_metric(["FAKE" if label == 1 else "REAL"], count)
                columns = [func.count().filter(JobStage.duration_ms <= b) for b in BUCKETS_MS]
                rows = session.execute(
                    select(
                        JobStage.stage,
                        func.count(),
                        func.coalesce(func.sum(JobStage.duration_ms), 0),
                        *columns,
                    )
                    .where(
                        JobStage.status != StageStatus.RUNNING, JobStage.duration_ms.is_not(None)
                    )
                    .group_by(JobStage.stage)
                ).all()
                for stage, count, total_ms, *cumulative in rows:
                    buckets = [
                        (str(b / 1000), c) for b, c in zip(BUCKETS_MS, cumulative, strict=True)
                    ]
                    buckets.append(("+Inf", count))
                    latency.add_metric([stage], buckets, float(total_ms or 0) / 1000.0)
                for stage, count in session.execute(
                    select(JobStage.stage, func.count())
                    .where(JobStage.status == StageStatus.FAILED)
                    .group_by(JobStage.stage)
                ):
                    failures.add_metric([stage], count)
        except Exception as exc:
            log.warning("metrics: database unavailable: %s", exc)
        yield jobs
        yield verdicts
        yield latency
        yield failures
        depth = GaugeMetricFamily(
            "aigi_queue_depth", "Messages waiting per queue", labels=["queue"]
        )
        try:
            for queue in QUEUES:
                depth.add_metric([queue], int(self.state.redis.llen(queue)))
        except Exception as exc:
            log.warning("metrics: redis unavailable: %s", exc)
        yield depth


def render_metrics(state: GatewayState) -> tuple[bytes, str]:
    registry = CollectorRegistry()
    registry.register(PipelineCollector(state))
    return generate_latest(registry), CONTENT_TYPE_LATEST
