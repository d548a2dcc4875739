from __future__ import annotations

import math

import pytest

from evo.metrics import classify, parse_summary
from evo.records import EvalState, FailureKind

SUMMARY = """step 00010 (100.0%) | loss 3.2
---
val_bpb: 1.912345
training_seconds: 30.0
total_seconds: 41.2
peak_vram_mb: 0.0
mfu_percent: 0.00
total_tokens_M: 1.3
num_steps: 120
num_params_M: 0.8
depth: 2
"""


def test_parse_summary_reads_every_key_after_the_last_separator():
    log = "---\nval_bpb: 9.0\nnoise\n" + SUMMARY
    metrics = parse_summary(log)
    assert metrics["val_bpb"] == pytest.approx(1.912345)
    assert metrics["num_steps"] == 120
    assert metrics["depth"] == 2
    assert len(metrics) == 9


def test_parse_summary_without_block_is_empty():
    assert parse_summary("loss 3.0\nloss 2.9\n") == {}


def test_complete():
    outcome = classify(SUMMARY, 0, False, 42.0)
    assert outcome.state is EvalState.COMPLETE
    assert outcome.failure_kind is None
    assert outcome.metrics["val_bpb"] == pytest.approx(1.912345)


@pytest.mark.parametrize(
    ("log", "returncode", "timed_out", "state", "kind"),
    [
        ("step 1\n", -9, True, EvalState.TIMEOUT, FailureKind.TIMEOUT),
        ("step 1 | loss nan\nFAIL\n", 1, False, EvalState.FAIL, FailureKind.NAN),
        ("---\nval_bpb: nan\n", 0, False, EvalState.FAIL, FailureKind.NAN),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate\n", 1, False, EvalState.FAIL, FailureKind.OOM),
        ("Traceback (most recent call last):\nRuntimeError: mat1 and mat2 shapes\n", 1, False, EvalState.FAIL, FailureKind.CRASH),
        ("", -11, False, EvalState.FAIL, FailureKind.CRASH),
        ("training done\n", 0, False, EvalState.FAIL, FailureKind.NO_SUMMARY),
        (SUMMARY, 1, False, EvalState.FAIL, FailureKind.CRASH),
    ],
)
def test_failures_are_classified(log, returncode, timed_out, state, kind):
    outcome = classify(log, returncode, timed_out, 10.0)
    assert outcome.state is state
    assert outcome.failure_kind is kind
    assert outcome.error


def test_crash_error_names_the_exception():
    outcome = classify("Traceback (most recent call last):\nRuntimeError: mat1 and mat2 shapes\n", 1, False, 1.0)
    assert outcome.error.startswith("RuntimeError: mat1")
    assert "signal 11" in classify("", -11, False, 1.0).error
    assert not math.isnan(outcome.wall_s)
