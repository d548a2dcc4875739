"""The warm trusted evaluator (evo.warm_evaluator, evo.runner.Gate): started while the
genome exports its model, reading it only once the genome is gone, killed when unneeded."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import add_harness

from evo.evaluation import EvaluationSetup, evaluate_genome, sha256_file
from evo.harness import genome_view
from evo.limits import ProcessLimits
from evo.records import EvalState, FailureKind
from evo.runner import Gate, run_process
from evo.sandbox import SandboxUnavailableError, detect
from evo.warm_evaluator import EXPORT_STARTED

EXPLOITS = Path(__file__).resolve().parent / "exploits"


def _held(tmp_path: Path, code: str, gate: Gate, wall_limit_s: float = 30.0):
    results = []
    argv = [sys.executable, "-c", code]
    thread = threading.Thread(target=lambda: results.append(
        run_process(argv, tmp_path / "held.log", tmp_path, {"PATH": os.environ["PATH"]}, wall_limit_s, gate=gate)))
    thread.start()
    return thread, results


def test_a_held_process_waits_for_go_and_its_limit_counts_from_the_release(tmp_path):
    gate = Gate()
    thread, results = _held(tmp_path, "import sys; print('got', sys.stdin.readline().strip(), flush=True)", gate,
                            wall_limit_s=1.0)
    time.sleep(2.5)  # longer than its limit: time held does not count
    assert thread.is_alive()
    gate.release()
    thread.join(15)
    (result,) = results
    assert result.returncode == 0 and not result.timed_out
    assert "got go" in result.tail
    assert result.wall_s < 1.0


@pytest.mark.parametrize("released", [False, True])
def test_a_cancelled_gate_kills_the_process_held_or_released(tmp_path, released):
    gate = Gate()
    code = "import sys, time; sys.stdin.readline(); print('released', flush=True); time.sleep(300)"
    thread, results = _held(tmp_path, code, gate)
    time.sleep(1.0)
    if released:
        gate.release()
        time.sleep(1.0)
    gate.cancel()
    thread.join(15)
    assert not thread.is_alive()
    (result,) = results
    assert result.returncode is not None and result.returncode < 0 and not result.timed_out
    assert ("released" in result.tail) is released
    assert (result.wall_s == 0.0) is not released
    gate.release()  # too late: a cancelled gate stays cancelled
    assert not gate.released or released


# ---------------------------------------------------------------------------- in evaluate_genome


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> EvaluationSetup:
    project = add_harness(tmp_path_factory.mktemp("project"))
    cache = tmp_path_factory.mktemp("cache")
    env = {**os.environ, "EVO_CACHE_DIR": str(cache)}
    subprocess.run([sys.executable, "prepare.py", "--profile", "smoke"], cwd=project, env=env, check=True,
                   capture_output=True, timeout=300)
    saved = os.environ.get("EVO_CACHE_DIR")
    os.environ["EVO_CACHE_DIR"] = str(cache)
    try:
        view = genome_view(project / "prepare.py", "smoke", "sotu")
    finally:
        os.environ.pop("EVO_CACHE_DIR") if saved is None else os.environ.update(EVO_CACHE_DIR=saved)
    try:
        sandbox = detect("bwrap")
    except SandboxUnavailableError as exc:
        pytest.skip(f"bubblewrap cannot run here: {exc}")
    return EvaluationSetup(
        project, sha256_file(project / "prepare.py"), "smoke", "sotu", view.cache_dir, "trusted", sandbox,
        ProcessLimits(max_memory_mb=6144), view.data_files, (*view.hidden, project / "genomes"),
    )


def _evaluate(setup: EvaluationSetup, ending: str, genome_id: str, ready_limit: float | None = None):
    code = (EXPLOITS / "base.py").read_text() + "\n" + ending
    genome_dir = setup.project_dir / "genomes" / "run"
    genome_dir.mkdir(parents=True, exist_ok=True)
    env = {"EVO_PROFILE": "smoke", "EVO_DATASET": "sotu", "EVO_SEED": "1"}
    outcome = evaluate_genome(setup, code, genome_dir / f"{genome_id}.work", genome_dir / f"{genome_id}.log", env,
                              hard_limit_s=120.0, scoring_limit=None, ready_limit=ready_limit)
    return outcome, genome_dir


def _evaluators(genome_dir: Path) -> list[str]:
    """This test's evaluator processes still alive (their model folder is under ``genome_dir``)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "evo.evaluator --wait" in cmdline and str(genome_dir) in cmdline:
            found.append(cmdline)
    return found


def test_the_evaluator_is_ready_before_the_genome_ends_and_scores_its_model(setup):
    # the genome lingers after its export: the evaluator warms up meanwhile and waits
    outcome, genome_dir = _evaluate(setup, "honest_main()\nimport time\ntime.sleep(8)\n", "g0001")
    assert outcome.state is EvalState.COMPLETE, outcome.error
    # started when the harness began the export (not at the exit), it was waiting for seconds
    assert outcome.metrics["trusted_eval_ready_s"] > 1.0
    assert 1.5 < outcome.metrics["val_bpb"] < 9.0
    assert outcome.metrics["trusted_eval_wall_s"] < outcome.wall_s
    assert not list(genome_dir.glob("*.trusted.log")) and not list(genome_dir.glob(".*"))
    assert _evaluators(genome_dir) == []


def test_a_genome_that_fails_after_its_export_leaves_no_evaluator(setup):
    ending = f"print({EXPORT_STARTED!r}, flush=True)\nimport time\ntime.sleep(3)\nraise SystemExit(3)\n"
    outcome, genome_dir = _evaluate(setup, ending, "g0002")
    assert outcome.state is EvalState.FAIL and outcome.failure_kind is FailureKind.CRASH
    assert "val_bpb" not in outcome.metrics
    assert _evaluators(genome_dir) == []
    assert not list(genome_dir.glob("*.trusted.log"))


def test_a_model_folder_swapped_for_a_link_is_not_scored(setup):
    ending = (f"print({EXPORT_STARTED!r}, flush=True)\n"  # start the evaluator at once, before the swap
              "import os\n"
              "d = os.environ['EVO_EXPORT_DIR']\n"
              "os.makedirs(d + '.real')\n"
              "os.symlink(d + '.real', d)\n"  # the export goes through the link
              "honest_main()\n")
    outcome, genome_dir = _evaluate(setup, ending, "g0003")
    assert outcome.state is EvalState.FAIL and outcome.failure_kind is FailureKind.UNVERIFIABLE
    assert "exported no model" in outcome.error
    assert _evaluators(genome_dir) == []



def _locked_folders(base: Path) -> list[str]:
    """Run as a user that permissions bind: a genome's chmod 500 on its own folders, then
    the engine's move of the model and removal of the folders."""
    from evo.genome import remove_tree, unlock

    said = []
    ws, harness = base / "ws", base / "harness"
    (ws / "evo_model" / "deep").mkdir(parents=True)
    (ws / "evo_model" / "program.json").write_text("{}")
    harness.mkdir()
    for d in (ws / "evo_model" / "deep", ws / "evo_model", ws):
        d.chmod(0o500)  # what a genome can do to its own files
    try:
        os.rename(ws / "evo_model", harness / "model.d")
        said.append("moved while locked")
    except PermissionError:
        said.append("locked")
    unlock(ws)
    unlock(ws / "evo_model")
    os.rename(ws / "evo_model", harness / "model.d")
    said.append("moved")
    (harness / "model.d" / "deep").chmod(0o000)
    (harness / "model.d").chmod(0o500)
    remove_tree(harness)
    remove_tree(ws)
    said.append(f"left {harness.exists()} {ws.exists()}")
    return said


@pytest.mark.skipif(os.geteuid() != 0, reason="runs the check as another user, which needs root")
def test_folders_a_genome_locked_are_still_moved_and_removed():
    """A genome's chmod 500 on its workspace and model folder must neither stop the run (the
    move raised PermissionError) nor leave folders behind (checked as uid 65534: root
    ignores modes)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="evo-locked-"))
    base.chmod(0o777)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read)
            os.setuid(65534)
            os.write(write, "\n".join(_locked_folders(base)).encode())
            code = 0
        except BaseException as exc:  # noqa: BLE001
            os.write(write, repr(exc).encode())
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as pipe:
        said = pipe.read()
    _, status = os.waitpid(pid, 0)
    shutil.rmtree(base, ignore_errors=True)
    assert os.waitstatus_to_exitcode(status) == 0, said
    assert said.split("\n") == ["locked", "moved", "left False False"]


# ------------------------------------------------------------- the model-ready limit (evo.model_snapshot)

SLACK = ("_m, _t, _s = train_model(seconds=5 * TIME_BUDGET)\n"  # past the budget, well before a generous wall limit
         "_v = evaluate_model(_m, _t)\n"
         "print_summary(_v, TIME_BUDGET, _s, _m)\n")


def test_training_in_the_slack_after_the_budget_is_overtime(setup):
    """5x the budget of training, then an honest export: within the 120 s wall limit, but
    its model is ready long after the model-ready limit (an honest one's is ready in ~5 s)."""
    outcome, genome_dir = _evaluate(setup, SLACK, "g0005", ready_limit=9.0)
    assert outcome.state is EvalState.FAIL and outcome.failure_kind is FailureKind.OVERTIME, outcome.error
    assert "its model was exported" in outcome.error and "(9 s" in outcome.error
    assert outcome.metrics["model_ready_s"] > 15.0 and "val_bpb" not in outcome.metrics
    assert _evaluators(genome_dir) == []


def test_an_honest_genome_is_scored_within_the_ready_limit_and_cannot_print_its_ready_time(setup):
    outcome, _ = _evaluate(setup, "honest_main()\nprint('model_ready_s: 0.01')\n", "g0006", ready_limit=9.0)
    assert outcome.state is EvalState.COMPLETE, outcome.error
    assert 3.0 < outcome.metrics["model_ready_s"] < outcome.wall_s + 0.001  # the engine's clock, not the genome's line


def test_what_a_genome_does_to_its_export_afterwards_is_not_scored(setup):
    """Export on time, then rewrite the exported files through descriptors kept open (a
    stand-in for a better model trained later): the engine scores its copy of the first."""
    ending = ("_m, _t, _s = train_model()\n"
              "_v = evaluate_model(_m, _t)\n"
              "_d = os.environ['EVO_EXPORT_DIR']\n"
              "_kept = [open(os.path.join(_d, n), 'r+b') for n in ('program.json', 'state_dict.pt', 'constants.pt')]\n"
              "time.sleep(2.0)\n"
              "for _f in _kept:\n"
              "    _f.write(b'garbage' * 64); _f.flush()\n"
              "print_summary(_v, TIME_BUDGET, _s, _m)\n")
    outcome, _ = _evaluate(setup, ending, "g0007")
    assert outcome.state is EvalState.COMPLETE, outcome.error
    assert outcome.metrics["val_bpb"] > 1.5 and "trusted_eval_tokens" in outcome.metrics


def test_a_warm_started_genome_s_ready_time_counts_its_interpreter_s_imports(setup):
    """A warm genome's clock starts at its release, after the prelude imported torch; the
    seed's (cold) clock includes that. Its model_ready_s adds the prelude's import seconds,
    so warm genomes get no more training time than cold ones under the same limit."""
    from evo.evaluation import Placement, start_warm
    from evo.warm_start import takes

    genome_dir = setup.project_dir / "genomes" / "run"
    genome_dir.mkdir(parents=True, exist_ok=True)
    started = start_warm(setup, genome_dir / "_warm9.work", genome_dir / "_warm9.log", Placement("local"))
    time.sleep(6.0)  # its imports done: held
    base = (EXPLOITS / "base.py").read_text()  # without its one use of the environment (which would start it cold)
    code = base.replace('os.environ.get("EVO_EXPLOIT_DEVICE", "")', '""') + "\nhonest_main()\n"
    assert takes(code)
    env = {"EVO_PROFILE": "smoke", "EVO_DATASET": "sotu", "EVO_SEED": "1"}
    outcome = evaluate_genome(setup, code, genome_dir / "g0009.work", genome_dir / "g0009.log", env,
                              hard_limit_s=120.0, scoring_limit=None, started=started)
    assert outcome.state is EvalState.COMPLETE, outcome.error
    imports_s = outcome.metrics["warm_imports_s"]
    assert 0.3 < imports_s < 6.0  # torch's import, as the prelude timed it
    assert (genome_dir / "g0009.log").read_text().startswith("evo: this genome runs in an interpreter")
    # the copy was complete before the genome's exit (release-based clock), then the imports are added
    assert outcome.metrics["model_ready_s"] > 3.0 + imports_s
    assert outcome.metrics["model_ready_s"] <= outcome.wall_s + imports_s + 0.001


def test_only_the_first_evaluate_bpb_exports(setup):
    """A genome that evaluates mid-training and again at the end: the harness exports only
    at the first call (the one evo scores) and says so at the second."""
    ending = ("_m, _t, _s = train_model(seconds=1.0)\n"
              "evaluate_model(_m, _t)\n"
              "_m2, _t, _s = train_model(seconds=1.0)\n"
              "_v = evaluate_model(_m2, _t)\n"
              "print_summary(_v, 2.0, _s, _m2)\n")
    outcome, genome_dir = _evaluate(setup, ending, "g0010")
    assert outcome.state is EvalState.COMPLETE, outcome.error
    log = (genome_dir / "g0010.log").read_text()
    assert log.count("evo: exporting the model for trusted evaluation") == 1
    assert "called again, not exported again: evo scores the model exported by the first call" in log
