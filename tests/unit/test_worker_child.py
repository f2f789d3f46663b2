"""What a worker's prefork child loads when it starts (``worker_process_init``)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHILD = """
import sys
import services.worker as worker
worker._init_child()
print("torch" in sys.modules)
"""


@pytest.mark.parametrize(
    ("stage", "imports_torch"),
    [("notify", False), ("explain", False), ("classify", True)],
)
def test_only_model_stages_import_torch_in_the_child(stage: str, imports_torch: bool) -> None:
    env = {**os.environ, "AIGI_WORKER_STAGE": stage, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(imports_torch)


def test_an_unknown_worker_stage_stops_the_worker_naming_the_setting() -> None:
    env = {**os.environ, "AIGI_WORKER_STAGE": "clasify", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", "import services.worker"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "worker_stage" in result.stderr and "'classify'" in result.stderr


def test_the_worker_stage_setting_accepts_exactly_the_stages() -> None:
    from typing import get_args

    from common.queues import STAGES
    from common.settings import Settings

    literal, _none = get_args(Settings.model_fields["worker_stage"].annotation)
    assert set(get_args(literal)) == set(STAGES)
