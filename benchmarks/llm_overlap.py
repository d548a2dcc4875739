"""Do LLM proposals overlap with training? A generation's wall time, with and without.

A fake model (the fake Messages API of the tests, on 127.0.0.1, through the real SDK)
takes ``--model-s`` seconds per answer; the torch-free fake genome trains for
``--train-s`` seconds. Each configuration runs two generations with the LLM as the only
operator and reports generation 1 (its parents known only when generation 0 is done):

* wall: the generation's wall time;
* evals: the sum of its evaluations' wall times (what the GPU is busy with);
* idle: wall minus evals: the slot waiting for children (for the model) and bookkeeping;
* model x children: what proposing each child in turn would add.

Run: ``python benchmarks/llm_overlap.py`` (about 2 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import FAKE_GENOME  # noqa: E402
from fake_messages_api import FakeMessagesAPI, Reply, lr_edit, parent_source  # noqa: E402

from evo.archive import Archive  # noqa: E402
from evo.config import Paths, RunConfig  # noqa: E402
from evo.engine import Engine  # noqa: E402
from evo.operators.cst_tools import set_constants  # noqa: E402
from evo.results import genome_results  # noqa: E402


class Quiet:
    """A reporter that records when each generation starts and ends."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}
        self.wall_s: dict[int, float] = {}

    def generation_started(self, generation, population):
        self.started[generation] = time.monotonic()

    def generation_finished(self, generation, best, results):
        self.wall_s[generation] = time.monotonic() - self.started[generation]

    def genome_started(self, genome, index, population, attempt, device, budget_s=None):
        pass

    def tick(self, device, tick):
        pass

    def genome_finished(self, genome, evaluation, best):
        pass

    def message(self, text):
        pass


def measure(workers: int, model_s: float, train_s: float, population: int) -> dict[str, float]:
    project = Path(tempfile.mkdtemp(prefix="evo-overlap-"))
    shutil.copy(ROOT / "program.md", project / "program.md")
    responder = lambda request, n: Reply(lr_edit(parent_source(request), 0.5 + 0.03 * n), delay_s=model_s)  # noqa: E731
    with FakeMessagesAPI(responder) as api:
        paths = Paths.for_project(project)
        archive = Archive(paths.archive_path)
        config = RunConfig(run="bench", profile="smoke", population=population, generations=2, seed=0,
                           noise_replicates=1, best_replicates=1, operators={"llm": 1.0}, llm_base_url=api.url,
                           proposal_workers=workers)
        archive.create_run(config, train_s, project)
        reporter = Quiet()
        engine = Engine(paths, archive, config, train_s, "cpu", reporter)
        engine.run(set_constants(FAKE_GENOME, {"SLEEP_S": train_s}))
    results = genome_results(archive.genomes("bench"), archive.evaluations("bench"))
    gen1 = {r.genome_id for r in results if r.genome.generation == 1}
    evals = sum(e.wall_s for e in archive.evaluations("bench") if e.genome_id in gen1)
    wall = reporter.wall_s[1]
    shutil.rmtree(project, ignore_errors=True)
    # the slot is idle for what is not evaluation: waiting for the model, and bookkeeping
    return {"wall": wall, "evals": evals, "idle": wall - evals,
            "model x children": model_s * population}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-s", type=float, default=4.0, help="seconds the fake model takes per answer")
    parser.add_argument("--train-s", type=float, default=4.0, help="seconds each fake genome trains")
    parser.add_argument("--population", type=int, default=4, help="children per generation")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 4], help="proposal_workers values to compare")
    args = parser.parse_args()
    os.environ.setdefault("ANTHROPIC_API_KEY", "fake-key")
    print(f"fake model {args.model_s:g} s per answer, genomes train {args.train_s:g} s, "
          f"{args.population} children per generation; generation 1:")
    columns = ("wall", "evals", "idle", "model x children")
    print(f"{'proposal_workers':>16} " + " ".join(f"{c:>16}" for c in columns))
    for workers in args.workers:
        row = measure(workers, args.model_s, args.train_s, args.population)
        print(f"{workers:>16} " + " ".join(f"{row[c]:>15.1f}s" for c in columns), flush=True)


if __name__ == "__main__":
    main()
