"""What a result was measured on: printed and stored with every benchmark."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def default_threads() -> int:
    """Every core this process may use: a benchmark measures the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    import torch

    torch.set_num_threads(max(1, threads))
    return int(torch.get_num_threads())


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far: by every process, and by this one with its children."""

    wall: float
    busy_s: float
    own_s: float


def cpu_snapshot() -> CpuSnapshot | None:
    """Read ``/proc/stat`` and ``os.times``; None where there is no ``/proc``."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    ticks = [int(value) for value in fields]
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    busy = sum(ticks[:3]) + sum(ticks[5:8])
    own = os.times()
    return CpuSnapshot(
        wall=time.monotonic(),
        busy_s=busy / os.sysconf("SC_CLK_TCK"),
        own_s=own.user + own.system + own.children_user + own.children_system,
    )


def other_cores(since: CpuSnapshot | None) -> float | None:
    """Cores used by processes other than the benchmark (and its workers) since ``since``.

    The load average cannot tell this: a benchmark that uses both cores shows load 2
    on an idle machine. Children count once reaped, which every benchmark stack does
    before its result is recorded.
    """
    now = cpu_snapshot()
    if since is None or now is None or now.wall <= since.wall:
        return None
    others = (now.busy_s - since.busy_s) - (now.own_s - since.own_s)
    return max(0.0, others / (now.wall - since.wall))


def machine_info(since: CpuSnapshot | None = None) -> dict[str, Any]:
    import torch

    cores = os.cpu_count() or 1
    load1, load5, _ = os.getloadavg()
    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cores": cores,
        "usable_cores": default_threads(),
        "torch_threads": int(torch.get_num_threads()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_1m": round(load1, 2),
        "loadavg_5m": round(load5, 2),
        "cuda": bool(torch.cuda.is_available()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "git_commit": _git_commit(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    others = other_cores(since)
    if others is not None:
        info["other_processes_cores"] = round(others, 2)
        if others > 0.25 * cores:
            info["warning"] = (
                f"other processes used {others:.1f} of {cores} cores while this ran: "
                "timings are not representative"
            )
    return info


def machine_line(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (
        f"machine: {info['cores']} cores ({info['cpu_model']}), torch threads "
        f"{info['torch_threads']}, load {info['loadavg_1m']}{gpu}"
    )
