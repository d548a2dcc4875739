"""SIGTERM or Ctrl-C (SIGINT) during a run: exit status 130, a hint to resume, nothing lost,
no abort (a run once died of SIGABRT after saying the archive was consistent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import FAKE_GENOME, add_harness

from evo.archive import Archive
from evo.operators.cst_tools import set_constants
from evo.records import EvalState


def _default_sigint():
    """Python ignores SIGINT in a process that starts with it ignored, as a background job of
    a non-interactive shell does (pytest run with ``&``): the engine must see Ctrl-C here."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_run_with_status_130_and_a_consistent_archive(tmp_path, signum):
    project = add_harness(tmp_path)
    (project / "seed.py").write_text(set_constants(FAKE_GENOME, {"SLEEP_S": 0.3}))
    archive_path = project / "archive" / "evo.duckdb"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    engine = subprocess.Popen(
        [sys.executable, "-m", "evo", "start", "--project", str(project), "--profile", "smoke", "--fitness",
         "reported", "--seed-genome", "seed.py", "--population", "4", "--run", "sig", "--sandbox", "none"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_default_sigint,
    )
    deadline = time.monotonic() + 120
    try:
        while True:  # wait for a few finished evaluations and one running
            assert engine.poll() is None, engine.stdout.read()
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.3)
            if not archive_path.exists():
                continue
            try:
                archive = Archive(archive_path, read_only=True)
                evaluations = archive.evaluations("sig") if archive.list_runs() else []
            except Exception:  # noqa: BLE001 -- the engine holds the file for a moment
                continue
            finished = [e for e in evaluations if e.state.is_finished]
            if len(finished) >= 4 and any(e.state is EvalState.RUNNING for e in evaluations):
                break
        engine.send_signal(signum)
        out, _ = engine.communicate(timeout=60)
    finally:
        if engine.poll() is None:
            engine.kill()
    assert engine.returncode == 130, out
    assert "evo resume" in out and "Traceback" not in out and "Abort" not in out, out
    archive = Archive(archive_path, read_only=True)
    evaluations = archive.evaluations("sig")
    assert not [e for e in evaluations if e.state is EvalState.RUNNING]  # the one cut short is INTERRUPTED
    assert sum(e.state is EvalState.COMPLETE for e in evaluations) >= 4
