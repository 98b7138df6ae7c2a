"""scripts/gpu_check.sh --dry-run (CPU): the GPU check's config composes and validates with
the backends this machine has, and its plan (the 1.5B preset's architecture, the random PRM
counted) prints a per-GPU total and a verdict; nothing is built or loaded."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_gpu_check_dry_run():
    r = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "grpo + pr_clip_delta, 10 steps" in r.stdout
    assert "policy weights       2.88  1.54B x 2 B" in r.stdout  # 1,543,714,304 bf16 parameters
    assert "PRM" in r.stdout and "verdict: fits" in r.stdout
