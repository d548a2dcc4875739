from __future__ import annotations

import os
import textwrap
import time

from evo.operators.cst_tools import set_constants
from evo.records import EvalState, FailureKind
from evo.runner import run_genome


def _write(tmp_path, code):
    path = tmp_path / "genome.py"
    path.write_text(code)
    return path


def test_complete_run_gets_env_and_log(tmp_path, fake_genome):
    path = _write(tmp_path, fake_genome)
    ticks = []
    outcome = run_genome(path, tmp_path / "g.log", tmp_path, {"EVO_SEED": "7"}, 30, on_tick=ticks.append)
    assert outcome.state is EvalState.COMPLETE
    assert outcome.metrics["seed"] == 7
    assert "val_bpb" in (tmp_path / "g.log").read_text()


def test_failures_are_classified_from_a_real_process(tmp_path, fake_genome):
    for behaviour, kind in [("crash", FailureKind.CRASH), ("nan", FailureKind.NAN), ("oom", FailureKind.OOM),
                            ("silent", FailureKind.NO_SUMMARY)]:
        path = _write(tmp_path, set_constants(fake_genome, {"BEHAVIOUR": behaviour}))
        outcome = run_genome(path, tmp_path / f"{behaviour}.log", tmp_path, {}, 30)
        assert outcome.state is EvalState.FAIL, behaviour
        assert outcome.failure_kind is kind, behaviour
    assert "boom" in run_genome(_write(tmp_path, set_constants(fake_genome, {"BEHAVIOUR": "crash"})),
                                tmp_path / "c.log", tmp_path, {}, 30).error


def test_timeout_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = textwrap.dedent(
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        print("training...", flush=True)
        time.sleep(300)
        """
    )
    path = _write(tmp_path, code)
    start = time.monotonic()
    outcome = run_genome(path, tmp_path / "t.log", tmp_path, {}, wall_limit_s=2.0)
    assert time.monotonic() - start < 15
    assert outcome.state is EvalState.TIMEOUT and outcome.failure_kind is FailureKind.TIMEOUT
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(grandchild, 0)
        except ProcessLookupError:
            break
        # a zombie still answers kill(0); look at its state
        try:
            if open(f"/proc/{grandchild}/stat").read().split()[2] == "Z":
                break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the genome's own child survived the timeout")
