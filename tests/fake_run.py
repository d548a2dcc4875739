"""A small run of the torch-free fake genome, for the views of issue 5 (not a test module).

Two generations of population 3 run by the real engine (all COMPLETE), then, in
generation 2, one child of the best genome that crashes (run by the engine's evaluate)
and one child that is recorded but never evaluated (PENDING).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conftest import FAKE_GENOME, add_harness
from test_engine import Recorder

from evo.archive import Archive
from evo.config import Paths, RunConfig
from evo.engine import Engine
from evo.operators.cst_tools import set_constants
from evo.results import GenomeResult, best, genome_results

RUN = "overnight"


@dataclass(frozen=True)
class FakeRun:
    """Where the run lives and what it holds."""

    project: Path
    archive: Archive
    run: str
    crashed: str  # id of the crashing genome
    pending: str  # id of the never-evaluated genome

    def results(self) -> list[GenomeResult]:
        return genome_results(self.archive.genomes(self.run), self.archive.evaluations(self.run))


def build_fake_run(project: Path, run: str = RUN) -> FakeRun:
    """Run the engine on the fake genome in ``project`` and add a crash and a pending genome."""
    paths = Paths.for_project(add_harness(project))
    archive = Archive(paths.archive_path)
    config = RunConfig(run=run, profile="smoke", population=3, generations=2, seed=3, fitness="reported")
    archive.create_run(config, 1.0, project)
    engine = Engine(paths, archive, config, 1.0, "cpu", Recorder())
    engine.run(FAKE_GENOME)
    top = best(engine.results())
    code = archive.source(top.genome.source_sha256)
    crash = archive.add_genome(run, 2, "manual", "BEHAVIOUR ok -> crash", set_constants(code, {"BEHAVIOUR": "crash"}),
                               (top.genome_id,))
    engine.evaluate(crash)
    pending = archive.add_genome(run, 2, "manual", "DEPTH 3 -> 5 (never evaluated)", set_constants(code, {"DEPTH": 5}),
                                 (top.genome_id,))
    return FakeRun(project, archive, run, crash.genome_id, pending.genome_id)
