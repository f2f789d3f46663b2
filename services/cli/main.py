"""``aigi``: data preparation, training, evaluation, the services and administration.

Heavy imports (torch) happen inside the commands that need them, so ``aigi gateway``
and ``aigi worker notify`` start without loading torch.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from common.queues import STAGES
from services.cli import admin, gradcam_commands, model_commands, ood_commands, wild_commands

app = typer.Typer(
    help="Detect AI-generated images and explain why.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(admin.tenant_app, name="tenant")
app.add_typer(admin.key_app, name="key")
model_commands.register(app)
wild_commands.register(app)
gradcam_commands.register(app)
ood_commands.register(app)
admin.register(app)
console = Console(stderr=True)


@app.command()
def worker(
    stage: Annotated[str, typer.Argument(help=f"one of: {', '.join(STAGES)}")],
    concurrency: Annotated[int, typer.Option(help="worker processes")] = 1,
    loglevel: str = "INFO",
    hostname: Annotated[str | None, typer.Option(help="Celery node name")] = None,
) -> None:
    """Start a Celery worker consuming only STAGE's queue."""
    if stage not in STAGES:
        raise typer.BadParameter(f"unknown stage {stage!r}; choose one of {', '.join(STAGES)}")
    from common.logs import configure_logging

    configure_logging(loglevel)
    os.environ["AIGI_WORKER_STAGE"] = stage
    from services.worker import app as celery_app

    node = hostname or f"{stage}-{os.getpid()}@%h"
    celery_app.worker_main(
        [
            "worker",
            "-Q",
            stage,
            "-n",
            node,
            "--concurrency",
            str(concurrency),
            "--pool",
            "prefork",
            "-l",
            loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )


@app.command()
def gateway(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
    loglevel: str = "info",
) -> None:
    """Serve the HTTP API (and the dashboard)."""
    import uvicorn

    from common.logs import configure_logging

    configure_logging(loglevel.upper())
    uvicorn.run(
        "services.gateway.main:app",
        host=host,
        port=port,
        workers=workers,
        log_level=loglevel,
        access_log=False,
        proxy_headers=True,
    )


@app.command()
def scheduler(
    interval: Annotated[float | None, typer.Option(help="seconds between ticks")] = None,
) -> None:
    """Run the reconciler and the webhook retry scheduler."""
    from common.logs import configure_logging
    from common.pipeline import ChainSender
    from services.runtime import context
    from services.scheduler import run_forever

    configure_logging()
    ctx = context()
    run_forever(
        ctx,
        ChainSender.from_settings(ctx.settings),
        interval or ctx.settings.reconcile_interval_seconds,
    )


@app.command()
def migrate(
    revision: str = "head",
    down: Annotated[bool, typer.Option("--down", help="downgrade to REVISION")] = False,
) -> None:
    """Apply (or revert) the database migrations."""
    from common.db.migrate import downgrade, upgrade
    from common.settings import get_settings

    url = get_settings().database_url
    if down:
        downgrade(url, revision if revision != "head" else "base")
    else:
        upgrade(url, revision)
    console.print(f"database at {revision}")


@app.command()
def run(
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """Start everything on this machine: Postgres, Redis, workers, scheduler, gateway."""
    from services.local_stack import run_local_stack

    run_local_stack(host, port)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
