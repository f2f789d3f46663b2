"""CPU time read from /proc: a process tree's work is counted, its children included."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.procstat import cpu_seconds, pids_named, process_tree, tree_cpu_seconds

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

BURN_THEN_SLEEP = (
    "import time\n"
    "end = time.process_time() + 0.3\n"
    "while time.process_time() < end: pass\n"
    "time.sleep(60)\n"
)


@pytest.fixture
def busy_child() -> Iterator[int]:
    child = subprocess.Popen([sys.executable, "-c", BURN_THEN_SLEEP])
    try:
        deadline = time.monotonic() + 20
        while cpu_seconds([child.pid]) < 0.25 and time.monotonic() < deadline:
            time.sleep(0.05)
        yield child.pid
    finally:
        child.kill()
        child.wait()


def test_a_busy_child_counts_in_its_parents_tree(busy_child: int) -> None:
    assert cpu_seconds([busy_child]) >= 0.25
    assert busy_child in process_tree(os.getpid())
    assert tree_cpu_seconds(os.getpid()) >= cpu_seconds([os.getpid()]) + 0.2


def test_processes_are_found_by_name(busy_child: int) -> None:
    name = Path(f"/proc/{busy_child}/comm").read_text().strip()
    assert busy_child in pids_named(name)


def test_a_process_that_is_gone_counts_nothing() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    assert cpu_seconds([child.pid]) == 0
