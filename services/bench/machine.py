"""What a result was measured on: printed and stored with every benchmark."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


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


def machine_info() -> dict[str, Any]:
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
    if load1 > 0.5 * cores:
        info["warning"] = (
            f"the machine was busy when this ran (load {load1:.1f} on {cores} cores): "
            "timings are not representative"
        )
    return info


def machine_line(info: dict[str, Any]) -> str:
    gpu = f", GPU {info['gpu']}" if info.get("gpu") else ""
    return (
        f"machine: {info['cores']} cores ({info['cpu_model']}), torch threads "
        f"{info['torch_threads']}, load {info['loadavg_1m']}{gpu}"
    )
