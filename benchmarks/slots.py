"""Evaluations per hour and slot utilization of the engine with 1, 2 and 4 evaluation slots,
locally (``Execution(workers=N)``) and on a local Ray instance (``Execution(ray="local", workers=N)``).

Each configuration runs the real engine (smoke profile, CPU, ``fitness="reported"``, default
operators hyperparam/optuna/crossover, noise_replicates = best_replicates = 1) on a fresh
temporary project and archive, with the torch-free fake genome of ``tests/conftest.py``
sleeping a fixed ``--sleep`` seconds (written into the genome's body, so mutations of its
``SLEEP_S`` constant cannot change it; a sleeping genome uses no CPU, so 4 slots on 2 cores
is fine), until ``--evaluations`` evaluations are counted. Everything is then read back
from the archive: each evaluation's ``started_at`` (recorded just before the slot gets the
job) and ``finished_at`` (recorded when the engine took its result).

Measures, per configuration:

* span: first evaluation's start to the last one's end; evaluations per hour over it;
* steady: the same from the moment the first mutant started (the seed genome is evaluated
  alone first: its score is needed before any mutant can be made);
* utilization of each slot: seconds it held an evaluation / the span (whole run, and steady
  part); slots are the archive's devices where they name the slots (local), else lanes
  rebuilt from the intervals (Ray records every task on this node as ``ray:<ip>/cpu``);
* ideal speed-up: what a perfect engine could reach with this many evaluations, given that
  the seed runs alone and the last round may not fill every slot;
* where a slot's time goes: seconds per evaluation held by the slot, of which the genome
  process's own wall time (``wall_s``: launcher, sandbox, interpreter, the sleep, and up to
  0.25 s of the runner's polling), the rest (workspace, verdict, and on Ray the task's start);
  the engine's gap between one evaluation's end and the slot's next start; and the training
  share: the genomes' sleep / (slots x steady span), what is left for the genome itself.

Acceptance target (issue): 4 slots give >= 3.6x the evaluations per hour of 1 slot, locally
and on Ray, and slot utilization >= 95%.

Ray: by default this script starts Ray itself with ``num_cpus = max(slots, cores)``, because
``Execution(ray="local")`` lets ``RayPool`` call ``ray.init()`` with Ray's defaults
(``num_cpus`` = the machine's cores) and each CPU task asks for one CPU: on a 2-core machine
only 2 of 4 slots would ever run at once. ``--ray-default-init`` measures that default.
Either way ``RAY_ADDRESS=local`` is set: ``ray.init()`` without an address attaches to a
cluster that ``ray start`` made on this machine (someone else's) where there is one.

A configuration whose engine fails is reported FAILED with its error; the others go on.

Usage (from the repository root, the venv active):

    nice -n 19 python benchmarks/slots.py [--slots 1,2,4] [--backends local,ray] [--sleep 5]
        [--evaluations 25] [--sandbox auto]

With the defaults (25 evaluations of 5 s; 1 + 24 so that the mutants divide evenly over 1, 2
and 4 slots) it takes about 9 minutes on a 2-core machine. Prints one table of throughput
and utilization, and one of where the slots' time went.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from _engine_bench import (
    TimingReporter,
    busy_seconds,
    clean_up_on_sigterm,
    fake_genome,
    fmt_stats,
    gaps,
    lanes,
    make_project,
)

from evo.archive import Archive
from evo.config import Paths, RunConfig
from evo.engine import Engine, Execution
from evo.records import EvalState
from evo.sandbox import detect


@dataclass
class Measured:
    """One configuration's numbers (``error`` set when the engine failed)."""

    backend: str
    slots: int
    evaluations: int = 0
    span_s: float = math.nan
    steady_evaluations: int = 0
    steady_span_s: float = math.nan
    util: list[float] = field(default_factory=list)
    util_steady: list[float] = field(default_factory=list)
    held_s: list[float] = field(default_factory=list)
    process_s: list[float] = field(default_factory=list)
    held_minus_process_s: list[float] = field(default_factory=list)
    gaps_s: list[float] = field(default_factory=list)
    slots_from: str = ""
    engine_wall_s: float = math.nan
    max_parallel: int = 0
    error: str | None = None

    @property
    def per_hour(self) -> float:
        return 3600.0 * self.evaluations / self.span_s if self.span_s > 0 else math.nan

    @property
    def steady_per_hour(self) -> float:
        return 3600.0 * self.steady_evaluations / self.steady_span_s if self.steady_span_s > 0 else math.nan


def ideal_span_units(evaluations: int, slots: int) -> int:
    """Rounds of one evaluation's duration a perfect engine needs: the seed alone, then the
    others ``slots`` at a time."""
    return 1 + math.ceil((evaluations - 1) / slots)


def max_parallel(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def measure(archive: Archive, run: str, backend: str, slots: int) -> Measured:
    """Throughput and utilization of a finished run, from its archive."""
    evals = [e for e in archive.evaluations(run) if e.state is not EvalState.INTERRUPTED and e.finished_at]
    m = Measured(backend, slots, evaluations=len(evals))
    ts = {e.eval_id: (e.started_at.timestamp(), e.finished_at.timestamp()) for e in evals}
    intervals = list(ts.values())
    start, end = min(a for a, _ in intervals), max(b for _, b in intervals)
    first_mutant = min(ts[e.eval_id][0] for e in evals if e.genome_id != "g0000")
    m.span_s = end - start
    m.steady_span_s = end - first_mutant
    m.steady_evaluations = sum(1 for a, _ in intervals if a >= first_mutant)
    devices = sorted({e.device for e in evals})
    if len(devices) == slots:
        m.slots_from = "devices"
        per_slot = [[ts[e.eval_id] for e in evals if e.device == d] for d in devices]
    else:
        m.slots_from = f"lanes ({len(devices)} device name(s): {', '.join(devices)})"
        per_slot = lanes(intervals, slots)
    m.util = [busy_seconds(lane, start, end) / m.span_s for lane in per_slot]
    m.util_steady = [busy_seconds(lane, first_mutant, end) / m.steady_span_s for lane in per_slot]
    m.held_s = [b - a for a, b in intervals]
    m.process_s = [e.wall_s for e in evals if e.wall_s is not None]
    m.held_minus_process_s = [ts[e.eval_id][1] - ts[e.eval_id][0] - e.wall_s for e in evals if e.wall_s is not None]
    m.gaps_s = [g for lane in per_slot for g in gaps(lane) if g >= 0]
    m.max_parallel = max_parallel(intervals)
    return m


def run_config(backend: str, slots: int, args: argparse.Namespace, root: Path) -> Measured:
    project = make_project(root)
    paths = Paths.for_project(project)
    archive = Archive(paths.archive_path)
    run = f"{backend}-{slots}"
    config = RunConfig(
        run=run, profile="smoke", population=args.population, seed=args.seed, max_evaluations=args.evaluations,
        noise_replicates=1, best_replicates=1, fitness="reported", sandbox=args.sandbox,
    )
    archive.create_run(config, args.sleep, project)
    started_ray = False
    if backend == "ray":
        import ray

        # "local" must mean a new instance: ray.init() without an address attaches to a cluster
        # that `ray start` made on this machine (someone else's), if there is one
        os.environ["RAY_ADDRESS"] = "local"
        if not args.ray_default_init:
            ray.init(address="local", num_cpus=max(slots, os.cpu_count() or 1), include_dashboard=False,
                     log_to_driver=False)
            started_ray = True
        execution = Execution(ray="local", workers=slots)
    else:
        execution = Execution(workers=slots)
    reporter = TimingReporter()
    t0 = time.monotonic()
    try:
        Engine(paths, archive, config, args.sleep, "cpu", reporter, execution).run(fake_genome(args.sleep))
        error = None
    except Exception as exc:  # noqa: BLE001 -- reported in the table, the other configurations go on
        error = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    wall = time.monotonic() - t0
    try:
        m = measure(archive, run, backend, slots)
    except ValueError as exc:  # nothing (or only the seed) was evaluated
        m = Measured(backend, slots, error=str(exc))
    m.engine_wall_s = wall
    m.error = error or m.error
    return m


def pct(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{100 * min(values):.1f}/{100 * statistics.fmean(values):.1f}"


def print_tables(rows: list[Measured], args: argparse.Namespace, sandbox: str) -> None:
    print()
    print(f"fake genome sleeping {args.sleep:g} s, {args.evaluations} evaluations per configuration, "
          f"population {args.population}, sandbox {sandbox}, {os.cpu_count()} cores"
          + (", Ray started by RayPool with its defaults" if args.ray_default_init else
             ", Ray started with num_cpus = max(slots, cores)"))
    base = {r.backend: r for r in rows if r.slots == 1 and r.error is None}
    header = (f"{'config':6} | {'slots':>5} | {'evals':>5} | {'span s':>7} | {'evals/h':>7} | {'speed-up':>8} | "
              f"{'ideal':>5} | {'util % min/mean':>15} | {'steady evals/h':>14} | {'steady speed-up':>15} | "
              f"{'steady util % min/mean':>22}")
    print(header)
    print("-" * len(header))
    for r in rows:
        if r.error is not None and not r.evaluations:
            print(f"{r.backend:6} | {r.slots:5d} | FAILED: {r.error}")
            continue
        one = base.get(r.backend)
        speed = f"{r.per_hour / one.per_hour:.2f}x" if one else "-"
        steady = f"{r.steady_per_hour / one.steady_per_hour:.2f}x" if one else "-"
        ideal = ideal_span_units(r.evaluations, 1) / ideal_span_units(r.evaluations, r.slots)
        print(f"{r.backend:6} | {r.slots:5d} | {r.evaluations:5d} | {r.span_s:7.1f} | {r.per_hour:7.0f} | {speed:>8} | "
              f"{ideal:4.2f}x | {pct(r.util):>15} | {r.steady_per_hour:14.0f} | {steady:>15} | {pct(r.util_steady):>22}"
              + (f"  (engine stopped: {r.error})" if r.error else ""))
    print()
    print(f"where the slots' time went (seconds per evaluation, median/max; the genome sleeps {args.sleep:g} s; "
          "training share: the genomes' sleep / (slots x steady span))")
    header = (f"{'config':6} | {'slots':>5} | {'held by slot':>12} | {'genome process':>14} | {'held - process':>14} | "
              f"{'engine gap':>10} | {'training share %':>16} | {'most at once':>12} | {'engine wall s':>13} | slots from")
    print(header)
    print("-" * len(header))
    for r in rows:
        if not r.evaluations:
            continue
        print(f"{r.backend:6} | {r.slots:5d} | {fmt_stats(r.held_s):>12} | {fmt_stats(r.process_s):>14} | "
              f"{fmt_stats(r.held_minus_process_s):>14} | {fmt_stats(r.gaps_s):>10} | "
              f"{100 * r.steady_evaluations * args.sleep / (r.slots * r.steady_span_s):16.1f} | "
              f"{r.max_parallel:12d} | {r.engine_wall_s:13.1f} | "
              f"{r.slots_from}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--slots", default="1,2,4", help="slot counts, comma-separated (default 1,2,4)")
    parser.add_argument("--backends", default="local,ray", help="local and/or ray (default both)")
    parser.add_argument("--sleep", type=float, default=5.0, help="seconds each genome sleeps (default 5)")
    parser.add_argument("--evaluations", type=int, default=25,
                        help="max_evaluations of each configuration (default 25: the seed + 24 mutants)")
    parser.add_argument("--population", type=int, default=8, help="population, equal for all configurations (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="the engine's seed (default 0)")
    parser.add_argument("--sandbox", default="auto", choices=("auto", "bwrap", "none"), help="genome sandbox (default auto)")
    parser.add_argument("--ray-default-init", action="store_true",
                        help="let RayPool start Ray with its defaults (num_cpus = cores) instead of num_cpus = max(slots, cores)")
    args = parser.parse_args(argv)
    clean_up_on_sigterm()

    slot_counts = [int(s) for s in args.slots.split(",") if s.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    sandbox = detect(args.sandbox)
    sandbox_text = "bwrap" if sandbox.isolated else f"none ({args.sandbox}{': ' + sandbox.reason if sandbox.reason else ''})"
    rows: list[Measured] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="evo-slots-") as tmp:
        for backend in backends:
            for slots in slot_counts:
                print(f"== {backend}, {slots} slot(s) ...", flush=True)
                m = run_config(backend, slots, args, Path(tmp) / f"{backend}-{slots}")
                rows.append(m)
                print(f"   {m.evaluations} evaluations, span {m.span_s:.1f} s, {m.per_hour:.0f}/h"
                      + (f", error: {m.error}" if m.error else ""), flush=True)
    print_tables(rows, args, sandbox_text)
    print(f"\ntotal {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
