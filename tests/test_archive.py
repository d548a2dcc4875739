from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from evo.archive import Archive, ArchiveError
from evo.config import RunConfig
from evo.records import EvalState, FailureKind, Outcome


def _outcome(bpb: float = 1.5) -> Outcome:
    return Outcome(EvalState.COMPLETE, 3.0, 0, {"val_bpb": bpb, "training_seconds": 2.0}, None, None, "tail")


@pytest.fixture
def archive(tmp_path):
    a = Archive(tmp_path / "a" / "evo.duckdb")
    a.create_run(RunConfig(run="r1", profile="smoke"), 3.0, tmp_path)
    return a


def test_run_config_round_trips(archive):
    record = archive.get_run("r1")
    assert record.profile == "smoke" and record.time_budget_s == 3.0
    assert RunConfig.from_json(record.config_json) == RunConfig(run="r1", profile="smoke")
    with pytest.raises(ArchiveError, match="already exists"):
        archive.create_run(RunConfig(run="r1", profile="smoke"), 3.0, ".")


def test_genome_source_and_lineage_are_recorded_together(archive):
    seed = archive.add_genome("r1", 0, "seed", "seed genome", "X = 1\n")
    child = archive.add_genome("r1", 0, "hyperparam", "X 1 -> 2", "X = 2  # two\n", parents=[seed.genome_id])
    assert (seed.genome_id, child.genome_id) == ("g0000", "g0001")
    assert archive.source(child.source_sha256) == "X = 2  # two\n"
    assert archive.edges("r1") == [("g0000", "g0001")]
    assert archive.genome("r1", "g0001").parents == ("g0000",)
    with pytest.raises(ArchiveError, match="parent"):
        archive.add_genome("r1", 1, "hyperparam", "bad", "X = 3\n", parents=["g9999"])
    assert len(archive.genomes("r1")) == 2  # the failed insert left nothing behind


def test_normalized_hash_ignores_comments_and_formatting(archive):
    a = archive.add_genome("r1", 0, "seed", "a", "X = 1\n")
    b = archive.add_genome("r1", 0, "seed", "b", "X  =  1   # same experiment\n")
    c = archive.add_genome("r1", 0, "seed", "c", "X = 2\n")
    assert a.normalized_sha256 == b.normalized_sha256 != c.normalized_sha256
    assert a.source_sha256 != b.source_sha256


def test_evaluation_lifecycle_finishes_exactly_once(archive, tmp_path):
    g = archive.add_genome("r1", 0, "seed", "seed", "X = 1\n")
    ev = archive.start_evaluation("r1", g.genome_id, 42, "cpu", tmp_path / "g.log")
    assert ev.state is EvalState.RUNNING and ev.attempt == 1
    with pytest.raises(ArchiveError, match="already being evaluated"):
        archive.start_evaluation("r1", g.genome_id, 42, "cpu", tmp_path / "g.log")
    done = archive.finish_evaluation(ev.eval_id, _outcome(1.25))
    assert done.state is EvalState.COMPLETE and done.val_bpb == 1.25 and done.overhead_s == 1.0
    with pytest.raises(ArchiveError, match="never change"):
        archive.finish_evaluation(ev.eval_id, _outcome(0.1))
    assert archive.evaluation(ev.eval_id).val_bpb == 1.25


def test_time_split_gives_medians_of_the_latest_complete_evaluations(archive, tmp_path):
    assert archive.time_split("r1").evaluations == 0
    g = archive.add_genome("r1", 0, "seed", "seed", "X = 1\n")
    walls = (40.0, 44.0, 100.0, 42.0)
    for i, wall in enumerate(walls):
        ev = archive.start_evaluation("r1", g.genome_id, 42 + i, "cpu", tmp_path / f"g{i}.log")
        metrics = {"val_bpb": 1.5, "training_seconds": 30.0, "startup_seconds": wall - 35.0, "eval_seconds": 4.0,
                   "trusted_eval_s": 10.0 + i}
        state = EvalState.FAIL if wall == 100.0 else EvalState.COMPLETE  # only COMPLETE ones count
        archive.finish_evaluation(ev.eval_id, Outcome(state, wall, 0, metrics, None, None, "tail"))
    split = archive.time_split("r1")
    assert (split.evaluations, split.wall_s, split.training_s, split.startup_s, split.eval_s) == (3, 42.0, 30.0, 7.0, 4.0)
    assert split.trusted_eval_s == 11.0
    latest = archive.time_split("r1", latest=1)  # the newest COMPLETE one alone
    assert (latest.evaluations, latest.wall_s, latest.trusted_eval_s) == (1, 42.0, 13.0)
    ev = archive.start_evaluation("r1", g.genome_id, 50, "cpu", tmp_path / "g9.log")
    metrics = {"val_bpb": 1.5, "training_seconds": 30.0, "trusted_eval_s": 1.0, "trusted_eval_wall_s": 4.0}
    archive.finish_evaluation(ev.eval_id, Outcome(EvalState.COMPLETE, 40.0, 0, metrics, None, None, "tail"))
    assert archive.time_split("r1", latest=1).trusted_eval_s == 4.0  # the evaluator process's wall clock first


def test_interrupt_running_marks_stale_evaluations(archive, tmp_path):
    g = archive.add_genome("r1", 0, "seed", "seed", "X = 1\n")
    ev = archive.start_evaluation("r1", g.genome_id, 42, "cpu", tmp_path / "g.log")
    (stale,) = archive.interrupt_running("r1", "engine died")
    assert stale.eval_id == ev.eval_id and stale.state is EvalState.INTERRUPTED
    assert stale.failure_kind == FailureKind.INTERRUPTED.value
    again = archive.start_evaluation("r1", g.genome_id, 42, "cpu", tmp_path / "g2.log")
    assert again.attempt == 2


def test_reader_in_another_process_gets_through_between_writes(archive, tmp_path):
    """`evo status` opens the file while `evo start` keeps writing."""
    reader = textwrap.dedent(
        f"""
        from evo.archive import Archive
        a = Archive({str(archive.path)!r}, lock_timeout_s=30)
        seen = 0
        for _ in range(30):
            seen = max(seen, len(a.genomes("r1")))
        print(seen)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", reader], stdout=subprocess.PIPE, text=True)
    for i in range(40):
        archive.add_genome("r1", 0, "hyperparam", f"X -> {i}", f"X = {i}\n")
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    assert 0 <= int(out.strip()) <= 40
    assert len(archive.genomes("r1")) == 40


def test_run_summaries_count_what_evo_runs_shows(archive, tmp_path):
    seed = archive.add_genome("r1", 0, "seed", "seed", "X = 1\n")
    for bpb in (1.5, 1.7):  # two replicates of the seed: mean 1.6
        ev = archive.start_evaluation("r1", seed.genome_id, 42, "cpu", tmp_path / "s.log")
        archive.finish_evaluation(ev.eval_id, _outcome(bpb))
    child = archive.add_genome("r1", 0, "hyperparam", "X 1 -> 2", "X = 2\n", parents=[seed.genome_id])
    ev = archive.start_evaluation("r1", child.genome_id, 42, "cpu", tmp_path / "c.log")
    archive.finish_evaluation(ev.eval_id, Outcome(EvalState.FAIL, 1.0, 1, {}, FailureKind.CRASH, "boom", ""))
    archive.add_genome("r1", 0, "hyperparam", "X 1 -> 3", "X = 3\n", parents=[seed.genome_id])  # never evaluated
    archive.create_run(RunConfig(run="r2", profile="smoke"), 3.0, tmp_path)
    r1, r2 = archive.run_summaries()
    assert (r1.run, r1.genomes, r1.evaluations, r1.running, r1.unfinished) == ("r1", 3, 3, 0, 1)
    assert (r1.seed_complete, r1.seed_failed, r1.child_complete) == (2, 0, 0)
    assert (r2.run, r2.genomes, r2.evaluations, r2.unfinished) == ("r2", 0, 0, 0)


def test_reading_serves_a_commands_reads_from_one_connection(archive, tmp_path, monkeypatch):
    import duckdb

    from evo import archive_db

    archive.add_genome("r1", 0, "seed", "seed genome", "X = 1\n")
    reader = Archive(archive.path, read_only=True)
    reader.get_run("r1")  # the first open checks the file (a connection of its own)
    opened, connect = [], duckdb.connect
    monkeypatch.setattr(archive_db.duckdb, "connect", lambda *a, **k: opened.append(a) or connect(*a, **k))
    with reader.reading():
        assert [s.run for s in reader.run_summaries()] == ["r1"]
        assert reader.genome("r1", "g0000").operator == "seed" and reader.evaluations("r1") == []
        with reader.reading():  # nested: the same connection
            assert reader.get_run("r1").profile == "smoke"
    assert len(opened) == 1
    reader.get_run("r1")  # after the block, a connection per call again
    assert len(opened) == 2
    with pytest.raises(ArchiveError, match="read-only"), archive.reading():
        pass


def test_a_read_only_archive_needs_its_file_and_creates_nothing(tmp_path):
    with pytest.raises(ArchiveError, match="no archive"):
        Archive(tmp_path / "none" / "evo.duckdb", read_only=True).list_runs()
    assert not (tmp_path / "none").exists()


def test_a_writer_refuses_a_damaged_file_and_leaves_it_as_it_was(tmp_path):
    from evo.archive import ArchiveDamagedError

    path = tmp_path / "evo.duckdb"
    path.write_bytes(b"\x00garbage" * 2000)
    before = path.read_bytes()
    with pytest.raises(ArchiveDamagedError, match="(?i)restore it from a copy"):
        Archive(path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["evo.duckdb"]
