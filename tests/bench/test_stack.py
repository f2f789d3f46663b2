"""The bench stack's children: a lowered priority weighs against other sessions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.stack import Child


@pytest.mark.skipif(
    not Path("/proc/self/autogroup").exists(), reason="the kernel has no autogroups"
)
def test_a_niced_child_lowers_its_whole_session_not_only_itself(tmp_path: Path) -> None:
    # Each child starts its own session; with autogroups a plain ``nice`` would only
    # weigh against the child's own session, so the session's nice must be set too.
    child = Child("sleeper", ["sleep", "30"], dict(os.environ), tmp_path, nice=19)
    try:
        assert Path(f"/proc/{child.pid}/autogroup").read_text().split()[-1] == "19"
    finally:
        child.stop()
    plain = Child("plain", ["sleep", "30"], dict(os.environ), tmp_path)
    try:
        assert Path(f"/proc/{plain.pid}/autogroup").read_text().split()[-1] == "0"
    finally:
        plain.stop()
