"""``queue_overhead``: the queue path against the same work in one process, per image.

Queue path: ``POST /v1/jobs`` to the gateway (uvicorn) → Redis → ``classify`` →
``gradcam`` → ``explain`` workers (real processes) → Postgres, one image at a time;
the time per image runs from just before the POST to the job's ``finished_at`` (the
moment it is ``done``, written by the worker; same clock). Two in-process paths, same
checkpoint, same torch threads, same images, interleaved with the queue path image by
image so background load hits all three alike:

* ``in_process_ms_per_image`` (the target's baseline, "the same functions in one
  process"): the gateway's :class:`JobIntake` records the job (nothing enqueued), then
  the classify, gradcam and explain stage functions run one after another in this
  process through :func:`services.runtime.run_stage`, storage included (Postgres, the
  blob store). The difference to the queue path is HTTP, the broker, the workers' task
  hand-offs and one process per stage.
* ``model_work_ms_per_image``: decode + ``DetectorEngine.predict`` + ``analyze_image``
  only, no storage: what the classify and gradcam stages compute.

``transport_ms`` is what the queue adds outside the stages' own work (end-to-end minus
the stages' recorded durations): submit, broker hops, task start-up.

The benchmark learns that a job finished from its ``job.done`` webhook (a receiver in
this process), not by polling: on a machine with few cores every status poll steals a
core from a forward pass in the middle of its work and slows the very stages it
times (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from bench.loadgen import FINAL, finished_timestamp
from bench.stack import BenchStack
from common.db.models import Job, JobStatus, StageStatus
from common.detector.inference import DetectorEngine
from common.images import decode_rgb
from common.queues import CLASSIFY, EXPLAIN, GRADCAM
from common.settings import Settings
from services import runtime
from services.gradcam.analysis import analyze_image
from services.gradcam.cam import DetectorCAM

TARGET_OVERHEAD_PCT = 10.0


class ModelWork:
    """The classify and gradcam stages' model work, in this process, storing nothing."""

    def __init__(self, model_path: Path, device: str = "cpu") -> None:
        settings = Settings()
        self.threshold, self.top_k = settings.roi_threshold, settings.roi_top_k
        self.engine = DetectorEngine.from_checkpoint(model_path, device=device, batch_size=1)
        self.cam = DetectorCAM(self.engine.model)

    def run(self, data: bytes) -> float:
        start = time.perf_counter()
        image = decode_rgb(data)
        self.engine.predict([image])
        analyze_image(self.engine, image, data, self.cam, self.threshold, self.top_k)
        return (time.perf_counter() - start) * 1000.0

    def close(self) -> None:
        self.cam.release()


class _NoBroker:
    """The intake's sender for jobs this process runs itself: nothing is enqueued."""

    def enqueue(self, job_id: uuid.UUID | str, first_stage: str = CLASSIFY) -> None:
        return None


def _never(_: Job) -> bool:
    return False  # a new job: no stage has run


class InProcessStages:
    """A job recorded by the gateway's intake, then its classify, gradcam and explain
    stage functions run here, one after another, as the workers run them."""

    def __init__(self, stack: BenchStack, device: str = "cpu") -> None:
        from common.detector.config import model_id_of
        from common.netguard import policy_for
        from common.tenants import authenticate

        settings = Settings(
            database_url=stack.database_url,
            blob_dir=Path(stack.env["AIGI_BLOB_DIR"]),
            model_path=stack.model_path,
            model_device=device,
            torch_threads=stack.torch_threads,
            llm_url=None,
        )
        self.ctx = runtime.WorkerContext(settings)
        self.url_policy = policy_for(settings.allowed_fetch_hosts)
        self.model_id = model_id_of(settings.model_path)
        with self.ctx.session() as session:
            principal = authenticate(session, stack.key)
        assert principal is not None, "the bench stack's key does not authenticate"
        self.principal = principal

    def run(self, data: bytes) -> float:
        from services.classifier.service import classify_job
        from services.explainer.service import explain_job
        from services.gateway.intake import JobIntake, JobOptions, Submission
        from services.gradcam.service import gradcam_job

        start = time.perf_counter()
        with self.ctx.session() as session:
            intake = JobIntake(
                session,
                self.ctx.blobs,
                _NoBroker(),
                self.ctx.settings,
                self.url_policy,
                self.model_id,
            )
            # fresh: the queue path ran these bytes just before; no cached copy here
            accepted = intake.submit(self.principal, Submission(data=data), JobOptions(fresh=True))
        job_id, info = str(accepted.job.id), runtime.TaskInfo(worker="in-process")
        ctx = self.ctx
        runtime.run_stage(CLASSIFY, job_id, classify_job, _never, info, JobStatus.CLASSIFYING, ctx)
        runtime.run_stage(GRADCAM, job_id, gradcam_job, _never, info, ctx=ctx)
        runtime.run_stage(EXPLAIN, job_id, explain_job, _never, info, JobStatus.EXPLAINING, ctx)
        elapsed = (time.perf_counter() - start) * 1000.0
        with self.ctx.session() as session:
            job = runtime.load_job(session, job_id)
            if job.status != JobStatus.DONE or job.gradcam_status != StageStatus.DONE:
                raise RuntimeError(f"in-process job {job_id} ended {job.status}: {job.error}")
        return elapsed

    def close(self) -> None:
        if "cam" in self.ctx.__dict__:
            self.ctx.cam.release()


class DoneReceiver:
    """Receives the stack's ``job.done`` webhooks on 127.0.0.1; ``wait`` for a job's.

    The stack must allow the host (``AIGI_URL_FETCH_ALLOW_HOSTS=127.0.0.1``)."""

    def __init__(self) -> None:
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                self.send_response(204)
                self.end_headers()
                event = json.loads(body)
                if event.get("type") == "job.done":
                    receiver._event(str(event["data"]["id"])).set()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _event(self, job_id: str) -> threading.Event:
        with self._lock:
            return self._done.setdefault(job_id, threading.Event())

    def wait(self, job_id: str, timeout: float) -> bool:
        return self._event(job_id).wait(timeout)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> DoneReceiver:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


RECEIVER_ENV = {"AIGI_URL_FETCH_ALLOW_HOSTS": "127.0.0.1", "AIGI_WEBHOOK_EVENTS": "done"}


def run_job(
    client: httpx.Client, data: bytes, receiver: DoneReceiver, timeout: float = 300.0
) -> dict[str, Any]:
    """Submit one image, wait for its ``job.done`` webhook, read the job; times in ms."""
    wall = time.time()
    start = time.perf_counter()
    response = client.post(
        "/v1/jobs",
        files={"file": ("bench.png", data, "image/png")},
        data={"callback_url": receiver.url},
    )
    response.raise_for_status()
    submit_ms = (time.perf_counter() - start) * 1000.0
    job_id = response.json()["id"]
    if not receiver.wait(job_id, timeout):
        raise TimeoutError(f"no job.done webhook for job {job_id} after {timeout}s")
    view: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
    if view.get("status") not in FINAL:
        raise RuntimeError(f"job {job_id} sent job.done but reads {view.get('status')}")
    observed_ms = (time.perf_counter() - start) * 1000.0
    finished = finished_timestamp(view)
    stages = {
        name: float(timing["duration_ms"])
        for name, timing in (view.get("stages") or {}).items()
        if timing.get("duration_ms") is not None
    }
    end_to_end = (finished - wall) * 1000.0 if finished is not None else observed_ms
    work = sum(v for k, v in stages.items() if k != "notify")
    return {
        "status": view.get("status"),
        "end_to_end_ms": end_to_end,
        "observed_ms": observed_ms,
        "submit_ms": submit_ms,
        "stages_ms": stages,
        "transport_ms": end_to_end - work,
    }


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 2),
        "mean": round(statistics.fmean(values), 2),
        "min": round(min(values), 2),
        "max": round(max(values), 2),
    }


def bench_queue(
    stack: BenchStack, images: list[bytes], warmup: int = 2, model_name: str = ""
) -> dict[str, Any]:
    """On ``stack`` (one worker per stage, started with :data:`RECEIVER_ENV`);
    ``images[:warmup]`` only warm up."""
    import torch

    if len(images) <= warmup:
        raise ValueError("need more images than warm-up images")
    stack.ensure_workers(1)
    url = stack.ensure_gateway()
    device = stack.env.get("AIGI_MODEL_DEVICE", "cpu")
    local = ModelWork(stack.model_path, device)
    stages_here = InProcessStages(stack, device)
    queue_runs: list[dict[str, Any]] = []
    local_ms: list[float] = []
    stages_ms: list[float] = []
    headers = {"Authorization": f"Bearer {stack.key}"}
    try:
        with (
            httpx.Client(base_url=url, headers=headers, timeout=60) as client,
            DoneReceiver() as receiver,
        ):
            for data in images[:warmup]:
                run_job(client, data, receiver)
                local.run(data)
                stages_here.run(data)
            for data in images[warmup:]:
                queue_runs.append(run_job(client, data, receiver))
                local_ms.append(local.run(data))
                stages_ms.append(stages_here.run(data))
    finally:
        local.close()
        stages_here.close()
    failed = [r for r in queue_runs if r["status"] != "done"]
    queue_ms = [r["end_to_end_ms"] for r in queue_runs]
    stage_names = sorted({name for r in queue_runs for name in r["stages_ms"]})
    stages = {
        name: _stats([r["stages_ms"][name] for r in queue_runs if name in r["stages_ms"]])
        for name in stage_names
    }
    overhead = 100.0 * (statistics.median(queue_ms) / statistics.median(stages_ms) - 1.0)
    return {
        "model": model_name or str(stack.model_path),
        "device": local.engine.device,
        "images": len(queue_runs),
        "warmup_images": warmup,
        "worker_torch_threads": stack.torch_threads,
        "in_process_torch_threads": int(torch.get_num_threads()),
        "backing": dict(stack.backing),
        "workers_per_stage": 1,
        "queue_ms_per_image": _stats(queue_ms),
        "in_process_ms_per_image": _stats(stages_ms),
        "in_process_path": "the same stage functions in one process (intake, classify, "
        "gradcam, explain; storage included)",
        "overhead_pct": round(overhead, 2),
        "overhead_pct_of_means": round(
            100.0 * (statistics.fmean(queue_ms) / statistics.fmean(stages_ms) - 1.0), 2
        ),
        "model_work_ms_per_image": _stats(local_ms),
        "overhead_pct_vs_model_work": round(
            100.0 * (statistics.median(queue_ms) / statistics.median(local_ms) - 1.0), 2
        ),
        "target_overhead_pct": TARGET_OVERHEAD_PCT,
        "meets_target": overhead <= TARGET_OVERHEAD_PCT,
        "submit_ms": _stats([r["submit_ms"] for r in queue_runs]),
        "transport_ms": _stats([r["transport_ms"] for r in queue_runs]),
        "stages_ms": stages,
        "failed_jobs": len(failed),
        "note": "explain runs without an LLM (evidence fallback) in both paths; "
        "model work leaves out storage and the explain stage",
    }
