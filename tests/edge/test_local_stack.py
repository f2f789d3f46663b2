"""`aigi run` (what `make run` starts): Ctrl-C and SIGTERM stop every process it started,
the embedded Postgres included (its own session, parent pid 1: no Ctrl-C reaches it),
and leave running a Postgres it found running."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from common.embedded import EmbeddedPostgres, free_port

pytestmark = pytest.mark.slow


def _postmaster_pid(state_dir: Path) -> int | None:
    pid_file = state_dir / "postgres" / "postmaster.pid"
    with contextlib.suppress(FileNotFoundError, ValueError):
        return int(pid_file.read_text().splitlines()[0])
    return None


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Stack:
    """``aigi run`` in ``folder`` (its state under ``folder/var``), in its own session as
    a terminal's foreground job would be."""

    def __init__(self, folder: Path, sigint_ignored: bool = False) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIGI_")}
        self.log = folder / "run.log"
        command = [sys.executable, "-m", "services.cli.main", "run", "--port", str(free_port())]
        if sigint_ignored:
            # As a shell starts a background job (`make run &`): SIGINT ignored, which
            # survives exec and which Python then leaves ignored.
            command = [
                sys.executable,
                "-c",
                "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])",
                *command[1:],
            ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=folder,
                env={**env, "OMP_NUM_THREADS": "1", "AIGI_ENVIRONMENT": "development"},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_running(self, timeout: float = 120.0) -> list[int]:
        """Once it says it runs: the pids of all its descendants."""
        deadline = time.monotonic() + timeout
        while "aigi is running" not in self.log.read_text(errors="replace"):
            assert self.process.poll() is None, self.log.read_text(errors="replace")
            assert time.monotonic() < deadline, self.log.read_text(errors="replace")
            time.sleep(0.2)
        return [p.pid for p in psutil.Process(self.process.pid).children(recursive=True)]

    def stop(self, how: signal.Signals) -> None:
        if how == signal.SIGINT:  # Ctrl-C: the terminal signals the whole foreground group
            os.killpg(self.process.pid, signal.SIGINT)
            time.sleep(0.5)  # an impatient second Ctrl-C, while it is stopping
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGINT)
        else:  # a service manager signals the main process
            self.process.send_signal(how)
        # Longer than the stack's own worst case (20 s for its processes, 30 s for pg_ctl,
        # 5 s each for the last Postgres and Redis checks): a slow stop on a loaded machine
        # is not a failure, one that never ends is.
        try:
            code = self.process.wait(120)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # leave nothing to later tests
            self.process.wait()
            pytest.fail(f"the stack did not stop:\n{self.log.read_text(errors='replace')}")
        assert code == 0, self.log.read_text(errors="replace")


def test_interrupting_the_local_stack_leaves_no_process(tmp_path: Path) -> None:
    state = tmp_path / "var"
    # 1. A Postgres already runs on the stack's data folder (started here, not by it):
    #    SIGTERM stops the stack's processes and Redis, and leaves that Postgres running.
    foreign = EmbeddedPostgres(state / "postgres")
    foreign.start()
    try:
        foreign_pid = _postmaster_pid(state)
        assert foreign_pid is not None and _alive(foreign_pid)
        stack = Stack(tmp_path)
        children = stack.wait_running()
        assert children
        stack.stop(signal.SIGTERM)
        assert [pid for pid in children if _alive(pid)] == []
        assert _alive(foreign_pid), "a Postgres the stack did not start was stopped"
    finally:
        foreign.stop()
    assert not _alive(foreign_pid)

    # 2. Nothing runs: the stack starts Postgres itself, and Ctrl-C (twice) stops all of it.
    stack = Stack(tmp_path)
    children = stack.wait_running()
    postmaster = _postmaster_pid(state)
    assert postmaster is not None and postmaster not in children  # not its descendant
    stack.stop(signal.SIGINT)
    assert [pid for pid in [*children, postmaster] if _alive(pid)] == []
    assert "left running" not in stack.log.read_text(errors="replace")


def test_ctrl_c_stops_the_stack_even_when_started_with_sigint_ignored(tmp_path: Path) -> None:
    """A background job inherits SIGINT ignored; the stack still stops on it, itself
    (not because a worker happened to exit first)."""
    stack = Stack(tmp_path, sigint_ignored=True)
    children = stack.wait_running()
    stack.stop(signal.SIGINT)
    assert [pid for pid in children if _alive(pid)] == []
    log = stack.log.read_text(errors="replace")
    assert "stopping..." in log and "a service exited" not in log, log
