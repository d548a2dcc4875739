"""The generation loop on a torch-free fake genome (fast), including interruption and resume."""

from __future__ import annotations

from collections import Counter

import pytest
from conftest import add_harness

from evo import engine as engine_module
from evo.archive import Archive
from evo.config import Paths, RunConfig
from evo.engine import Engine, EngineError
from evo.operators.cst_tools import read_constants, set_constants
from evo.records import EvalState
from evo.results import best, genome_results


class Recorder:
    """A reporter that remembers events and can raise Ctrl-C at a chosen genome."""

    def __init__(self, interrupt_at: int | None = None):
        self.started: list[str] = []
        self.messages: list[str] = []
        self.interrupt_at = interrupt_at

    def generation_started(self, generation, population):
        pass

    def genome_started(self, genome, index, population, attempt, device, budget_s=None):
        self.started.append(genome.genome_id)

    def tick(self, device, tick):
        if self.interrupt_at is not None and len(self.started) == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt

    def genome_finished(self, genome, evaluation, best):
        pass

    def generation_finished(self, generation, best, results):
        pass

    def message(self, text):
        self.messages.append(text)


def _engine(tmp_path, reporter, generations=3, population=3, run="r"):
    paths = Paths.for_project(add_harness(tmp_path))
    archive = Archive(paths.archive_path)
    config = RunConfig(run=run, profile="smoke", population=population, generations=generations, seed=1,
                       fitness="reported")
    if run not in {r.run for r in archive.list_runs()}:
        archive.create_run(config, 1.0, tmp_path)
    return Engine(paths, archive, config, 1.0, "cpu", reporter), archive


def _slow(code: str) -> str:
    return set_constants(code, {"SLEEP_S": 0.6})


def test_generations_select_complete_parents_and_never_repeat_a_genome(tmp_path, fake_genome):
    engine, archive = _engine(tmp_path, Recorder())
    top = engine.run(fake_genome)
    results = genome_results(archive.genomes("r"), archive.evaluations("r"))
    assert len(results) == 9
    # cohort 0 is the seed and its mutants (generation 0); later children are one generation
    # deeper than their deepest parent
    assert [r.genome.generation for r in results[:3]] == [0, 0, 0]
    gen = {r.genome_id: r.genome.generation for r in results}
    assert all(r.genome.generation == 1 + max(gen[p] for p in r.genome.parents) for r in results[3:])
    assert results[0].n >= 2  # the seed's replicates measure the noise floor
    seed = results[0]
    assert seed.genome.operator == "seed" and seed.genome.parents == ()
    assert all(r.genome.parents == (seed.genome_id,) for r in results[1:3])
    by_id = {r.genome_id: r for r in results}
    for r in results[3:]:
        assert r.genome.parents, r.genome_id
        for parent in r.genome.parents:
            assert by_id[parent].is_complete  # failed genomes are never parents
            assert by_id[parent].genome.generation < r.genome.generation
    assert len({r.genome.normalized_sha256 for r in results}) == 9
    assert top.genome_id == best(results).genome_id and top.val_bpb <= seed.val_bpb
    # every child's code differs from its first parent (a crossover's base) exactly where
    # its description says; the archive keeps the parents in order
    for r in results[1:]:
        after = read_constants(archive.source(r.genome.source_sha256))
        before = read_constants(archive.source(by_id[r.genome.parents[0]].genome.source_sha256))
        changed = {n for n in before if before[n].value != after[n].value}
        assert changed and all(n in r.genome.description for n in changed), r.genome.description
    assert (tmp_path / "genomes" / "r" / "g0008.py").is_file()
    assert (tmp_path / "genomes" / "r" / "g0008.log").is_file()


def test_interrupt_then_resume_loses_and_duplicates_nothing(tmp_path, fake_genome):
    engine, archive = _engine(tmp_path, Recorder(interrupt_at=5))
    with pytest.raises(KeyboardInterrupt):
        engine.run(_slow(fake_genome))
    evals = archive.evaluations("r")
    assert [e.state for e in evals].count(EvalState.INTERRUPTED) == 1
    assert not [e for e in evals if e.state is EvalState.RUNNING]
    interrupted = next(e for e in evals if e.state is EvalState.INTERRUPTED)
    finished_before = {e.eval_id: e for e in evals if e.state is EvalState.COMPLETE}

    engine, archive = _engine(tmp_path, Recorder())
    engine.run(None)
    evals = archive.evaluations("r")
    results = genome_results(archive.genomes("r"), evals)
    assert len(results) == 9 and all(r.is_complete for r in results)
    # one counted evaluation per (genome, seed): replicates use new seeds, nothing ran twice
    counted = Counter((e.genome_id, e.seed) for e in evals if e.state is not EvalState.INTERRUPTED)
    assert set(counted.values()) == {1}
    for eval_id, before in finished_before.items():  # finished records never change
        assert archive.evaluation(eval_id) == before
    rerun = [e for e in evals if e.genome_id == interrupted.genome_id and e.seed == interrupted.seed]
    assert [e.state for e in rerun] == [EvalState.INTERRUPTED, EvalState.COMPLETE]
    assert rerun[1].attempt == rerun[0].attempt + 1
    assert rerun[1].log_path.endswith(f".attempt{rerun[1].attempt}.log")


def test_the_seed_is_described_by_the_run_s_own_seed_file(tmp_path, fake_genome):
    paths = Paths.for_project(add_harness(tmp_path))
    archive = Archive(paths.archive_path)
    config = RunConfig(run="s", profile="smoke", population=1, generations=1, seed=1, fitness="reported",
                       seed_genome=str(tmp_path / "elsewhere" / "my_seed.py"))
    archive.create_run(config, 1.0, tmp_path)
    Engine(paths, archive, config, 1.0, "cpu", Recorder()).run(fake_genome)
    (seed,) = [g for g in archive.genomes("s") if g.operator == "seed"]
    assert seed.description.startswith("seed genome (my_seed.py)"), seed.description


def test_generation_zero_without_a_complete_genome_stops_the_run(tmp_path, fake_genome):
    engine, _ = _engine(tmp_path, Recorder(), generations=2, population=2)
    broken = set_constants(fake_genome, {"BEHAVIOUR": "crash"})
    # mutants may flip BEHAVIOUR to another value; only the string choices list can, and
    # BEHAVIOUR has none, so every genome of generation 0 crashes
    with pytest.raises(EngineError, match=r"the seed genome g0000 failed \(crash\).*see its log at .*g0000\.log"):
        engine.run(broken)
    # nothing is wasted on mutants of a seed that never scored
    assert [r.genome_id for r in engine.results()] == ["g0000"]


def test_a_failed_archive_write_keeps_the_outcome_and_resume_records_it(tmp_path, fake_genome, monkeypatch):
    """Disk full while committing a finished evaluation: the engine stops with one clear
    error, the outcome waits beside the archive, and resume records it (no re-run)."""
    import duckdb

    from evo.engine import ArchiveWriteError

    engine, archive = _engine(tmp_path, Recorder(), generations=1)
    real_finish = Archive.finish_evaluation
    calls = {"n": 0}

    def full_disk(self, eval_id, outcome, device=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the seed's second evaluation: its training is done
            raise duckdb.IOException("Could not write file: No space left on device")
        return real_finish(self, eval_id, outcome, device)

    monkeypatch.setattr(Archive, "finish_evaluation", full_disk)
    with pytest.raises(ArchiveWriteError, match="No space left on device.*kept in .*evo resume"):
        engine.run(fake_genome)
    monkeypatch.setattr(Archive, "finish_evaluation", real_finish)
    kept = sorted((tmp_path / "archive").glob("*.pending/*.json"))
    assert len(kept) == 1
    lost = next(e for e in archive.evaluations("r") if e.state is EvalState.RUNNING)
    assert kept[0].stem == str(lost.eval_id)

    engine, archive = _engine(tmp_path, Recorder(), generations=1)
    engine.run(None)
    evals = archive.evaluations("r")
    recovered = next(e for e in evals if e.eval_id == lost.eval_id)
    assert recovered.state is EvalState.COMPLETE and recovered.val_bpb is not None
    # that genome was not trained again for that seed, and nothing is left pending
    assert Counter((e.genome_id, e.seed) for e in evals if e.state is not EvalState.INTERRUPTED)[
        (lost.genome_id, lost.seed)] == 1
    assert not list((tmp_path / "archive").glob("*.pending/*.json"))


@pytest.mark.parametrize("noise", [0.0, 0.01])
def test_a_genome_that_fixes_its_own_seed_is_reported(tmp_path, fake_genome, noise):
    """NOISE_BPB = 0: the fake genome ignores EVO_SEED, like a train.py calling
    torch.manual_seed(42); its replicates are identical and evo says so."""
    reporter = Recorder()
    engine, archive = _engine(tmp_path, reporter, generations=1)
    engine.run(set_constants(fake_genome, {"NOISE_BPB": noise}))
    seed = genome_results(archive.genomes("r"), archive.evaluations("r"))[0]
    pinned = [m for m in reporter.messages if "fixes its own random seed" in m]
    if noise == 0.0:
        assert seed.ignores_seed and pinned and pinned[0].startswith("g0000: evaluations with EVO_SEED 42, 43")
    else:
        assert not seed.ignores_seed and not pinned


def test_ctrl_c_between_recording_an_evaluation_and_handing_it_to_a_slot_leaves_nothing_running(
    tmp_path, fake_genome, monkeypatch,
):
    """The evaluation is recorded RUNNING before a slot gets it: a Ctrl-C in between must
    still leave it INTERRUPTED (the archive consistent at once, not only after a resume)."""
    engine, archive = _engine(tmp_path, Recorder(), generations=2)
    real = engine_module.evaluation_limits  # called in _start after the RUNNING record, before the slot
    calls = {"n": 0}

    def interrupted(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(engine_module, "evaluation_limits", interrupted)
    with pytest.raises(KeyboardInterrupt):
        engine.run(fake_genome)
    evals = archive.evaluations("r")
    assert len(evals) == 3 and not [e for e in evals if e.state is EvalState.RUNNING]
    assert evals[-1].state is EvalState.INTERRUPTED


def test_ctrl_c_while_an_outcome_is_committed_records_it_before_the_run_stops(tmp_path, fake_genome, monkeypatch):
    """A Ctrl-C (or SIGTERM) inside the archive write of a finished evaluation: its outcome,
    kept beside the archive, is recorded as the run stops; nothing is left RUNNING or kept."""
    engine, archive = _engine(tmp_path, Recorder(), generations=1)
    real_finish = Archive.finish_evaluation
    calls = {"n": 0}

    def cut_short(self, eval_id, outcome, device=None):
        calls["n"] += 1
        if calls["n"] == 2:  # the seed's second evaluation, its outcome already kept
            raise KeyboardInterrupt
        return real_finish(self, eval_id, outcome, device)

    monkeypatch.setattr(Archive, "finish_evaluation", cut_short)
    with pytest.raises(KeyboardInterrupt):
        engine.run(fake_genome)
    evals = archive.evaluations("r")
    assert not [e for e in evals if e.state is EvalState.RUNNING]
    assert [e.state for e in evals[:2]] == [EvalState.COMPLETE, EvalState.COMPLETE] and evals[1].val_bpb is not None
    assert not list((tmp_path / "archive").glob("*.pending/*.json"))
