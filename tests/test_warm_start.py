"""A slot's next genome interpreter, started early and held (evo.warm_start): the genome
runs in it with its own environment and limits, a genome that touches the environment
starts cold, a lost or unneeded one leaves nothing behind, and a local pool hands it over."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from conftest import add_harness

from evo import compile_cache
from evo import genome as genome_files
from evo.evaluation import EvaluationSetup, Placement, evaluate_genome, sha256_file, start_warm
from evo.limits import ProcessLimits
from evo.records import EvalState, FailureKind
from evo.sandbox import SandboxUnavailableError, detect
from evo.warm_evaluator import EXPORT_STARTED
from evo.warm_start import STARTED_WARM, takes
from evo.workers.base import EvaluationJob
from evo.workers.local import LocalPool

# Says whether torch was imported before its first line ran, and what the harness read
# from the evaluation's environment (EVO_SEED), then prints a summary block.
GENOME = '''\
import sys
WARM = "torch" in sys.modules
import time
import prepare
print("warm", WARM, "seed", prepare.SEED, "argv", sys.argv, "main", __name__, flush=True)
time.sleep(SLEEP_S)
print("---")
print("val_bpb: 1.5")
print("training_seconds: 0.1")
'''
ENV = {"EVO_PROFILE": "smoke", "EVO_DATASET": "sotu"}


def genome(sleep_s: float = 0.0, extra: str = "") -> str:
    return f"SLEEP_S = {sleep_s}\n{extra}{GENOME}"


def _setup(project: Path, sandbox: str, warm_start: bool = True) -> EvaluationSetup:
    add_harness(project)
    try:
        box = detect(sandbox)
    except SandboxUnavailableError as exc:
        pytest.skip(f"bubblewrap cannot run here: {exc}")
    return EvaluationSetup(project, sha256_file(project / "prepare.py"), "smoke", "sotu", project / "cache",
                           "reported", box, ProcessLimits(max_memory_mb=4096), warm_start=warm_start)


@pytest.fixture(params=["none", "bwrap"])
def setup(tmp_path, request) -> EvaluationSetup:
    return _setup(tmp_path, request.param)


def _held(setup: EvaluationSetup, name: str = "_warm0"):
    genome_dir = setup.project_dir / "genomes"
    genome_dir.mkdir(exist_ok=True)
    started = start_warm(setup, genome_dir / f"{name}.work", genome_dir / f"{name}.log", Placement("local"))
    return started, genome_dir


def _evaluate(setup, code, genome_dir, started, seed="7", limit_s=60.0, gid="g0001"):
    return evaluate_genome(setup, code, genome_dir / f"{gid}.work", genome_dir / f"{gid}.log",
                           {**ENV, "EVO_SEED": seed}, hard_limit_s=limit_s, scoring_limit=None, started=started)


def test_a_genome_runs_in_the_held_interpreter_with_its_own_environment(setup):
    started, genome_dir = _held(setup)
    workspace = started.workspace
    time.sleep(8.0)  # its imports done, and held longer than the genome's limit below: time held does not count
    outcome = _evaluate(setup, genome(), genome_dir, started, seed="7", limit_s=5.0)
    assert outcome.state is EvalState.COMPLETE, outcome.error
    log = (genome_dir / "g0001.log").read_text()
    assert "warm True seed 7 argv ['train.py'] main __main__" in log  # torch was there; EVO_SEED reached prepare
    assert log.startswith(STARTED_WARM)  # the log says how it ran
    assert outcome.wall_s < 5.0
    assert not workspace.exists() and not list(genome_dir.glob("_warm*"))  # its workspace and log are gone


def test_a_genome_that_mentions_the_environment_starts_cold(tmp_path):
    setup = _setup(tmp_path, "none")
    started, genome_dir = _held(setup)
    code = genome(extra="import os\nos.environ.setdefault('OMP_DYNAMIC', 'false')\n")
    assert not takes(code) and takes(genome())
    outcome = _evaluate(setup, code, genome_dir, started)
    assert outcome.state is EvalState.COMPLETE, outcome.error
    assert "warm False seed 7" in (genome_dir / "g0001.log").read_text()
    assert not started.workspace.exists() and not started.ready()  # the held one was closed


def test_the_wall_clock_limit_counts_from_the_release(tmp_path):
    setup = _setup(tmp_path, "none")
    started, genome_dir = _held(setup)
    outcome = _evaluate(setup, genome(sleep_s=30.0), genome_dir, started, limit_s=2.0)
    assert outcome.state is EvalState.TIMEOUT and outcome.failure_kind is FailureKind.TIMEOUT
    assert 2.0 <= outcome.wall_s < 8.0
    assert "warm True" in (genome_dir / "g0001.log").read_text()


def _processes_in(folder: Path) -> list[int]:
    """Processes whose working folder is ``folder`` or below it."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd == str(folder) or cwd.startswith(f"{folder}/"):
                found.append(int(entry.name))
    return found


def test_an_interpreter_killed_while_held_means_a_cold_start_not_a_failure(tmp_path):
    setup = _setup(tmp_path, "none")
    started, genome_dir = _held(setup)
    assert started.gate.holding.wait(30)
    (pid,) = _processes_in(started.workspace)
    os.kill(pid, signal.SIGKILL)  # as if the prelude died (out of memory, say) while held
    outcome = _evaluate(setup, genome(), genome_dir, started)
    assert outcome.state is EvalState.COMPLETE, outcome.error
    log = (genome_dir / "g0001.log").read_text()
    assert "warm False seed 7" in log and STARTED_WARM not in log
    assert _processes_in(genome_dir) == [] and not list(genome_dir.glob("*.work"))


def test_a_warm_genome_that_crashes_fails_as_it_would_cold(tmp_path):
    setup = _setup(tmp_path, "none")
    started, genome_dir = _held(setup)
    outcome = _evaluate(setup, genome(extra="raise ValueError('shapes do not match')\n"), genome_dir, started)
    assert outcome.state is EvalState.FAIL and outcome.failure_kind is FailureKind.CRASH
    assert outcome.returncode == 1 and "ValueError: shapes do not match" in outcome.error
    log = (genome_dir / "g0001.log").read_text()
    assert f'File "{started.workspace}/train.py", line 2' in log  # the genome's own file and line


def test_an_unneeded_interpreter_is_killed_and_leaves_nothing(tmp_path):
    setup = _setup(tmp_path, "none")
    started, genome_dir = _held(setup)
    assert started.wait_held() and started.workspace.is_dir() and (started.workspace / "prepare.py").is_file()
    started.close()
    assert not started.ready() and not started._thread.is_alive()
    assert not list(genome_dir.iterdir())
    # what a killed engine leaves (a workspace and a log) is removed by the next start
    (genome_dir / "_warm3.work").mkdir()
    (genome_dir / "_warm3.log").write_text("")
    (genome_dir / "g0001.log").write_text("kept")
    genome_files.remove_workspaces(genome_dir)
    assert [p.name for p in genome_dir.iterdir()] == ["g0001.log"]


def test_the_seeds_compile_cache_reaches_a_warm_start_made_before_it_was_kept(tmp_path):
    shared = tmp_path / "shared"
    workspace = tmp_path / "ws"
    workspace.mkdir()
    compile_cache.give(shared, workspace)  # at the spawn: no shared cache yet
    assert not any((workspace / compile_cache.FOLDER).iterdir())
    (workspace / compile_cache.FOLDER / "written-by-an-import").write_text("")  # not a copy of the seed's
    (shared / "fxgraph").mkdir(parents=True)
    (shared / "fxgraph" / "entry").write_text("seed")
    compile_cache.give(shared, workspace)  # at the release: the seed's cache is copied in
    assert (workspace / compile_cache.FOLDER / "fxgraph" / "entry").read_text() == "seed"
    (shared / "fxgraph" / "entry").write_text("changed")
    compile_cache.give(shared, workspace)  # a cache it has already is not copied again
    assert (workspace / compile_cache.FOLDER / "fxgraph" / "entry").read_text() == "seed"


def _jobs(genome_dir: Path, codes: list[str]) -> list[EvaluationJob]:
    return [EvaluationJob(i, f"g{i:04d}", code, genome_dir / f"g{i:04d}.log", {**ENV, "EVO_SEED": str(40 + i)},
                          hard_limit_s=60.0, scoring_limit_s=None) for i, code in enumerate(codes, start=1)]


@pytest.mark.parametrize("warm_start", [True, False])
def test_a_local_slot_hands_its_warm_interpreter_to_its_next_job(tmp_path, warm_start):
    setup = _setup(tmp_path, "none", warm_start=warm_start)
    genome_dir = tmp_path / "genomes"
    genome_dir.mkdir()
    pool = LocalPool(setup, [Placement("cpu")], genome_dir)
    try:
        for job in _jobs(genome_dir, [genome(), genome()]):
            pool.submit(job)
            (finished,) = pool.wait(120.0)
            assert finished.outcome is not None and finished.outcome.state is EvalState.COMPLETE
            assert isinstance(finished.started_s, float) and finished.started_s <= finished.finished_s
        assert bool(list(genome_dir.glob("_warm*.work"))) is warm_start  # the third job's, held
    finally:
        pool.close()
    assert "warm False seed 41" in (genome_dir / "g0001.log").read_text()  # a slot's first job starts cold
    assert f"warm {warm_start} seed 42" in (genome_dir / "g0002.log").read_text()
    assert not list(genome_dir.glob("_warm*")) and not list(genome_dir.glob("*.work"))


def test_warm_starts_are_on_for_gpu_slots_by_default_and_follow_the_flag():
    from evo.cli import build_parser
    from evo.workers import Execution

    assert Execution().warm(gpu=True) and not Execution().warm(gpu=False)
    assert Execution(warm_start=True).warm(gpu=False) and not Execution(warm_start=False).warm(gpu=True)
    parser = build_parser()
    assert parser.parse_args(["start"]).warm_start is None
    assert parser.parse_args(["start", "--warm-start"]).warm_start is True
    assert parser.parse_args(["resume", "--no-warm-start"]).warm_start is False


def test_closing_the_pool_while_a_warm_genome_runs_leaves_nothing_running(tmp_path):
    setup = _setup(tmp_path, "none")
    genome_dir = tmp_path / "genomes"
    genome_dir.mkdir()
    pool = LocalPool(setup, [Placement("cpu")], genome_dir)
    first, second = _jobs(genome_dir, [genome(), genome(sleep_s=60.0)])
    pool.submit(first)
    assert pool.wait(120.0)[0].outcome.state is EvalState.COMPLETE
    pool.submit(second)
    deadline = time.monotonic() + 60
    log = genome_dir / "g0002.log"
    while not (log.is_file() and "warm True" in log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.2)  # the second genome is running, warm
    pool.close()
    assert _processes_in(genome_dir) == []
    assert not list(genome_dir.glob("*.work")) and not list(genome_dir.glob("_warm*"))
    assert "warm True seed 42" in (genome_dir / "g0002.log").read_text()


# A genome that says its training is over (any genome can print the line), so that its slot
# starts the next genome's interpreter, then looks for that interpreter's workspace.
SNOOP = f"""\
import sys, time
print({EXPORT_STARTED!r}, flush=True)
time.sleep(6.0)
try:
    import os as _o
    print("beside me:", sorted(_o.listdir(_o.path.dirname(_o.getcwd()))), flush=True)
except OSError as exc:
    print("beside me: unreadable", exc, flush=True)
print("---")
print("val_bpb: 1.5")
"""


@pytest.mark.parametrize("sandbox", ["bwrap", "none"])
def test_a_running_genome_cannot_see_the_next_genomes_held_workspace(tmp_path, sandbox):
    setup = _setup(tmp_path, sandbox)
    genome_dir = tmp_path / "genomes"
    genome_dir.mkdir()
    pool = LocalPool(setup, [Placement("cpu")], genome_dir)
    try:
        pool.submit(_jobs(genome_dir, [SNOOP])[0])
        (finished,) = pool.wait(120.0)
        assert finished.outcome is not None and finished.outcome.state is EvalState.COMPLETE, finished.outcome
    finally:
        pool.close()
    seen = next(line for line in (genome_dir / "g0001.log").read_text().splitlines() if line.startswith("beside me:"))
    # unconfined (the control) it sees the held workspace; sandboxed the genomes' folder is hidden
    assert ("_warm" in seen) is (sandbox == "none"), seen
