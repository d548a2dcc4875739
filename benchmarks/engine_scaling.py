"""The engine's cost per evaluation against the size of the archive: 100, 10,000 and 100,000 genomes.

For each size, a synthetic archive of ONE run is built directly with DuckDB in bulk (pyarrow
tables, ``INSERT ... SELECT``), following ``evo/archive.py``'s schema: the Archive creates the
schema and ``create_run`` the run; then ``sources``, ``genomes``, ``lineage``, ``evaluations``
and ``noise_floor`` are filled and the ``evaluation_ids`` sequence moved past the inserted ids.
Genomes are the torch-free fake genome of ``tests/conftest.py`` with distinct ``LR``, ``WIDTH``,
``DEPTH`` and ``UNUSED`` values (distinct sources and normalized hashes, computed with
``evo.genome``); cohorts of ``--population``: cohort 0 is the seed ``g0000`` and mutants of it
(generation 0), later genomes have 1 or 2 random COMPLETE parents of earlier cohorts and
generation 1 + the deepest parent's; operators hyperparam/optuna/crossover by the default
weights. Each genome has one evaluation (COMPLETE with the fake genome's val_bpb, or ~3% FAIL:
a crash, with ``BEHAVIOUR = "crash"`` in its source), a ~2 KB ``log_tail`` and its metrics
JSON; the seed has 3 COMPLETE evaluations (seeds 42-44) and the noise floor is recorded.

Then, on a fresh copy of each archive, the run is resumed by the real engine
(``Engine(...).run(None)``, one local slot, smoke profile, ``fitness="reported"``,
``best_replicates=1``) for ``--new`` more evaluations (``max_evaluations`` = counted + new)
of genomes sleeping ``--sleep`` seconds, in a child process of its own, which reports:

* load: seconds of the engine's one ``RunState.load`` (timed inside ``engine.run``, at its
  start), and the time from ``engine.run`` called to the first new evaluation started;
* the engine process's peak RSS (``VmHWM`` of the child: the engine, its slot and proposal
  threads; the genome processes are not counted; ``ru_maxrss`` would report the builder's,
  inherited through fork + exec);
* gap between genomes: a new evaluation's ``finished_at`` to the next one's ``started_at``,
  from the archive (median/max over the new evaluations, and over those past the warmup);
* CPU per evaluation: ``time.process_time()`` of the child process (every thread, children
  excluded) from the start of new evaluation ``--warmup`` + 1 to the last one's end, divided
  by the number of new evaluations in that window (the first proposals of a started engine
  parse the sources of the operators' context once: a one-time cost, seen in the time to
  the first start); once with all operators, once with each operator alone.

With ``--profile`` (default on), the largest size is resumed once more (all operators) under
cProfile and the top functions by cumulative time are printed.

Targets (issue): the gap under 1 s; the CPU per evaluation at 100k within 2x of that at 100.

Usage (from the repository root, the venv active):

    nice -n 19 python benchmarks/engine_scaling.py [--sizes 100,10000,100000] [--new 20] [--sleep 0.5]

With the defaults it takes about 10-15 minutes on a 2-core machine (building the 100k archive
about 2 minutes of it). Prints a line per built archive and per engine run, then one table.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import gc
import json
import math
import pstats
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
from _engine_bench import TimingReporter, clean_up_on_sigterm, fake_genome, fmt_stats, make_project

from evo import genome as genome_files
from evo.archive import METRIC_COLUMNS, Archive
from evo.config import DEFAULT_OPERATORS, Paths, RunConfig
from evo.engine import EVAL_SEED, Engine, EngineError
from evo.evaluation import sha256_file
from evo.evaluator import EVALUATOR_VERSION
from evo.sandbox import detect
from evo.state import RunState

RUN = "scale"
FAIL_RATE = 0.03
OPERATOR_SETS = {
    "all": dict(DEFAULT_OPERATORS),
    "hyperparam": {"hyperparam": 1.0},
    "optuna": {"optuna": 1.0},
    "crossover": {"crossover": 1.0},
}
SEED_SCORES = (0.0, 0.0021, -0.0017)  # the seed's 3 evaluations differ by noise: sigma ~ 0.002


# ---------------------------------------------------------------------------- building an archive


def bowl(lr: float, width: int, depth: int) -> float:
    """The fake genome's val_bpb (see tests/conftest.py)."""
    return 1.5 + math.log(lr / 0.01) ** 2 / 10 + math.log2(width / 64) ** 2 / 50 + 0.01 * depth


def log_tail(rng: random.Random, val_bpb: float | None, depth: int, seed: int) -> str:
    """About 2 KB of what the fake genome's log would end with: training steps, then the
    summary block (or a traceback)."""
    loss = 5.0 + rng.random()
    lines = []
    for step in range(1, 31):
        loss *= 0.97 + 0.01 * rng.random()
        lines.append(f"step {step:05d} | loss {loss:.6f} | lr {0.01 * (1 - step / 40):.6f} | dt {40 + rng.random() * 10:.1f}ms")
    if val_bpb is None:
        lines += ["Traceback (most recent call last):", '  File "train.py", line 21, in <module>',
                  "RuntimeError: boom: shapes do not match"]
    else:
        lines += ["---", f"val_bpb: {val_bpb:.6f}", "training_seconds: 0.5", "total_seconds: 0.6", "peak_vram_mb: 0.0",
                  "mfu_percent: 0.0", "total_tokens_M: 0.1", "num_steps: 10", "num_params_M: 0.01", f"depth: {depth}",
                  f"seed: {seed}"]
    return "\n".join(lines) + "\n"


def metrics(val_bpb: float, depth: int, seed: int) -> dict[str, float]:
    return {"val_bpb": round(val_bpb, 6), "training_seconds": 0.5, "total_seconds": 0.6, "peak_vram_mb": 0.0,
            "mfu_percent": 0.0, "total_tokens_M": 0.1, "num_steps": 10.0, "num_params_M": 0.01, "depth": float(depth),
            "seed": float(seed)}


def build_archive(path: Path, project: Path, size: int, args: argparse.Namespace) -> RunConfig:
    """A synthetic archive of one run with ``size`` genomes (module docstring)."""
    rng = random.Random(args.seed)
    archive = Archive(path)
    config = RunConfig(run=RUN, profile="smoke", population=args.population, seed=args.seed, noise_replicates=3,
                       best_replicates=1, fitness="reported", sandbox=args.sandbox)
    archive.create_run(config, args.sleep, project, sha256_file(project / "prepare.py"), EVALUATOR_VERSION)
    genome_dir = Paths.for_project(project, path).genome_dir(RUN)
    sandbox = "bwrap" if detect(args.sandbox).isolated else "none"
    now = datetime.now()
    t0 = now - timedelta(seconds=2.0 * (size + 3))  # one evaluation every 2 s, ending now

    sources: dict[str, str] = {}
    seen: set[str] = set()
    g_cols: dict[str, list] = {k: [] for k in ("genome_id", "seq", "generation", "operator", "description",
                                               "source_sha256", "normalized_sha256", "created_at")}
    l_cols: dict[str, list] = {k: [] for k in ("parent_id", "child_id", "parent_index")}
    e_cols: dict[str, list] = {k: [] for k in (
        "eval_id", "genome_id", "attempt", "state", "started_at", "finished_at", "seed", "device", "log_path",
        "wall_s", "returncode", "failure_kind", "error", "log_tail", "metrics", "sandbox", *METRIC_COLUMNS)}
    complete: list[int] = []  # indices of COMPLETE genomes
    generation: list[int] = []
    values: list[tuple[float, int, int]] = []
    clock = 0

    def add_eval(gid: str, attempt: int, seed: int, val: float | None, depth: int) -> None:
        nonlocal clock
        start = t0 + timedelta(seconds=2.0 * clock)
        clock += 1
        m = metrics(val, depth, seed) if val is not None else {}
        row = {
            "eval_id": clock, "genome_id": gid, "attempt": attempt, "state": "COMPLETE" if val is not None else "FAIL",
            "started_at": start, "finished_at": start + timedelta(seconds=0.9), "seed": seed, "device": "cpu",
            "log_path": str(genome_files.log_path(genome_dir, gid, attempt)), "wall_s": 0.9 if val is not None else 0.3,
            "returncode": 0 if val is not None else 1, "failure_kind": None if val is not None else "crash",
            "error": None if val is not None else "RuntimeError: boom: shapes do not match",
            "log_tail": log_tail(rng, val, depth, seed), "metrics": json.dumps(m), "sandbox": sandbox,
        }
        row.update({k: m.get(k) for k in METRIC_COLUMNS})
        for k, v in row.items():
            e_cols[k].append(v)

    ops, weights = list(DEFAULT_OPERATORS), list(DEFAULT_OPERATORS.values())
    for i in range(size):
        gid = f"g{i:04d}"
        fail = False
        if i == 0:
            lr, width, depth = 0.04, 2**8, 3
            code = fake_genome(args.sleep)
            norm = genome_files.normalized_sha256(code)
            operator, description, parents = "seed", "seed genome (seed_train.py)", []
        else:
            fail = rng.random() < FAIL_RATE
            while True:
                lr = float(f"{10 ** rng.uniform(-3.5, -0.5):.4g}")
                width, depth, unused = 2 ** rng.randint(3, 11), rng.randint(1, 8), rng.randint(1, 999)
                constants = {"LR": repr(lr), "WIDTH": f"2**{width.bit_length() - 1}", "DEPTH": str(depth),
                             "UNUSED": str(unused)}
                if fail:
                    constants["BEHAVIOUR"] = '"crash"'
                code = fake_genome(args.sleep, constants)
                norm = genome_files.normalized_sha256(code)
                if norm not in seen:
                    break
            cohort = i // args.population
            operator = rng.choices(ops, weights)[0]
            if cohort == 0:
                parents = [0]
            else:
                eligible = complete[:_count_below(complete, cohort * args.population)]
                parents = rng.sample(eligible, 2) if operator == "crossover" and len(eligible) > 1 else [rng.choice(eligible)]
            p = values[parents[0]]
            description = (f"LR {p[0]:g} -> {lr:g}, WIDTH {p[1]} -> {width}" if operator != "crossover" else
                           f"crossover of g{parents[0]:04d} and g{parents[-1]:04d}: DEPTH {p[2]} -> {depth}")
            if operator == "optuna":
                description += f" (optuna tpe, {len(complete)} trials)"
        sha = genome_files.source_sha256(code)
        seen.add(norm)
        sources[sha] = code
        gen = 0 if i == 0 or i < args.population else 1 + max(generation[p] for p in parents)
        generation.append(gen)
        values.append((lr, width, depth))
        created = t0 + timedelta(seconds=2.0 * clock - 0.05)
        for k, v in zip(g_cols, (gid, i, gen, operator, description, sha, norm, created), strict=True):
            g_cols[k].append(v)
        for index, parent in enumerate(parents):
            l_cols["parent_id"].append(f"g{parent:04d}")
            l_cols["child_id"].append(gid)
            l_cols["parent_index"].append(index)
        if i == 0:
            for r, noise in enumerate(SEED_SCORES):
                add_eval(gid, r + 1, EVAL_SEED + r, bowl(lr, width, depth) + noise, depth)
        else:
            add_eval(gid, 1, EVAL_SEED, None if fail else bowl(lr, width, depth), depth)
        if not fail:
            complete.append(i)

    n = len(g_cols["genome_id"])
    genomes = pa.table({"run": [RUN] * n, **g_cols})
    lineage = pa.table({"run": [RUN] * len(l_cols["child_id"]), **l_cols})
    evaluations = pa.table({"run": [RUN] * len(e_cols["eval_id"]), **e_cols})
    source_table = pa.table({"sha256": list(sources), "code": list(sources.values())})
    seed_scores = [bowl(0.04, 2**8, 3) + s for s in SEED_SCORES]
    with duckdb.connect(str(path)) as con:
        con.execute("BEGIN TRANSACTION")
        for table, data in (("sources", source_table), ("genomes", genomes), ("lineage", lineage),
                            ("evaluations", evaluations)):
            con.register("data", data)
            columns = ", ".join(data.column_names)
            con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM data")
            con.unregister("data")
        con.execute("INSERT INTO noise_floor VALUES (?, 'g0000', ?, 3, ?, ?)",
                    [RUN, statistics.stdev(seed_scores), 0.0, now])
        con.execute("COMMIT")
        # start_evaluation takes ids from this sequence: past the inserted ones
        con.execute(f"CREATE OR REPLACE SEQUENCE evaluation_ids START {clock + 1}")
        con.execute("CHECKPOINT")
    return config


def _count_below(sorted_indices: list[int], bound: int) -> int:
    """How many of the sorted ``sorted_indices`` are below ``bound``."""
    return bisect.bisect_left(sorted_indices, bound)


# ---------------------------------------------------------------------------- one engine run (child process)


def peak_rss_mb() -> float:
    """This process's peak resident memory, MiB: ``VmHWM`` of /proc/self/status where there is one.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: on Linux a child made by fork + exec starts with
    its parent's peak (here the archive builder's), so it over-states the engine's.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> int:
    """Resume the run on ``args.archive``; print one JSON line of measurements.

    The one-time load is timed inside ``engine.run`` (``RunState.load`` wrapped), so the
    process loads the run once, as the engine does; what this function reads itself goes
    through small SQL queries.
    """
    rss_start = peak_rss_mb()
    paths = Paths.for_project(args.project, args.archive)
    with duckdb.connect(str(args.archive), read_only=True) as con:
        counted, last_eval = con.execute(
            "SELECT count(*) FILTER (WHERE state NOT IN ('RUNNING', 'INTERRUPTED')), max(eval_id) FROM evaluations "
            "WHERE run = ?", [RUN]).fetchone()
        genomes = con.execute("SELECT count(*) FROM genomes WHERE run = ?", [RUN]).fetchone()[0]
    archive = Archive(paths.archive_path)
    stored = RunConfig.from_json(archive.get_run(RUN).config_json)
    config = dataclasses.replace(stored, operators=json.loads(args.operators), max_evaluations=counted + args.new,
                                 sandbox=args.sandbox)

    loads: list[float] = []
    load = RunState.load.__func__

    def timed_load(cls, archive, run):
        t = time.perf_counter()
        state = load(cls, archive, run)
        loads.append(time.perf_counter() - t)
        return state

    RunState.load = classmethod(timed_load)
    reporter = TimingReporter()
    engine = Engine(paths, archive, config, args.sleep, "cpu", reporter)
    profiler = None
    if args.profile_out:
        import cProfile

        profiler = cProfile.Profile()
    gc.collect()
    called = time.monotonic()
    if profiler:
        profiler.enable()
    stopped = None
    try:
        engine.run(None)
    except EngineError as exc:  # e.g. crossover alone: survivors so alike that every child is a duplicate
        stopped = str(exc)[:160]
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile_out)
    peak_rss = peak_rss_mb()

    with duckdb.connect(str(args.archive), read_only=True) as con:
        new = con.execute(
            "SELECT started_at, finished_at, state FROM evaluations WHERE run = ? AND eval_id > ? ORDER BY started_at",
            [RUN, last_eval]).fetchall()
    gap = [(b[0] - a[1]).total_seconds() for a, b in zip(new, new[1:], strict=False)]
    if not reporter.finishes:
        print("RESULT " + json.dumps({"error": stopped or "no evaluation ran"}), flush=True)
        return 1
    warmup = max(0, min(args.warmup, len(reporter.finishes) - 2))
    first_start, last_finish = reporter.starts[warmup], reporter.finishes[-1]
    steady = max(1, len(new) - warmup)
    result = {
        "genomes": genomes, "counted": counted, "new": len(new), "load_s": loads[0] if loads else math.nan,
        "to_first_start_s": reporter.starts[0][0] - called, "peak_rss_mb": peak_rss, "rss_after_imports_mb": rss_start,
        "gaps_s": gap, "gaps_after_warmup_s": gap[warmup:], "cpu_per_eval_s": (last_finish[1] - first_start[1]) / steady,
        "wall_per_eval_s": (last_finish[0] - first_start[0]) / steady, "warmup": warmup,
        "states": sorted({row[2] for row in new}), "stopped": stopped,
    }
    print("RESULT " + json.dumps(result), flush=True)
    # Proposal threads are daemons that finish their job after the engine stopped; one still
    # in libcst while the interpreter shuts down aborts the process (SIGABRT, seen when the
    # engine stops on an EngineError with proposals in flight): let them end first.
    for thread in threading.enumerate():
        if thread.name.startswith("evo-proposal"):
            thread.join(120)
    return 0


def run_child(base: Path, project: Path, operators: dict[str, float], args: argparse.Namespace,
              profile_out: Path | None = None) -> dict:
    """Resume a fresh copy of ``base`` in a child process; its measurements."""
    work = base.with_name("work.duckdb")
    shutil.copy(base, work)
    shutil.rmtree(project / "genomes", ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", "--archive", str(work), "--project", str(project),
           "--operators", json.dumps(operators), "--new", str(args.new), "--sleep", str(args.sleep),
           "--sandbox", args.sandbox, "--warmup", str(args.warmup)]
    if profile_out:
        cmd += ["--profile-out", str(profile_out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    work.unlink(missing_ok=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(f"engine run failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", flush=True)
        return {"error": f"exit {proc.returncode}"}
    return json.loads(lines[-1][len("RESULT "):])


# ---------------------------------------------------------------------------- driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--sizes", default="100,10000,100000", help="genomes per archive (default 100,10000,100000)")
    parser.add_argument("--new", type=int, default=20, help="new evaluations per engine run (default 20)")
    parser.add_argument("--sleep", type=float, default=0.5, help="seconds each genome sleeps (default 0.5)")
    parser.add_argument("--population", type=int, default=8, help="the run's population (default 8)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="new evaluations left out of the CPU per evaluation (default 3: the first proposals "
                             "parse the context's sources once)")
    parser.add_argument("--operators", default=",".join(OPERATOR_SETS),
                        help=f"operator sets to run, of {','.join(OPERATOR_SETS)} (default all of them)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic archive and the run (default 0)")
    parser.add_argument("--sandbox", default="auto", choices=("auto", "bwrap", "none"), help="genome sandbox (default auto)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run on the largest size")
    parser.add_argument("--profile-top", type=int, default=30, help="functions shown from the profile (default 30)")
    parser.add_argument("--keep", metavar="DIR", help="keep the built archives and the profile in DIR")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--archive", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--project", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--profile-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    clean_up_on_sigterm()

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    sets = [s.strip() for s in args.operators.split(",") if s.strip()]
    unknown = set(sets) - set(OPERATOR_SETS)
    if unknown:
        parser.error(f"unknown operator set(s) {', '.join(sorted(unknown))}")
    sandbox = detect(args.sandbox)
    sandbox_text = "bwrap" if sandbox.isolated else f"none ({args.sandbox})"
    rows: list[tuple[int, float, dict[str, dict]]] = []
    profile_path: Path | None = None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="evo-scaling-") as tmp:
        root = Path(tmp)
        project = make_project(root)
        for size in sizes:
            base = root / f"{size}" / "base.duckdb"
            t = time.monotonic()
            build_archive(base, project, size, args)
            built_s = time.monotonic() - t
            print(f"== {size} genomes: archive built in {built_s:.1f} s ({base.stat().st_size / 2**20:.0f} MB)", flush=True)
            results: dict[str, dict] = {}
            for name in sets:
                r = run_child(base, project, OPERATOR_SETS[name], args)
                results[name] = r
                if "error" in r:
                    print(f"   {name:10}: failed ({r['error']})", flush=True)
                    continue
                worst = max(range(len(r["gaps_s"])), key=r["gaps_s"].__getitem__) if r["gaps_s"] else -1
                print(f"   {name:10}: load {r['load_s']:.2f} s, first start after {r['to_first_start_s']:.2f} s, "
                      f"peak RSS {r['peak_rss_mb']:.0f} MB, gap {fmt_stats(r['gaps_s'])} s (largest before new "
                      f"evaluation {worst + 2}; after the warmup {fmt_stats(r['gaps_after_warmup_s'])} s), "
                      f"CPU/eval {r['cpu_per_eval_s']:.3f} s, wall/eval {r['wall_per_eval_s']:.2f} s, "
                      f"{r['new']} new ({', '.join(r['states'])})"
                      + (f"; the engine stopped: {r['stopped']}" if r["stopped"] else ""), flush=True)
            rows.append((size, built_s, results))
            if size == max(sizes) and not args.no_profile:
                profile_path = root / "engine.prof"
                run_child(base, project, OPERATOR_SETS["all"], args, profile_out=profile_path)
                print_profile(profile_path, size, args.profile_top)
            if args.keep:
                keep = Path(args.keep)
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(base, keep / f"archive-{size}.duckdb")
                if profile_path:
                    shutil.copy(profile_path, keep / "engine.prof")
            shutil.rmtree(base.parent, ignore_errors=True)
    print_table(rows, sets, args, sandbox_text)
    print(f"\ntotal {(time.monotonic() - started) / 60:.1f} min")
    return 0


def print_profile(path: Path, size: int, top: int) -> None:
    print(f"\ncProfile of the engine resuming the {size}-genome run (all operators), top {top} by cumulative time:")
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(top)
    print(f"the same, top {top // 2} by internal time:")
    stats.sort_stats("tottime").print_stats(top // 2)


def print_table(rows: list[tuple[int, float, dict[str, dict]]], sets: list[str], args: argparse.Namespace,
                sandbox: str) -> None:
    print()
    print(f"one slot, genomes sleep {args.sleep:g} s, {args.new} new evaluations per engine run, population "
          f"{args.population}, sandbox {sandbox}; load/RSS/gap from the run with '{sets[0]}' operators; "
          f"CPU/eval leaves out the first {args.warmup} new evaluations")
    cpu_cols = " | ".join(f"{'CPU/eval ' + s + ', n':>18}" for s in sets)
    header = (f"{'genomes':>8} | {'build s':>7} | {'load s':>6} | {'1st start s':>11} | {'peak RSS MB':>11} | "
              f"{'RSS imports MB':>14} | {'gap med/max s':>13} | {'after warmup':>12} | {cpu_cols}")
    print(header)
    print("-" * len(header))
    for size, built_s, results in rows:
        first = results[sets[0]]
        if "error" in first:
            print(f"{size:8d} | {built_s:7.1f} | failed: {first['error']}")
            continue
        cpus = " | ".join(f"{'failed':>18}" if "error" in results[s] else
                          f"{results[s]['cpu_per_eval_s'] * 1000:11.1f} ms{'*' if results[s]['stopped'] else ' '}"
                          f"{results[s]['new']:3d}" for s in sets)
        print(f"{size:8d} | {built_s:7.1f} | {first['load_s']:6.2f} | {first['to_first_start_s']:11.2f} | "
              f"{first['peak_rss_mb']:11.0f} | {first['rss_after_imports_mb']:14.0f} | {fmt_stats(first['gaps_s']):>13} | "
              f"{fmt_stats(first['gaps_after_warmup_s']):>12} | {cpus}")
    if any(r.get("stopped") for _, _, res in rows for r in res.values()):
        print("* the engine stopped before all new evaluations (see its reason above); n: new evaluations it made")
    if len(rows) > 1:
        small, large = rows[0], rows[-1]
        ratios = ", ".join(
            f"{s} {large[2][s]['cpu_per_eval_s'] / small[2][s]['cpu_per_eval_s']:.1f}x" for s in sets
            if "error" not in large[2][s] and "error" not in small[2][s])
        worst_gap = max(max(r.get("gaps_s", []), default=0.0) for _, _, res in rows for r in res.values())
        worst_steady = max(max(r.get("gaps_after_warmup_s", []), default=0.0) for _, _, res in rows for r in res.values())
        print(f"\nCPU per evaluation at {large[0]} vs {small[0]} genomes: {ratios} (target <= 2x); "
              f"largest gap of all runs {worst_gap:.2f} s, {worst_steady:.2f} s after the warmup (target < 1 s)")


if __name__ == "__main__":
    sys.exit(main())
