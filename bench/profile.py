"""Where the gateway's time goes under load: py-spy, sampled while a rate runs.

``py-spy record --format raw`` writes collapsed stacks (``frame;frame;... count``);
the summary keeps the functions with the most samples on top of the stack (self time)
and the project's own functions by inclusive time. py-spy is optional
(``.venv/bin/pip install py-spy``); without it the profile says so.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

OWN_CODE = ("services/", "common/")


def pyspy_path() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def function_of(frame: str) -> str:
    """``name (path/file.py:123)`` → ``name (path/file.py)``: lines of one function add up."""
    name, sep, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if sep and ":" in where else frame


def summarize_collapsed(text: str, top: int = 20) -> dict[str, Any]:
    """Shares of all samples (wall time over every thread, waiting included)."""
    own: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [function_of(f) for f in stack.split(";")]
        leaf[frames[-1]] += count
        for frame in {f for f in frames if any(part in f for part in OWN_CODE)}:
            own[frame] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"frame": frame, "share": round(count / total, 4)}
            for frame, count in counter.most_common(top)
        ]

    return {
        "samples": total,
        "meaning": "share of py-spy samples: wall time over all threads, waiting included",
        "self": share(leaf),
        "own_code_inclusive": share(own),
    }


@contextlib.contextmanager
def pyspy_record(pid: int, duration: float, out: Path) -> Iterator[dict[str, Any]]:
    """Sample ``pid`` (and its children) for ``duration`` s; fills the dict on exit."""
    result: dict[str, Any] = {}
    exe = pyspy_path()
    if exe is None:
        result["error"] = "py-spy is not installed (.venv/bin/pip install py-spy)"
        yield result
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--subprocesses",
        "--nonblocking",
        "--rate",
        "200",
        "--duration",
        str(max(1, round(duration))),
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield result
    finally:
        try:
            _, err = process.communicate(timeout=duration + 30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        if out.is_file():
            result.update(summarize_collapsed(out.read_text(errors="replace")))
            result["collapsed_stacks"] = str(out)
        else:
            result["error"] = f"py-spy wrote nothing: {err.decode(errors='replace')[-500:]}"
