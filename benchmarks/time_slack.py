"""How much longer than the budget a genome can train and still be scored.

Usage (from the repository, after `python prepare.py --profile cpu`):

    python benchmarks/time_slack.py [--profile cpu] [--factors 1.1,1.6] [--sandbox bwrap]

Through the real engine (trusted fitness, the sandbox) in a scratch project: the seed
genome (the profile's overrides applied) sets the run's limits, then one genome per factor
F evaluates the seed with ``TIME_BUDGET = F * TIME_BUDGET``: it trains F times the budget
and prints a summary like any other. For each it prints the engine's wall-time (scoring)
limit and model-ready limit (:mod:`evo.model_snapshot`), its wall time and model-ready
second, the verdict, and the val_bpb it printed (under evo, bits per byte on a slice of the
training split: what the longer training buys). A factor whose wall time is within the
scoring limit would have been scored before the model-ready limit existed.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from search_efficiency import QuietReporter  # noqa: E402  (a line per evaluation and per engine message)

from evo import evaluation  # noqa: E402
from evo.archive import Archive  # noqa: E402
from evo.config import Paths, RunConfig  # noqa: E402
from evo.engine import Engine  # noqa: E402
from evo.harness import load_profiles  # noqa: E402
from evo.scheduler import seed_child  # noqa: E402
from evo.time_limits import evaluation_limits  # noqa: E402

IMPORT_LINE = "from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, evaluate_bpb, make_dataloader\n"


def _longer(code: str, factor: float) -> str:
    at = code.index(IMPORT_LINE) + len(IMPORT_LINE)
    return code[:at] + f"TIME_BUDGET = {factor} * TIME_BUDGET  # trains past the budget\n" + code[at:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu", choices=("cpu", "smoke", "gpu"))
    parser.add_argument("--factors", default="1.1,1.6", help="training time / budget of each genome (default 1.1,1.6)")
    parser.add_argument("--sandbox", default="bwrap", choices=("bwrap", "none"))
    args = parser.parse_args()
    factors = [float(f) for f in args.factors.split(",")]
    with tempfile.TemporaryDirectory(prefix="evo-slack-") as tmp:
        project = Path(tmp)
        for name in ("prepare.py", "seed_train.py", "program.md"):
            shutil.copy(REPO / name, project / name)
        paths = Paths.for_project(project)
        archive = Archive(paths.archive_path)
        config = RunConfig(run="slack", profile=args.profile, sandbox=args.sandbox, noise_replicates=1)
        budget_s = float(load_profiles(paths.prepare_py)[args.profile]["time_budget_s"])
        archive.create_run(config, budget_s, project, evaluation.sha256_file(paths.prepare_py))
        engine = Engine(paths, archive, config, budget_s, "cpu", QuietReporter("slack"))
        seed_code = seed_child((REPO / "seed_train.py").read_text(), args.profile, "seed_train.py").code
        seed = archive.add_genome("slack", 0, "seed", "seed", seed_code, ())
        print(f"profile {args.profile}: budget {budget_s:.0f} s; evaluating the seed")
        engine.evaluate(seed)
        genomes = [archive.add_genome("slack", 1, "probe", f"trains {f}x the budget", _longer(seed_code, f),
                                      (seed.genome_id,)) for f in factors]
        scoring, ready = evaluation_limits(engine.state.seed(), genomes[0], budget_s, budget_s)
        print(f"limits: wall time {scoring:.1f} s (scoring limit), model ready {ready:.1f} s")
        for genome in genomes:
            print(f"evaluating {genome.genome_id}: {genome.description}")
            engine.evaluate(genome)
        print(f"\n{'genome':8} {'trains':>7} {'wall s':>7} {'ready s':>8} {'printed bpb':>12}  verdict")
        for e, factor in zip(archive.evaluations("slack"), [1.0, *factors], strict=True):
            printed = e.metrics.get("reported_val_bpb")
            verdict = e.state.value if e.failure_kind is None else f"{e.state.value} {e.failure_kind}"
            old = "" if e.genome_id == seed.genome_id else (
                "  (within the wall-time limit)" if e.wall_s <= scoring else "  (past the wall-time limit)")
            print(f"{e.genome_id:8} {factor:>6.2f}x {e.wall_s:>7.1f} {e.metrics.get('model_ready_s', float('nan')):>8.1f} "
                  f"{printed if printed is not None else float('nan'):>12.4f}  {verdict}{old}")


if __name__ == "__main__":
    main()
