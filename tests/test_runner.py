"""The runner: a real process in its own session, its exit classified, its log bounded."""

from __future__ import annotations

import os
import sys
import textwrap
import time

from evo.metrics import classify
from evo.operators.cst_tools import set_constants
from evo.records import EvalState, FailureKind
from evo.runner import LogSink, run_process


def _run(tmp_path, code, wall_limit_s=30.0, env=None, **kwargs):
    path = tmp_path / "genome.py"
    path.write_text(code)
    env = {"PATH": os.environ["PATH"], **(env or {})}
    return run_process([sys.executable, str(path)], tmp_path / "g.log", tmp_path, env, wall_limit_s, **kwargs)


def test_complete_run_gets_exactly_its_env_and_a_log(tmp_path, fake_genome, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-must-not-leak")
    ticks = []
    code = fake_genome + "\nprint('key:', os.environ.get('ANTHROPIC_API_KEY'))\n"
    result = _run(tmp_path, code, env={"EVO_SEED": "7"}, on_tick=ticks.append)
    outcome = classify(result.tail, result.returncode, result.timed_out, result.wall_s)
    assert outcome.state is EvalState.COMPLETE
    assert outcome.metrics["seed"] == 7
    assert "val_bpb" in (tmp_path / "g.log").read_text()
    assert "sk-must-not-leak" not in result.tail and "key: None" in result.tail


def test_failures_are_classified_from_a_real_process(tmp_path, fake_genome):
    for behaviour, kind in [("crash", FailureKind.CRASH), ("nan", FailureKind.NAN), ("oom", FailureKind.OOM),
                            ("silent", FailureKind.NO_SUMMARY)]:
        result = _run(tmp_path, set_constants(fake_genome, {"BEHAVIOUR": behaviour}))
        outcome = classify(result.tail, result.returncode, result.timed_out, result.wall_s)
        assert outcome.state is EvalState.FAIL, behaviour
        assert outcome.failure_kind is kind, behaviour
        if behaviour == "crash":
            assert "boom" in outcome.error


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
    start = time.monotonic()
    result = _run(tmp_path, code, wall_limit_s=2.0)
    assert time.monotonic() - start < 15
    assert result.timed_out
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if open(f"/proc/{grandchild}/stat").read().split()[2] == "Z":  # a zombie answers kill(0)
                break
        except FileNotFoundError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the genome's own child survived the timeout")


def test_a_flood_of_output_is_capped_on_disk_and_in_memory(tmp_path):
    code = "import sys\nfor i in range(200):\n    sys.stdout.write('x' * (1 << 20))\nprint()\nprint('---')\nprint('val_bpb: 1.5')\n"
    result = _run(tmp_path, code, max_log_bytes=2 * 2**20)
    assert result.returncode == 0
    assert result.output_bytes > 200 * 2**20
    log = (tmp_path / "g.log").read_bytes()
    assert len(log) < 2 * 2**20 + 4096
    assert b"bytes of output dropped" in log and log.rstrip().endswith(b"val_bpb: 1.5")
    assert len(result.tail) <= 256 * 2**10 and result.tail.rstrip().endswith("val_bpb: 1.5")


def test_a_running_process_s_output_is_in_its_log_before_it_ends(tmp_path):
    read, write = os.pipe()
    with os.fdopen(read, "rb") as pipe:
        sink = LogSink(pipe, tmp_path / "l.log")
        os.write(write, b"step 1/100 loss 4.2\n")  # a line, as a genome prints one; the pipe stays open
        deadline = time.monotonic() + 10.0
        while b"step 1/100" not in (tmp_path / "l.log").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.05)
        seen = (tmp_path / "l.log").read_bytes()
        os.close(write)
        sink.close()
    assert seen == b"step 1/100 loss 4.2\n"


def test_log_sink_keeps_head_and_tail(tmp_path):
    read, write = os.pipe()
    with os.fdopen(read, "rb") as pipe:
        sink = LogSink(pipe, tmp_path / "l.log", max_bytes=100, tail_bytes=40)
        os.write(write, b"A" * 60 + b"B" * 100 + b"C" * 30)
        os.close(write)
        sink.close()
    data = (tmp_path / "l.log").read_bytes()
    assert data.startswith(b"A" * 60) and data.endswith(b"B" * 10 + b"C" * 30)
    assert b"[evo: 90 bytes of output dropped" in data
    assert sink.tail() == "B" * 10 + "C" * 30
