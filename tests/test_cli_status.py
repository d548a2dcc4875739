"""evo status at 80 and 200 columns, --wide and --json, on a fake-genome run."""

from __future__ import annotations

import io
import json
import re

import pytest
from fake_run import build_fake_run
from rich.console import Console

from evo.archive import Archive
from evo.cli import main
from evo.cli_status import load_status, render_status
from evo.locking import RunLock
from evo.noise import declared_best
from evo.operators.cst_tools import set_constants
from evo.results import best

LONG = ("DEPTH 3 -> 7 with a much longer explanation of why a deeper model should help at this budget, "
        "citing the scaling of depth against width at a fixed number of parameters and steps, end")


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    fake = build_fake_run(tmp_path_factory.mktemp("project"))
    top = best(fake.results())
    code = fake.archive.source(top.genome.source_sha256)
    long = fake.archive.add_genome(fake.run, 2, "manual", LONG, set_constants(code, {"DEPTH": 7}), (top.genome_id,))
    return fake, long.genome_id


def _render(fake, width: int, wide: bool = False) -> str:
    archive = Archive(fake.archive.path, read_only=True)
    view = load_status(archive, archive.get_run(fake.run), None, "stopped", top=0)
    console = Console(width=width, file=io.StringIO(), color_system=None, legacy_windows=False)
    render_status(view, console, wide=wide)
    return console.file.getvalue()


def _rows(text: str, results) -> dict[str, str]:
    """genome id -> the one leaderboard line that names it (fails if a genome has two lines)."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\s*\d*\s+(g\d{4})\b", line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} on two lines:\n{text}"
            rows[m.group(1)] = line
    assert set(rows) == {r.genome_id for r in results}
    return rows


def test_at_80_columns_every_number_is_whole_and_each_genome_one_line(fake):
    fake, long_id = fake
    text = _render(fake, 80)
    results = fake.results()
    assert max(len(line) for line in text.splitlines()) <= 80
    rows = _rows(text, results)
    for r in results:
        line = rows[r.genome_id]
        if r.val_bpb is not None:
            assert f" {r.val_bpb:.6f} " in line  # never cut mid-number
        assert r.state in line  # COMPLETE, FAIL, PENDING in full
    assert "FAIL (crash)" in rows[fake.crashed]
    assert re.search(re.escape(LONG[:20]) + r"[^ ]* [^ ]*…", rows[long_id]) and LONG not in text  # cut, one line
    header = next(line for line in text.splitlines() if "val_bpb" in line and "genome" in line)
    assert "description" in header and "state" in header and "vs seed" in header
    assert not any(col in header for col in ("wall s", "operator", "± std"))  # the least important went first
    assert "gen" not in header.split()


def test_at_200_columns_every_column_is_shown(fake):
    fake, long_id = fake
    text = _render(fake, 200)
    assert max(len(line) for line in text.splitlines()) <= 200
    header = next(line for line in text.splitlines() if "val_bpb" in line and "genome" in line)
    for col in ("#", "genome", "gen", "operator", "description", "val_bpb", "± std", "n", "vs seed", "state", "wall s"):
        assert col in header
    rows = _rows(text, fake.results())
    assert "manual" in rows[long_id]  # the operator column
    # the fake genomes report training seconds only: the rest of the wall time is "not training"
    complete = [e for e in fake.archive.evaluations(fake.run) if e.state.value == "COMPLETE"]
    line = next(line for line in text.splitlines() if line.startswith("seconds per evaluation"))
    assert f"median of the latest {len(complete)}," in line and "training 0.0, not training " in line
    assert "start-up" not in line


def test_wide_shows_whole_descriptions_even_on_a_narrow_terminal(fake):
    fake, long_id = fake
    text = _render(fake, 80, wide=True)
    rows = _rows(text, fake.results())
    assert LONG in rows[long_id] and "wall s" in text


def test_json_holds_the_run_noise_floor_best_and_every_genome(fake, capsys):
    fake, long_id = fake
    assert main(["status", "--project", str(fake.project), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    results = {r.genome_id: r for r in fake.results()}
    assert data["run"]["name"] == fake.run and data["run"]["profile"] == "smoke" and data["run"]["state"] == "stopped"
    assert [g["id"] for g in data["genomes"]] == list(results)
    for g in data["genomes"]:
        r = results[g["id"]]
        assert g["parents"] == list(r.genome.parents) and g["operator"] == r.genome.operator
        assert g["description"] == r.genome.description and g["state"] == r.state
        assert g["val_bpb"]["n"] == r.n and g["val_bpb"]["mean"] == r.val_bpb
    assert next(g for g in data["genomes"] if g["id"] == fake.crashed)["failure_kind"] == "crash"
    assert next(g for g in data["genomes"] if g["id"] == long_id)["description"] == LONG
    from evo.config import RunConfig

    config = RunConfig.from_json(fake.archive.get_run(fake.run).config_json)
    assert (data["run"]["generations"], data["run"]["max_evaluations"]) == (config.generations, config.max_evaluations)
    top = declared_best(list(results.values()), config)
    assert data["declared_best"]["genome_id"] == top.genome_id
    assert data["declared_best"]["val_bpb"] == top.val_bpb
    sigma = data["noise_floor"]
    assert sigma is None or sigma["sigma_90"][0] <= sigma["sigma"] <= sigma["sigma_90"][1]
    assert data["running"] == [] and data["states"]["PENDING"] == 2
    # the slot's duty cycle: training seconds the genomes report over the engine's wall span
    finished = [e for e in fake.archive.evaluations(fake.run) if e.finished_at is not None]
    (slot,) = data["slots"]
    span = (max(e.finished_at for e in finished) - min(e.started_at for e in finished)).total_seconds()
    assert slot["device"] == "cpu" and slot["evaluations"] == len(finished)
    reported = sum(min(e.metrics.get("training_seconds", 0), e.wall_s or 0) for e in finished)
    assert slot["training_s"] == pytest.approx(reported, abs=0.1)
    assert slot["wall_s"] == pytest.approx(span, abs=0.1)
    assert slot["duty_cycle"] == pytest.approx(slot["training_s"] / slot["wall_s"], abs=1e-3)
    assert 0 <= slot["idle_gap_median_s"] <= slot["idle_gap_max_s"]
    assert set(data["operators"]) == {"optuna", "hyperparam", "crossover"}
    split = data["time_per_evaluation"]
    complete = [e for e in finished if e.state.value == "COMPLETE"]
    assert split["evaluations"] == len(complete) and split["startup_s"] is None and split["eval_s"] is None
    assert split["wall_s"] == pytest.approx(sorted(e.wall_s for e in complete)[len(complete) // 2], abs=0.5)
    shares = [op["share"] for op in data["operators"].values()]
    assert sum(shares) == pytest.approx(1.0, abs=1e-3) and all(share > 0 for share in shares)


def test_evo_status_prints_the_leaderboard_fitted_to_its_console(fake, capsys, monkeypatch):
    fake, long_id = fake
    import evo.cli_common as common

    monkeypatch.setattr(common, "console", Console(width=80, color_system=None))
    monkeypatch.setattr("evo.cli_views.console", common.console)
    assert main(["status", "--project", str(fake.project)]) == 0
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" in out and "COMPLETE" in out


def test_running_slots_and_the_rows_left_out_are_shown(tmp_path, capsys):
    from test_cli_runs import SEED, add_run

    archive = Archive(tmp_path / "archive" / "evo.duckdb")
    ids = add_run(archive, tmp_path, "r", children=1)
    child = archive.add_genome("r", 1, "hyperparam", "LR 0.05 -> 0.06", SEED.replace("0.04", "0.06"), (ids[1],))
    archive.start_evaluation("r", child.genome_id, 42, "cpu:slot1", tmp_path / "x.log")
    with RunLock(archive.path, "r"):  # an engine runs the run
        assert main(["status", "--project", str(tmp_path), "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        (slot,) = data["running"]
        assert (slot["genome_id"], slot["slot"], slot["attempt"]) == (child.genome_id, "cpu:slot1", 1)
        assert 0 <= slot["elapsed_s"] < 60 and slot["budget_left_s"] <= 1.0 and data["interrupted"] == []
        assert main(["status", "--project", str(tmp_path), "--top", "1"]) == 0
        out = capsys.readouterr().out
    assert "running now (1 slot(s)):" in out and f"cpu:slot1: {child.genome_id} (attempt 1) running" in out
    board = out.split("running now")[1].split("#  genome")[1]
    assert re.search(r"^1\s+g0001\s", board, re.M) and "g0000" not in board  # one row, the best
    assert "... 2 more (use --top 0 for all)" in out
    # the engine died (kill -9) and left the evaluation RUNNING: nothing runs now
    assert main(["status", "--project", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["running"] == [] and data["interrupted"] == [
        {"genome_id": child.genome_id, "attempt": 1, "slot": "cpu:slot1"}]
    assert data["states"]["INTERRUPTED"] == 1 and "RUNNING" not in data["states"]
    assert next(g for g in data["genomes"] if g["id"] == child.genome_id)["state"] == "INTERRUPTED"
    assert main(["status", "--project", str(tmp_path), "--top", "0"]) == 0
    out = capsys.readouterr().out
    assert "running now" not in out and "INTERRUPTED 1" in out and "RUNNING" not in out
    assert f"interrupted: the engine stopped during {child.genome_id} (attempt 1); `evo resume --run r`" in out


def test_the_top_rows_are_the_first_rows_of_the_whole_ranking():
    """ranked(nodes, top) picks the top rows without sorting every genome (100,000 in a big
    run): the same rows, in the same order, as the head of the full ranking."""
    import random

    from evo.cli_status import ranked
    from evo.lineage import Node

    rng = random.Random(0)
    nodes = []
    for i in range(300):
        bpb = rng.choice([None, 1.5, round(rng.uniform(1.0, 2.0), 2)])  # ties and genomes without a score
        nodes.append(Node(f"g{i:04d}", i, 0, "op", "", (), "", "COMPLETE" if bpb else "FAIL", None, bpb,
                          0.0 if bpb else None, 1 if bpb else 0, i))
    full = ranked(nodes)
    assert [n.genome_id for n in full] == [n.genome_id for n in sorted(
        (n for n in nodes if n.is_complete), key=lambda n: (n.val_bpb, n.index))] + [
        n.genome_id for n in nodes if not n.is_complete]
    for top in (1, 30, len([n for n in nodes if n.is_complete]), 299, 300, 500):
        assert ranked(nodes, top) == full[:top]


def test_a_declared_best_with_one_reading_shows_no_spread(tmp_path, capsys):
    from test_cli_runs import add_run

    add_run(Archive(tmp_path / "archive" / "evo.duckdb"), tmp_path, "one", children=1, generations=1, population=2,
            noise_replicates=1)
    assert main(["status", "--project", str(tmp_path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("declared best:"))
    assert line == "declared best: g0000 val_bpb 2.000000 (n=1)"  # not "± 0.000000": one reading has no spread
    assert main(["status", "--project", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["declared_best"]["val_bpb_std"] is None and data["genomes"][0]["val_bpb"]["std"] is None
    assert len(data["run"]["created_at"]) == len("2026-12-03T15:09:34")  # seconds, as evo runs --json


def test_a_running_held_out_evaluation_is_a_running_slot_in_the_json(tmp_path, capsys):
    from test_cli_runs import add_run

    archive = Archive(tmp_path / "archive" / "evo.duckdb")
    seed_id, _ = add_run(archive, tmp_path, "h", children=1)
    archive.start_evaluation("h", seed_id, 7, "cpu", tmp_path / "h.log", held_out=True)
    with RunLock(archive.path, "h"):
        assert main(["status", "--project", str(tmp_path), "--json"]) == 0
        (slot,) = json.loads(capsys.readouterr().out)["running"]
        assert main(["status", "--project", str(tmp_path)]) == 0
        out = capsys.readouterr().out
    assert (slot["genome_id"], slot["slot"], slot["held_out"]) == (seed_id, "cpu", True)
    assert "a held-out evaluation of the declared best" in out  # the text says the same


def test_the_duty_cycle_leaves_out_the_time_a_run_was_stopped(tmp_path):
    """A slot's wall time and idle gaps span the run's working time: the hours between a
    Ctrl-C (or kill -9) and `evo resume` are downtime, and an INTERRUPTED attempt is no
    evaluation of the slot's."""
    import datetime as dt

    from evo.config import RunConfig
    from evo.records import EvalState, FailureKind, Outcome

    archive = Archive(tmp_path / "evo.duckdb")
    archive.create_run(RunConfig(run="r", profile="smoke", fitness="reported"), 1.0, tmp_path)
    t0 = dt.datetime(2026, 1, 1)
    # (start s, end s, state): two evaluations, a stop during the third, an hour down, two more
    spans = [(0, 10, "COMPLETE"), (11, 20, "COMPLETE"), (21, 25, "INTERRUPTED"), (3600, 3610, "COMPLETE"),
             (3614, 3620, "COMPLETE")]
    for i, (start, end, state) in enumerate(spans):
        genome = archive.add_genome("r", 0, "seed" if i == 0 else "hyperparam", f"g{i}", f"X = {i}\n")
        ev = archive.start_evaluation("r", genome.genome_id, 42, "cpu", tmp_path / f"{i}.log")
        outcome = (Outcome(EvalState.COMPLETE, end - start, 0, {"val_bpb": 1.0, "training_seconds": 5.0}, None, None, "")
                   if state == "COMPLETE" else
                   Outcome(EvalState.INTERRUPTED, 0.0, None, {}, FailureKind.INTERRUPTED, "stopped", None))
        archive.finish_evaluation(ev.eval_id, outcome)
        with archive._tx() as con:
            con.execute("UPDATE evaluations SET started_at = ?, finished_at = ? WHERE eval_id = ?",
                        [t0 + dt.timedelta(seconds=start), t0 + dt.timedelta(seconds=end), ev.eval_id])
    ((device, n, training_s, wall_s, gap_median, gap_max),) = archive.duty_cycle("r")
    assert (device, n, training_s) == ("cpu", 4, 20.0)
    assert wall_s == pytest.approx(10 + 9 + 10 + 6 + 1 + 4)  # the spans and the gaps of 1 and 4 s, not the hour
    assert (gap_median, gap_max) == (pytest.approx(2.5), pytest.approx(4.0))
