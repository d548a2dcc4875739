"""Search benchmark on synthetic landscapes: evo vs optuna TPE, CMA-ES, random and greedy.

Every method gets the same number of evaluations (one evaluation = one noisy reading of
one genome; evo's replicates count; with ``--screen F`` a screen of evo's,
``evo.screening``, counts F) on each landscape of ``benchmarks/landscapes.py``, with
``--repeats`` independent repeats (method seed = repeat). After every evaluation we note
each method's *chosen* genome and score it by the landscape's true (noise-free) fitness:

* ``evo``: the real CLI in a subprocess (``evo start --profile smoke --fitness reported
  --max-evaluations N --seed r --seed-genome landscape.py``, defaults otherwise) in a
  temporary project; its chosen genome after the first n finished evaluations is
  ``evo.noise.declared_best(results, config)`` over the archive's genomes and those
  evaluations (before it declares one, the seed: true fitness 1.0);
* ``tpe`` / ``cmaes`` / ``random``: optuna's TPESampler / CmaEsSampler / RandomSampler
  (defaults, seeded by the repeat) over ``evo.operators.optuna_sampler.search_space`` of
  the seed's constants, the seed enqueued as the first trial; objective = one noisy
  reading, a cliff = a failed trial; chosen = the lowest reading so far;
* ``greedy``: autoresearch's keep-or-discard loop: from the seed, each child a
  ``HyperparamMutation`` of the current best, kept if its single reading is lower.

Reported per landscape and method at each checkpoint: the chosen genome's true fitness
(mean ± standard error over repeats), the winner's curse (true - estimate of the chosen
genome; positive = the reported value is optimistic; the estimate is the mean reading, and
for evo also its posterior mean and, where the run took them, its held-out val_bpb,
``evo.held_out``), the evaluations evo needs to reach
greedy's final mean, and a verdict: evo better than each baseline at 64 and at the last
checkpoint by more than the difference's standard error. Landscapes of held-out families
(``landscapes.HELD_OUT``) are reported separately.

Cost: baselines take about a second per run; one 160-evaluation evo run takes about 110 s
wall (about 55 s of CPU: process starts and the engine's own work) on a 2-core machine, so
the default suite (6 landscapes x 10 repeats of evo) takes about 60 x 110 s / ``--jobs``:
about 55 minutes with the default 2 jobs. ``--quick`` takes about 2.5 minutes. Genomes run
unconfined (``--sandbox none``) where bubblewrap is not installed.

Writes ``<out>/search_suite.json``, ``<out>/search_suite.md`` (also printed) and
``<out>/search_suite.png``.

Usage:
    python benchmarks/search_suite.py --quick
    python benchmarks/search_suite.py [--landscapes sphere:0,...] [--methods evo,tpe,...]
        [--repeats 10] [--evaluations 160] [--jobs 2] [--out DIR] [--evo-path DIR]
"""

from __future__ import annotations

import argparse
import bisect
import concurrent.futures
import itertools
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import landscapes as L  # noqa: E402
from suite_report import evals_to_reach_greedy, plot, report, summarize, verdicts  # noqa: E402

METHODS = ("evo", "tpe", "cmaes", "random", "greedy")
DEFAULT_LANDSCAPES = ("sphere:0", "coupled:0", "cliff:0", "integer:0", "wide:0", "ridge:0")
QUICK_LANDSCAPES = ("sphere:0", "cliff:0")
DEFAULT_CHECKPOINTS = (16, 32, 64, 96, 128, 160)
EVO_RUN_TIMEOUT_S = 1800


# --- evo through its CLI ------------------------------------------------------------


def sandbox_choice() -> str:
    """``auto`` where bubblewrap is installed, else ``none``."""
    return "auto" if shutil.which("bwrap") else "none"


def evo_env(evo_path: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if evo_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (evo_path, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


SMOKE_BUDGET_S = 3.0  # the smoke profile's time budget: a screen's fidelity is its budget over this


def evo_command(project: Path, evaluations: int, repeat: int, run: str, sandbox: str, screen: float = 0.0) -> list[str]:
    command = [
        sys.executable, "-m", "evo", "start", "--project", str(project), "--profile", "smoke",
        "--fitness", "reported", "--max-evaluations", str(evaluations), "--seed", str(repeat),
        "--run", run, "--seed-genome", str(project / "landscape.py"), "--sandbox", sandbox,
    ]
    if screen:
        command += ["--screen", str(screen), "--time-budget", str(SMOKE_BUDGET_S)]
    return command


def make_project(folder: Path, land: L.Landscape, screen: float = 0.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("prepare.py", "program.md"):
        shutil.copy(L.ROOT / name, folder / name)
    (folder / "landscape.py").write_text(L.landscape_genome(land, SMOKE_BUDGET_S if screen else None))
    return folder


def evo_curve(archive_path: Path, run: str, land: L.Landscape, evaluations: int) -> list[dict[str, Any]]:
    """Evo's chosen genome after each of the first ``evaluations`` evaluations' worth of
    finished evaluations (a screen, ``evo.screening``, costs its fidelity)."""
    from evo.archive import Archive
    from evo.config import RunConfig
    from evo.noise import declared_verdict
    from evo.records import EvalState
    from evo.results import genome_results

    archive = Archive(archive_path, read_only=True)
    config = RunConfig.from_json(archive.get_run(run).config_json)
    genomes = archive.genomes(run)
    finished = [e for e in archive.evaluations(run) if e.state.is_finished and e.state is not EvalState.INTERRUPTED]
    finished.sort(key=lambda e: (e.finished_at, e.eval_id))
    spent = list(itertools.accumulate(e.fidelity for e in finished))
    true_by_sha: dict[str, float | None] = {}
    curve = []
    for n in range(1, min(evaluations, math.ceil(spent[-1] - 1e-9) if spent else 0) + 1):
        done = finished[:bisect.bisect_right(spent, n + 1e-9)]
        ids = {e.genome_id for e in done}
        results = genome_results([g for g in genomes if g.genome_id in ids], done)
        verdict = declared_verdict(results, config)
        pick = None if verdict.best is None else next(r for r in results if r.genome_id == verdict.best)
        if pick is None:
            curve.append({"true": 1.0, "estimate": None, "genome": None, "n": 0})
            continue
        belief = verdict.beliefs.get(pick.genome_id)
        sha = pick.genome.source_sha256
        if sha not in true_by_sha:
            true_by_sha[sha] = L.true_fitness(land, archive.source(sha))
        true = true_by_sha[sha]
        # estimate: the chosen genome's mean reading; posterior: evo's posterior mean of it; held_out: the
        # mean of its held-out readings once they are in (evo.held_out; all three shown by evo status)
        held = pick.held_out_scores
        curve.append({"true": true, "estimate": pick.val_bpb, "posterior": belief.mean if belief else None,
                      "held_out": statistics.fmean(held) if held else None, "genome": pick.genome_id, "n": pick.n})
    return curve


def run_evo(land: L.Landscape, repeat: int, evaluations: int, sandbox: str, evo_path: str | None,
            keep: Path | None, screen: float = 0.0) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"evo-suite-{land.family}-{land.instance_seed}-r{repeat}-"))
    try:
        project = make_project(tmp / "project", land, screen)
        run = f"suite-r{repeat}"
        started = time.monotonic()
        with open(tmp / "evo.log", "w") as log:
            proc = subprocess.run(evo_command(project, evaluations, repeat, run, sandbox, screen), cwd=project,
                                  stdout=log, stderr=subprocess.STDOUT, env=evo_env(evo_path),
                                  timeout=EVO_RUN_TIMEOUT_S)
        wall = time.monotonic() - started
        if proc.returncode != 0:
            tail = (tmp / "evo.log").read_text()[-3000:]
            raise RuntimeError(f"evo start exited {proc.returncode} on {land.name} r{repeat}:\n{tail}")
        curve = evo_curve(project / "archive" / "evo.duckdb", run, land, evaluations)
        return {"curve": curve, "wall_s": wall}
    finally:
        if keep is not None:
            dest = keep / f"{land.family}-{land.instance_seed}-r{repeat}"
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(tmp, dest, ignore=shutil.ignore_patterns("*.parquet", "*.bin"))
        shutil.rmtree(tmp, ignore_errors=True)


# --- baselines, in process ----------------------------------------------------------


def _reading_seed(repeat: int, i: int) -> int:
    return 1_000_003 * (repeat + 1) + i


def run_optuna(method: str, land: L.Landscape, repeat: int, evaluations: int) -> dict[str, Any]:
    import optuna

    from evo.operators.cst_tools import read_constants
    from evo.operators.optuna_sampler import from_params, search_space, to_params

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    constants = read_constants(L.block_code())
    seed_values = {n: c.value for n, c in constants.items()}
    space = search_space(constants)
    sampler = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=repeat),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=repeat, warn_independent_sampling=False),
        "random": lambda: optuna.samplers.RandomSampler(seed=repeat),
    }[method]()
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.enqueue_trial(to_params(constants, space))
    best: tuple[float, float] | None = None  # (reading, true)
    curve = []
    for i in range(evaluations):
        trial = study.ask(space)
        values = {**seed_values, **from_params(constants, trial.params)}
        true = L.true_fitness(land, values)
        if true is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            r = true + L.noise(land, values, _reading_seed(repeat, i))
            study.tell(trial, r)
            if best is None or r < best[0]:
                best = (r, true)
        curve.append({"true": best[1] if best else 1.0, "estimate": best[0] if best else None})
    return {"curve": curve}


def run_greedy(land: L.Landscape, repeat: int, evaluations: int) -> dict[str, Any]:
    from evo.operators.base import Context, Parent, Status
    from evo.operators.cst_tools import read_constants
    from evo.operators.hyperparam import HyperparamMutation

    op = HyperparamMutation()
    rng = random.Random(repeat)
    code = L.block_code()

    def values_of(source: str) -> dict[str, Any]:
        return {n: c.value for n, c in read_constants(source).items()}

    true = L.true_fitness(land, values_of(code))
    current = (code, true + L.noise(land, values_of(code), _reading_seed(repeat, 0)), true)
    curve = [{"true": current[2], "estimate": current[1]}]
    i = 1
    while i < evaluations:
        result = op.propose([Parent("g", current[0], current[1])], rng, Context())
        if result.status is not Status.OK:
            continue
        values = values_of(result.code)
        true = L.true_fitness(land, values)
        if true is not None:
            r = true + L.noise(land, values, _reading_seed(repeat, i))
            if r < current[1]:
                current = (result.code, r, true)
        curve.append({"true": current[2], "estimate": current[1]})
        i += 1
    return {"curve": curve}


def run_method(method: str, land: L.Landscape, repeat: int, args: argparse.Namespace) -> dict[str, Any]:
    if method == "evo":
        return run_evo(land, repeat, args.evaluations, args.sandbox, args.evo_path, args.keep_archives, args.screen)
    if method == "greedy":
        return run_greedy(land, repeat, args.evaluations)
    return run_optuna(method, land, repeat, args.evaluations)


# --- main ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--landscapes", help=f"family:seed,... (default {','.join(DEFAULT_LANDSCAPES)})")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--repeats", type=int, help="repeats per landscape and method (default 10)")
    p.add_argument("--evaluations", type=int, help="evaluations per run (default 160)")
    p.add_argument("--checkpoints", help="comma-separated (default 16,32,64,96,128,160, capped at --evaluations)")
    p.add_argument("--jobs", type=int, default=2, help="evo runs in parallel (default 2)")
    p.add_argument("--quick", action="store_true", help="3 repeats, 64 evaluations, 2 landscapes")
    p.add_argument("--out", default="benchmarks/results/search_suite", help="output folder")
    p.add_argument("--evo-path", help="folder put first on PYTHONPATH for the evo runs and this process "
                                      "(e.g. a snapshot of evo at a commit)")
    p.add_argument("--sandbox", default=sandbox_choice(), help="evo start --sandbox (default: auto if bwrap "
                                                               "is installed, else none)")
    p.add_argument("--keep-archives", type=Path, help="copy each evo run's project folder here")
    p.add_argument("--screen", type=float, default=0.0, metavar="FRACTION",
                   help="run evo with --screen FRACTION (evo.screening) on landscapes read with their fidelity "
                        "bias; evo's evaluations are then counted in full-budget evaluations (default 0: off)")
    args = p.parse_args(argv)
    args.landscapes = args.landscapes or ",".join(QUICK_LANDSCAPES if args.quick else DEFAULT_LANDSCAPES)
    args.repeats = args.repeats or (3 if args.quick else 10)
    args.evaluations = args.evaluations or (64 if args.quick else 160)
    cps = [int(x) for x in args.checkpoints.split(",")] if args.checkpoints else list(DEFAULT_CHECKPOINTS)
    args.checkpoints = sorted({n for n in cps if n <= args.evaluations} | {args.evaluations})
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(args.methods) - set(METHODS)
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.evo_path:
        sys.path.insert(0, args.evo_path)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.keep_archives:
        args.keep_archives.mkdir(parents=True, exist_ok=True)
    lands = [L.parse_name(n.strip()) for n in args.landscapes.split(",") if n.strip()]
    started = time.monotonic()
    runs: dict[str, dict[str, list]] = {x.name: {m: [None] * args.repeats for m in args.methods} for x in lands}
    lock = threading.Lock()

    def done(land: L.Landscape, method: str, repeat: int, res: dict[str, Any]) -> None:
        with lock:
            runs[land.name][method][repeat] = res
            last = res["curve"][-1]
            extra = f", {res['wall_s']:.0f} s" if "wall_s" in res else ""
            print(f"  {land.name:12} {method:7} r{repeat}: chosen true {last['true']:.4f}{extra}", flush=True)

    evo_jobs = [(x, r) for x in lands for r in range(args.repeats)] if "evo" in args.methods else []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_method, "evo", x, r, args): (x, r) for x, r in evo_jobs}
        for x in lands:  # baselines in this thread while evo runs in subprocesses
            for m in args.methods:
                if m != "evo":
                    for r in range(args.repeats):
                        done(x, m, r, run_method(m, x, r, args))
        for fut in concurrent.futures.as_completed(futures):
            x, r = futures[fut]
            done(x, "evo", r, fut.result())

    result: dict[str, Any] = {
        "repeats": args.repeats, "evaluations": args.evaluations, "checkpoints": args.checkpoints,
        "methods": args.methods, "sandbox": args.sandbox, "jobs": args.jobs, "landscapes": [], "screen": args.screen,
        "evo_path": args.evo_path, "wall_s": time.monotonic() - started,
    }
    walls = []
    for x in lands:
        summary = summarize(runs[x.name], args.checkpoints, args.evaluations)
        checks = sorted({min(64, args.evaluations), args.evaluations})
        walls += [r["wall_s"] for r in runs[x.name].get("evo", []) if r and "wall_s" in r]
        result["landscapes"].append({
            "name": x.name, "family": x.family, "held_out": x.held_out, "f_opt": x.f_opt, "sigma": x.sigma,
            "summary": summary, "verdicts": verdicts(summary, checks),
            "evals_to_greedy_final": evals_to_reach_greedy(summary, args.evaluations),
            "runs": {m: [r["curve"] for r in reps] for m, reps in runs[x.name].items()},
        })
    result["evo_wall_s_mean"] = statistics.fmean(walls) if walls else None
    (out / "search_suite.json").write_text(json.dumps(result, indent=1))
    text = report(result)
    (out / "search_suite.md").write_text(text)
    plot(result, out / "search_suite.png")
    print()
    print(text)
    print(f"wrote {out / 'search_suite.json'}, {out / 'search_suite.md'}, {out / 'search_suite.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
