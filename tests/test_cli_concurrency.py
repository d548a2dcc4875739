"""One engine per project: a second start or resume is refused with the running run's name and pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from conftest import add_harness
from test_cli_runs import add_run

from evo.archive import Archive
from evo.cli import main
from evo.locking import ProjectBusyError, RunLock, RunLockedError, running_engines


@pytest.fixture
def archive_path(tmp_path):
    path = tmp_path / "archive" / "evo.duckdb"
    path.parent.mkdir()
    return path


def _lock_files(archive_path):
    return sorted(p.name for p in archive_path.parent.glob("*.lock"))


def test_a_second_run_is_refused_unless_concurrency_is_allowed(archive_path):
    with RunLock(archive_path, "one"):
        with pytest.raises(ProjectBusyError) as refused:
            with RunLock(archive_path, "two"):
                pass
        assert "'one'" in str(refused.value) and f"pid {os.getpid()}" in str(refused.value)
        assert "--allow-concurrent" in str(refused.value)
        with RunLock(archive_path, "two", allow_concurrent=True):
            assert {h.run for h in running_engines(archive_path)} == {"one", "two"}
        with pytest.raises(RunLockedError, match="'one' is already running"):  # never twice on one run
            with RunLock(archive_path, "one", allow_concurrent=True):
                pass
    assert _lock_files(archive_path) == ["evo.duckdb.lock"]  # one file per project is left, not one per run
    assert running_engines(archive_path) == []


def test_a_lock_left_by_a_dead_engine_is_not_running_and_is_cleaned_up(archive_path):
    stale = archive_path.with_name("evo.duckdb.crashed.lock")
    stale.write_text("999999\n")  # what kill -9 leaves: a file nobody holds
    assert running_engines(archive_path) == []
    assert stale.exists()  # readers touch nothing
    with RunLock(archive_path, "next"):
        assert not stale.exists()
    assert _lock_files(archive_path) == ["evo.duckdb.lock"]


HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from evo.locking import RunLock
    with RunLock(Path(sys.argv[1]), sys.argv[2]):
        print("ready", flush=True)
        time.sleep(600)
    """
)


@pytest.fixture
def engine(tmp_path, archive_path):
    """Another process holding the lock of run 'alpha', recorded in the archive."""
    add_run(Archive(archive_path), tmp_path, "alpha")
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(archive_path), "alpha"], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait(timeout=30)


def test_evo_start_and_resume_are_refused_while_another_engine_runs(tmp_path, archive_path, engine, capsys,
                                                                   fake_genome):
    add_harness(tmp_path)
    (tmp_path / "seed_train.py").write_text(fake_genome)
    assert main(["start", "--project", str(tmp_path), "--run", "beta", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'alpha'" in err and f"pid {engine.pid}" in err and "--allow-concurrent" in err
    assert [r.run for r in Archive(archive_path, read_only=True).list_runs()] == ["alpha"]  # nothing recorded
    add_run(Archive(archive_path), tmp_path, "gamma")
    assert main(["resume", "--project", str(tmp_path), "--run", "gamma"]) == 2
    assert "'alpha'" in capsys.readouterr().err
    assert main(["resume", "--project", str(tmp_path), "--run", "alpha", "--allow-concurrent"]) == 2
    assert f"'alpha' is already running (pid {engine.pid})" in capsys.readouterr().err
    assert main(["runs", "--project", str(tmp_path), "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["alpha"]["state"] == "running" and rows["alpha"]["engine_pid"] == engine.pid
    engine.send_signal(signal.SIGKILL)
    engine.wait(timeout=30)
    assert main(["runs", "--project", str(tmp_path), "--json"]) == 0
    assert {r["name"]: r["state"] for r in json.loads(capsys.readouterr().out)}["alpha"] == "stopped"


def test_start_refuses_a_run_name_that_cannot_name_files(tmp_path, capsys):
    assert main(["start", "--project", str(tmp_path), "--run", "../escape"]) == 2
    assert "a run name is" in capsys.readouterr().err
    assert not (tmp_path / "archive").exists()
