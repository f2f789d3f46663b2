"""Shared fixtures: real Postgres and Redis (local ones, or embedded ones started here),
a tiny detector checkpoint, a network guard, and real Celery worker processes."""

from __future__ import annotations

import os

# Before torch is imported anywhere: small ops on a busy 2-core machine need 1 thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    create_local_database,
    drop_local_database,
    port_open,
)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# ---------------------------------------------------------------------------- network guard
_real_connect = socket.socket.connect
_LOOPBACK = ("127.", "::1", "localhost")


def _guarded_connect(self: socket.socket, address: object) -> object:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        if not host.startswith(_LOOPBACK) and host != "0.0.0.0":
            raise ConnectionRefusedError(f"tests may not reach the network ({host})")
    return _real_connect(self, address)  # type: ignore[arg-type]


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]


# ---------------------------------------------------------------------------- services
@dataclass
class Services:
    database_url: str
    redis_url: str


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    """Postgres and Redis: the machine's own when they run, embedded ones otherwise."""
    cleanups = []
    database_url = create_local_database("aigi_test")
    if database_url is None:
        postgres = EmbeddedPostgres(tmp_path_factory.mktemp("pg"))
        postgres.start()
        database_url = postgres.create_database("aigi_test")
        cleanups.append(postgres.stop)
    else:
        cleanups.append(lambda: drop_local_database(database_url))
    if port_open("127.0.0.1", 6379):
        redis_url = "redis://127.0.0.1:6379/11"
    else:
        redis = EmbeddedRedis(tmp_path_factory.mktemp("redis"))
        redis_url = redis.start()
        cleanups.append(redis.stop)
    from redis import Redis

    Redis.from_url(redis_url).flushdb()
    from common.db.migrate import upgrade

    upgrade(database_url)
    yield Services(database_url, redis_url)
    from common.db.session import dispose_all

    dispose_all()
    for cleanup in reversed(cleanups):
        cleanup()


# ---------------------------------------------------------------------------- model
@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained compact detector (verdicts are arbitrary, the mechanics are real)."""
    import torch

    from common.detector.checkpoint import save_checkpoint
    from common.detector.config import CompactBackboneConfig, DetectorConfig
    from common.detector.model import Detector

    torch.manual_seed(0)
    config = DetectorConfig(
        model_id="test-tiny-compact", backbone=CompactBackboneConfig(widths=(8, 16), blocks=(1, 1))
    )
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_checkpoint(Detector(config).eval(), folder)
    return folder


@pytest.fixture(scope="session")
def slow_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A large random detector at 256x256: a forward pass takes seconds on one thread."""
    import torch

    from common.detector.checkpoint import save_checkpoint
    from common.detector.config import CompactBackboneConfig, DetectorConfig, Preprocessing
    from common.detector.model import Detector

    torch.manual_seed(0)
    config = DetectorConfig(
        model_id="test-slow-compact",
        backbone=CompactBackboneConfig(widths=(96, 192, 384), blocks=(3, 3, 3)),
        preprocessing=Preprocessing(input_size=256),
    )
    folder = tmp_path_factory.mktemp("slow") / "slow"
    save_checkpoint(Detector(config).eval(), folder)
    return folder


@pytest.fixture(scope="session")
def stack_env(
    services: Services, tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Environment for every process of the test stack."""
    env = {
        "AIGI_ENVIRONMENT": "test",
        "AIGI_DATABASE_URL": services.database_url,
        "AIGI_REDIS_URL": services.redis_url,
        "AIGI_BLOB_DIR": str(tmp_path_factory.mktemp("blobs")),
        "AIGI_MODEL_PATH": str(tiny_checkpoint),
        "AIGI_VISIBILITY_TIMEOUT_SECONDS": "25",
        "AIGI_TASK_TIME_LIMIT_SECONDS": "20",
        "AIGI_EXPLAIN_VISIBILITY_TIMEOUT_SECONDS": "40",
        "AIGI_EXPLAIN_TIME_LIMIT_SECONDS": "30",
        "AIGI_UNACKED_RESTORE_INTERVAL_SECONDS": "1",
        "AIGI_URL_FETCH_ALLOW_HOSTS": "127.0.0.1,localhost",
        "AIGI_RATE_LIMIT_PER_MINUTE": "100000",
        "AIGI_RATE_LIMIT_BURST": "10000",
        "AIGI_WEBHOOK_BACKOFF_BASE_SECONDS": "0.2",
        "OMP_NUM_THREADS": "1",
    }
    os.environ.update(env)
    from common.settings import get_settings

    get_settings.cache_clear()
    return env


# ---------------------------------------------------------------------------- workers
class WorkerProcess:
    def __init__(self, stage: str, env: dict[str, str], log_dir: Path, name: str) -> None:
        self.stage = stage
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.cli.main",
                    "worker",
                    stage,
                    "--hostname",
                    f"{name}@test",
                    "--loglevel",
                    "INFO",
                ],
                env={**os.environ, **env},
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL the whole process group (parent and prefork children)."""
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def terminate(self) -> None:
        import signal

        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self) -> None:
        self.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for_workers(env: dict[str, str], names: list[str], timeout: float = 60) -> None:
    from common.celery_app import make_celery
    from common.settings import Settings

    app = make_celery(
        Settings(redis_url=env["AIGI_REDIS_URL"], database_url=env["AIGI_DATABASE_URL"])
    )
    deadline = time.monotonic() + timeout
    wanted = {f"{n}@test" for n in names}
    while time.monotonic() < deadline:
        replies = app.control.ping(timeout=0.5) or []
        seen = {name for reply in replies for name in reply}
        if wanted <= seen:
            return
        time.sleep(0.3)
    raise RuntimeError(f"workers {wanted} did not come up within {timeout}s")


class WorkerPool:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.workers: list[WorkerProcess] = []

    def start(
        self,
        stage: str,
        name: str | None = None,
        wait: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> WorkerProcess:
        name = name or f"{stage}-{len(self.workers)}"
        worker = WorkerProcess(stage, {**self.env, **(extra_env or {})}, self.log_dir, name)
        self.workers.append(worker)
        if wait:
            wait_for_workers(self.env, [name])
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.terminate()
        for worker in self.workers:
            worker.stop()
        self.workers.clear()


@pytest.fixture(scope="session")
def pipeline_workers(
    stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerPool]:
    """One real worker per queue for the whole session."""
    from common.queues import STAGES

    pool = WorkerPool(stack_env, tmp_path_factory.mktemp("worker-logs"))
    for stage in STAGES:
        pool.start(stage, name=f"{stage}-main", wait=False)
    wait_for_workers(stack_env, [f"{s}-main" for s in STAGES])
    yield pool
    pool.stop_all()


@pytest.fixture
def worker_pool(stack_env: dict[str, str], tmp_path: Path) -> Iterator[WorkerPool]:
    """Workers a test starts and kills itself."""
    pool = WorkerPool(stack_env, tmp_path)
    yield pool
    pool.stop_all()


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (a fresh clone has no ../shared); this test needs it")
    return path


def with_redis_db(url: str, db: int) -> str:
    base = url.rsplit("/", 1)[0] if url.count("/") >= 3 else url
    return f"{base}/{db}"


@pytest.fixture
def isolated_env(stack_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The stack's environment on a Redis database of its own (no session workers)."""
    from redis import Redis

    db = 12 + (os.getpid() % 3)
    env = {**stack_env, "AIGI_REDIS_URL": with_redis_db(stack_env["AIGI_REDIS_URL"], db)}
    Redis.from_url(env["AIGI_REDIS_URL"]).flushdb()
    yield env
    Redis.from_url(env["AIGI_REDIS_URL"]).flushdb()
