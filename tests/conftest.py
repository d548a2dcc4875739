"""Shared fixtures: a torch-free fake genome for fast engine tests."""

from __future__ import annotations

import os
import shutil
import textwrap
from pathlib import Path

import pytest

# evo's console is 200 columns wide when its output is not a terminal, unless $COLUMNS says
# otherwise; pytest-xdist's workers set COLUMNS=80. Tests read evo's lines whole: the same
# width wherever they run (tests of other widths pass theirs explicitly).
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)

HARNESS = Path(__file__).resolve().parent.parent / "prepare.py"


def add_harness(project: Path) -> Path:
    """Copy evo's prepare.py into a test project (the engine pins and reads it)."""
    shutil.copy(HARNESS, project / "prepare.py")
    return project

# A genome that needs no torch: its "val_bpb" is a bowl over its hyperparameters, minimal
# at LR = 0.01 and WIDTH = 64, so a search has something real to find.
FAKE_GENOME = textwrap.dedent(
    '''\
    """A fake genome for engine tests: prints a summary block computed from its constants."""
    import math
    import os
    import random
    import sys
    import time

    # ---- hyperparameters
    LR = 0.04  # learning rate
    WIDTH = 2**8  # model width
    DEPTH = 3  # layers
    SLEEP_S = 0.0  # seconds to pretend to train
    BEHAVIOUR = "ok"  # ok | crash | nan | oom | silent
    NOISE_BPB = 0.0  # std of seed-dependent noise added to val_bpb
    UNUSED = 1  # changes nothing: a change of it is pure noise

    if __name__ == "__main__":
        time.sleep(SLEEP_S)
        if BEHAVIOUR == "crash":
            raise RuntimeError("boom: shapes do not match")
        if BEHAVIOUR == "nan":
            print("step 1 | loss nan")
            print("FAIL")
            sys.exit(1)
        if BEHAVIOUR == "oom":
            print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
            sys.exit(1)
        if BEHAVIOUR == "silent":
            sys.exit(0)
        bpb = 1.5 + (math.log(LR / 0.01)) ** 2 / 10 + (math.log2(WIDTH / 64)) ** 2 / 50 + 0.01 * DEPTH
        bpb += NOISE_BPB * random.Random(int(os.environ.get("EVO_SEED", "42"))).gauss(0.0, 1.0)
        print("---")
        print(f"val_bpb: {bpb:.6f}")
        print(f"training_seconds: {SLEEP_S:.1f}")
        print(f"total_seconds: {SLEEP_S + 0.1:.1f}")
        print("peak_vram_mb: 0.0")
        print("mfu_percent: 0.0")
        print("total_tokens_M: 0.1")
        print("num_steps: 10")
        print("num_params_M: 0.01")
        print(f"depth: {DEPTH}")
        print(f"seed: {os.environ.get('EVO_SEED')}")
    '''
)


@pytest.fixture
def fake_genome() -> str:
    return FAKE_GENOME
