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

METHODS = ("evo", "tpe", "cmaes", "random", "greedy")
BASELINES = ("tpe", "cmaes", "random", "greedy")
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


# --- statistics and report ----------------------------------------------------------


def mean_se(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return float("nan"), float("nan")
    se = statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("nan")
    return statistics.fmean(xs), se


def at(curve: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """The entry after ``n`` evaluations (the last one if the run did fewer)."""
    return curve[min(n, len(curve)) - 1]


def summarize(runs: dict[str, list[dict[str, Any]]], checkpoints: list[int], evaluations: int) -> dict[str, Any]:
    """Per method: true fitness and winner's curse at each checkpoint, and the mean curve."""
    out: dict[str, Any] = {}
    for method, reps in runs.items():
        if not reps:
            continue
        row: dict[str, Any] = {"checkpoints": {}, "repeats": len(reps)}
        for n in checkpoints:
            trues = [at(r["curve"], n)["true"] for r in reps]
            curses = [at(r["curve"], n)["true"] - at(r["curve"], n)["estimate"]
                      for r in reps if at(r["curve"], n)["estimate"] is not None]
            m, se = mean_se(trues)
            cm, cse = mean_se(curses)
            row["checkpoints"][str(n)] = {"true_mean": m, "true_se": se, "curse_mean": cm, "curse_se": cse,
                                          "true": trues}
            posterior = [at(r["curve"], n)["true"] - at(r["curve"], n)["posterior"]
                         for r in reps if at(r["curve"], n).get("posterior") is not None]
            if posterior:  # evo only: the curse of its posterior mean
                pm, pse = mean_se(posterior)
                row["checkpoints"][str(n)].update(posterior_curse_mean=pm, posterior_curse_se=pse)
            held = [at(r["curve"], n)["true"] - at(r["curve"], n)["held_out"]
                    for r in reps if at(r["curve"], n).get("held_out") is not None]
            if held:  # evo only: the curse of its held-out val_bpb, where the run took them
                hm, hse = mean_se(held)
                row["checkpoints"][str(n)].update(held_out_curse_mean=hm, held_out_curse_se=hse,
                                                  held_out_repeats=len(held))
        row["mean_curve"] = [statistics.fmean(at(r["curve"], n)["true"] for r in reps)
                             for n in range(1, evaluations + 1)]
        walls = [r["wall_s"] for r in reps if "wall_s" in r]
        if walls:
            row["wall_s_mean"] = statistics.fmean(walls)
        out[method] = row
    return out


def verdicts(summary: dict[str, Any], checks: list[int]) -> dict[str, Any]:
    """Evo better than each baseline at each of ``checks``: difference > its standard error."""
    if "evo" not in summary:
        return {}
    out: dict[str, Any] = {}
    for base in BASELINES:
        if base not in summary:
            continue
        for n in checks:
            e, b = summary["evo"]["checkpoints"][str(n)], summary[base]["checkpoints"][str(n)]
            diff = b["true_mean"] - e["true_mean"]
            se = math.sqrt((e["true_se"] or 0.0) ** 2 + (b["true_se"] or 0.0) ** 2)
            out[f"{base}@{n}"] = {"diff": diff, "se": se, "evo_better": bool(diff > se)}
    return out


def evals_to_reach_greedy(summary: dict[str, Any], evaluations: int) -> int | None:
    """First evaluation count at which evo's mean true fitness <= greedy's final mean."""
    if "evo" not in summary or "greedy" not in summary:
        return None
    target = summary["greedy"]["mean_curve"][-1]
    for n, v in enumerate(summary["evo"]["mean_curve"], start=1):
        if v <= target:
            return n
    return None


def fmt(m: float, se: float, digits: int = 4) -> str:
    if not math.isfinite(m):
        return "-"
    return f"{m:.{digits}f} ± {se:.{digits}f}" if math.isfinite(se) else f"{m:.{digits}f}"


def report(result: dict[str, Any]) -> str:
    checkpoints = result["checkpoints"]
    lines = [
        "# Search suite: true fitness of each method's chosen genome",
        "",
        f"{result['repeats']} repeats, {result['evaluations']} evaluations, methods {', '.join(result['methods'])}; "
        f"evo sandbox: {result['sandbox']}"
        + (f", evo screening at {result['screen']:g} of the budget (evaluations counted in full-budget "
           "evaluations)" if result.get("screen") else "")
        + "; mean ± standard error over repeats; lower is better; "
        "seed 1.0000. Winner's curse = true - estimate of the chosen genome (positive = optimistic).",
        "",
    ]
    for group, title in ((False, "Tuning landscapes"), (True, "Held-out landscapes")):
        lands = [x for x in result["landscapes"] if x["held_out"] == group]
        if not lands:
            continue
        lines += [f"## {title}", ""]
        for land in lands:
            s = land["summary"]
            lines += [f"### {land['name']} (optimum {land['f_opt']:.4f}, sigma {land['sigma']:.4f})", ""]
            lines.append("| method | " + " | ".join(str(n) for n in checkpoints) + " | curse @64 | curse @last |")
            lines.append("|---|" + "---|" * (len(checkpoints) + 2))
            for method, row in s.items():
                cells = [fmt(row["checkpoints"][str(n)]["true_mean"], row["checkpoints"][str(n)]["true_se"])
                         for n in checkpoints]
                c64 = row["checkpoints"].get(str(min(64, checkpoints[-1])), {})
                clast = row["checkpoints"][str(checkpoints[-1])]
                lines.append(f"| {method} | " + " | ".join(cells)
                             + f" | {fmt(c64.get('curse_mean', float('nan')), c64.get('curse_se', float('nan')))}"
                             + f" | {fmt(clast['curse_mean'], clast['curse_se'])} |")
            post = s.get("evo", {}).get("checkpoints", {}).get(str(checkpoints[-1]), {})
            if "posterior_curse_mean" in post:
                lines.append(f"\nevo's curse measured on its posterior mean instead of the mean reading, @"
                             f"{checkpoints[-1]}: {fmt(post['posterior_curse_mean'], post['posterior_curse_se'])}")
            if "held_out_curse_mean" in post:
                lines.append(f"evo's curse measured on its held-out val_bpb (evo.held_out), @{checkpoints[-1]}: "
                             f"{fmt(post['held_out_curse_mean'], post['held_out_curse_se'])} "
                             f"({post['held_out_repeats']} repeats)")
            lines.append("")
            if land.get("evals_to_greedy_final") is not None or ("evo" in s and "greedy" in s):
                n = land.get("evals_to_greedy_final")
                lines.append(f"evaluations evo needs to reach greedy's {result['evaluations']}-evaluation mean "
                             f"({s['greedy']['mean_curve'][-1]:.4f}): {n if n is not None else 'not reached'}"
                             + (f" ({100 * n / result['evaluations']:.0f}%)" if n else ""))
            if land["verdicts"]:
                parts = [f"{k} {'yes' if v['evo_better'] else 'no'} ({v['diff']:+.4f} vs se {v['se']:.4f})"
                         for k, v in land["verdicts"].items()]
                lines.append("verdict (evo better than baseline by > se): " + "; ".join(parts))
            lines.append("")
    if result.get("evo_wall_s_mean"):
        lines.append(f"one {result['evaluations']}-evaluation evo run: {result['evo_wall_s_mean']:.0f} s wall "
                     f"(mean, with {result['jobs']} in parallel); whole suite {result['wall_s'] / 60:.1f} min")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lands = result["landscapes"]
    cols = min(3, len(lands))
    rows = math.ceil(len(lands) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, land in zip(axes.flat, lands, strict=False):
        for method, row in land["summary"].items():
            xs = [int(n) for n in row["checkpoints"]]
            ms = [row["checkpoints"][n]["true_mean"] for n in row["checkpoints"]]
            ses = [row["checkpoints"][n]["true_se"] for n in row["checkpoints"]]
            curve = row["mean_curve"]
            (line,) = ax.plot(range(1, len(curve) + 1), curve, label=method, lw=1.2)
            ax.errorbar(xs, ms, yerr=[0 if not math.isfinite(s) else s for s in ses], fmt="o", ms=3,
                        color=line.get_color(), capsize=2)
        ax.axhline(land["f_opt"], color="k", ls=":", lw=0.8, label="optimum")
        ax.set_title(land["name"] + (" (held out)" if land["held_out"] else ""))
        ax.set_xlabel("evaluations")
        ax.set_ylabel("true fitness of chosen genome")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(lands):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
