"""A fast in-process stand-in for ``evo start`` on the synthetic landscapes, for tuning.

Drives evo's own :class:`evo.scheduler.Scheduler` and :class:`evo.state.RunState` (the
same decisions as the engine with one slot: due replicates, racing, births, operators,
credit) but records genomes and evaluations in memory and reads each genome's value from
``landscapes.reading`` instead of running it: no archive, no subprocess, no sandbox. A
64-evaluation run takes seconds instead of ~35 s. What it prints is for choosing
settings; the numbers of record come from ``search_suite.py``, which runs the real CLI.

Usage:
    python benchmarks/search_sim.py [--landscapes sphere:0,...] [--repeats 10] [--evaluations 64,160]
        [--set config.FIELD=VALUE | --set evo.MODULE.ATTR=VALUE ...] [--json FILE]

``--set`` tries a setting without editing evo: ``config.tournament_size=5`` overrides a
:class:`evo.config.RunConfig` field, ``evo.racing.REPLICATE_SHARE=0.1`` a module constant
(values are Python literals). The same repeats run with the same seeds, so two invocations
that differ only in ``--set`` compare paired. ``--first-repeat N`` starts at repeat N: a
setting chosen on repeats 0..N-1 is checked on seeds it was not chosen on (the defaults were
tuned on repeats 0-5, which flatter them). ``--json`` writes every repeat's curve.
``--oracle`` also prints, at the last checkpoint, the true fitness of the best genome the
run evaluated at all, and of the best with ``best_replicates`` readings: how much is lost
in choosing (selection) rather than in what the operators proposed (exploration).
``--by-operator`` prints, per mutation operator over all repeats, its children, how many
were truly better than their first parent, how many failed (past a cliff), and the median
true gain (parent minus child, bits/byte): which operator's evaluations pay.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import json
import statistics
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import landscapes as L  # noqa: E402

from evo.config import RunConfig  # noqa: E402
from evo.engine import evo_seed  # noqa: E402
from evo.genome import normalized_sha256, source_sha256  # noqa: E402
from evo.operators import REGISTRY  # noqa: E402
from evo.records import EvalState, EvaluationRecord, GenomeRecord  # noqa: E402
from evo.scheduler import Birth, Due, Scheduler  # noqa: E402
from evo.state import RunState, SourceCache  # noqa: E402

T0 = datetime(2026, 1, 1)
CALIBRATION_EVERY = 8  # --calibration: a checkpoint every this many evaluations


def simulate(land: L.Landscape, repeat: int, evaluations: int, keep: dict | None = None, **overrides) -> list[float]:
    """True fitness of evo's declared best after each evaluation's worth of spending
    (element i: after ``i + 1`` full-budget evaluations; a screen costs its fidelity)."""
    config = RunConfig(run="sim", profile="smoke", seed=repeat, max_evaluations=evaluations, fitness="reported",
                       **{"proposal_workers": 0, **overrides})
    operators = {n: REGISTRY[n](config) for n, w in config.operators.items() if w > 0}
    sources: dict[str, str] = {}
    state = RunState([], [], SourceCache(sources.__getitem__))
    scheduler = Scheduler(config, operators, "smoke", 1.0, lambda: "", L.landscape_genome(land), "landscape.py")
    spent: list[tuple[float, float]] = []  # (evaluations spent, true fitness of the declared best)
    true_of: dict[str, float | None] = {}
    eval_id = 0
    try:
        while state.spent() < evaluations - 1e-9:
            job = scheduler.next(state, 0)
            if job is None:
                break
            if isinstance(job, Birth):
                child = job.child
                sha = source_sha256(child.code)
                sources[sha] = child.code
                genome = GenomeRecord("sim", f"g{len(state):04d}", child.generation, child.operator, child.description,
                                      sha, normalized_sha256(child.code), T0 + timedelta(seconds=len(state)),
                                      child.parents)
                state.add_genome(genome, child.code)
                replicate = 0
            else:
                genome, replicate = job.result.genome, job.replicate
            held_out = isinstance(job, Due) and job.held_out
            seed = evo_seed(replicate, held_out)
            eval_id += 1
            code = sources[genome.source_sha256]
            value = L.reading(land, L._values(code), seed, job.fidelity)
            ok = value is not None
            state.record(EvaluationRecord(
                eval_id, "sim", genome.genome_id, 1, EvalState.COMPLETE if ok else EvalState.FAIL, T0, T0,
                seed, "cpu", "", metrics={"val_bpb": value} if ok else {}, held_out=held_out, fidelity=job.fidelity,
            ))
            best = state.incumbent(config.best_replicates)
            if keep is not None and "calibration" in keep and eval_id % CALIBRATION_EVERY == 0:
                keep["calibration"].append(calibration_point(land, state, sources, config.best_replicates))
            if best is None:
                spent.append((state.spent(), 1.0))
                continue
            if best.genome.source_sha256 not in true_of:
                true_of[best.genome.source_sha256] = L.true_fitness(land, sources[best.genome.source_sha256])
            spent.append((state.spent(), true_of[best.genome.source_sha256]))
    finally:
        scheduler.close()
    if keep is not None:
        keep.update(state=state, sources=sources)
    return by_evaluation(spent, evaluations)


def calibration_point(land: L.Landscape, state: RunState, sources: dict[str, str], best_replicates: int
                      ) -> tuple[float, bool] | None:
    """``(stated P(best), whether the declared best is truly the best COMPLETE genome)``
    now (``None`` without a stated probability): what ``evo status`` would claim, and the truth.
    A genome whose true fitness equals the lowest (an edit of an ignored constant) counts as best."""
    verdict = state.verdict(best_replicates)
    if verdict.best is None or verdict.probability is None:
        return None
    trues = [t for r in state.results() if r.is_complete
             and (t := L.true_fitness(land, sources[r.genome.source_sha256])) is not None]
    mine = L.true_fitness(land, sources[state.result(verdict.best).genome.source_sha256])
    return verdict.probability, mine is not None and mine <= min(trues) + 1e-12


def calibration_report(points: list[tuple[float, bool]]) -> str:
    """Stated probability vs. how often it was true, overall and in bins of the statement."""
    if not points:
        return "calibration: no stated probability"
    cells = [f"calibration over {len(points)} checkpoints: stated {statistics.fmean(p for p, _ in points):.2f}, "
             f"true {statistics.fmean(t for _, t in points):.2f}"]
    for low, high in ((0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01)):
        inside = [(p, t) for p, t in points if low <= p < high]
        if inside:
            cells.append(f"[{low:.1f}, {min(high, 1.0):.1f}): {len(inside)} stated {statistics.fmean(p for p, _ in inside):.2f}"
                         f" true {statistics.fmean(t for _, t in inside):.2f}")
    return "; ".join(cells)


def best_evaluated(land: L.Landscape, state: RunState, sources: dict[str, str], min_readings: int = 1) -> float | None:
    """The true fitness of the best genome of ``state`` with at least ``min_readings``
    COMPLETE full-budget readings (held-out ones not counted), ``None`` if there is none:
    what a perfect choice among what the run evaluated would have given."""
    trues = [L.true_fitness(land, sources[r.genome.source_sha256]) for r in state.results() if r.n >= min_readings]
    return min((t for t in trues if t is not None), default=None)


def operator_report(land: L.Landscape, runs: list[dict]) -> dict[str, list]:
    """Operator name -> ``[children, truly better than their first parent, failed, gains]`` of
    the children of ``runs`` (each a ``keep`` of :func:`simulate`: its state and sources;
    gains: parent's true fitness minus the child's, bits/byte, for children and parents
    that did not fail)."""
    report: dict[str, list] = {}
    for run in runs:
        state, sources = run["state"], run["sources"]
        for r in state.results():
            if not r.genome.parents:
                continue
            row = report.setdefault(r.genome.operator, [0, 0, 0, []])
            child = L.true_fitness(land, sources[r.genome.source_sha256])
            parent = L.true_fitness(land, sources[state.result(r.genome.parents[0]).genome.source_sha256])
            row[0] += 1
            if child is None:
                row[2] += 1
            elif parent is not None:
                row[1] += child < parent - 1e-12
                row[3].append(parent - child)
    return report


def by_evaluation(spent: list[tuple[float, float]], evaluations: int) -> list[float]:
    """Element i: the true fitness after ``i + 1`` evaluations' worth of spending (the last
    reading at or below it; 1.0 before any)."""
    curve, j, last = [], 0, 1.0
    for n in range(1, evaluations + 1):
        while j < len(spent) and spent[j][0] <= n + 1e-9:
            last = spent[j][1]
            j += 1
        curve.append(last)
    return curve


def apply_settings(settings: list[str]) -> dict:
    """Apply ``--set`` values: module constants are set now; returns the RunConfig overrides.

    Raises:
        ValueError: a setting is not ``NAME=VALUE``, names no RunConfig field or module
            attribute, or its value is not a Python literal.
    """
    overrides = {}
    fields = set(RunConfig.__dataclass_fields__)
    for setting in settings:
        name, sep, text = setting.partition("=")
        if not sep:
            raise ValueError(f"--set takes NAME=VALUE, got {setting!r}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise ValueError(f"--set {name}: {text!r} is not a Python literal") from exc
        if name.startswith("config."):
            if name[7:] not in fields:
                raise ValueError(f"--set {name}: RunConfig has no field {name[7:]!r}")
            overrides[name[7:]] = value
            continue
        module_name, _, attr = name.rpartition(".")
        module = None
        if module_name == "evo" or module_name.startswith("evo."):
            with contextlib.suppress(ImportError):
                module = importlib.import_module(module_name)
        if module is None or not hasattr(module, attr):
            raise ValueError(f"--set {name}: not a config.FIELD nor an attribute of an evo module")
        setattr(module, attr, value)
    return overrides


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--landscapes", default="sphere:0,coupled:0,cliff:0,integer:0,wide:0,ridge:0")
    p.add_argument("--repeats", type=int, default=6)
    p.add_argument("--first-repeat", type=int, default=0,
                   help="run repeats N .. N+repeats-1 (fresh seeds: check a setting chosen on repeats 0..N-1)")
    p.add_argument("--evaluations", default="64,160")
    p.add_argument("--screen", type=float, default=0.0, help="screen fraction (evo.screening; 0: off)")
    p.add_argument("--eta", type=int, default=3)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="config.FIELD=VALUE or evo.MODULE.ATTR=VALUE (repeatable; module docstring)")
    p.add_argument("--json", metavar="FILE", help="write {landscape: [curve per repeat]} here")
    p.add_argument("--oracle", action="store_true",
                   help="also print the true fitness of the best genome evaluated (at the last checkpoint)")
    p.add_argument("--calibration", action="store_true",
                   help="also print the declared best's stated P(best) against how often it was truly the best "
                   f"(a checkpoint every {CALIBRATION_EVERY} evaluations)")
    p.add_argument("--by-operator", action="store_true",
                   help="also print each operator's children: truly better than their parent, failed, median gain")
    args = p.parse_args(argv)
    try:
        overrides = {"screen_fraction": args.screen, "screen_eta": args.eta, **apply_settings(args.set)}
    except ValueError as exc:
        p.error(str(exc))
    curves_of: dict[str, list[list[float]]] = {}
    all_points: list[tuple[float, bool]] = []
    checkpoints = [int(x) for x in args.evaluations.split(",")]
    repeats = range(args.first_repeat, args.first_repeat + args.repeats)
    for name in args.landscapes.split(","):
        land = L.parse_name(name)
        started = time.monotonic()
        kept = [({"calibration": []} if args.calibration else {}) if args.oracle or args.by_operator or args.calibration
                 else None for _ in repeats]  # each run's state, only if read
        curves = curves_of[name] = [simulate(land, r, max(checkpoints), keep=k, **overrides)
                                    for r, k in zip(repeats, kept, strict=True)]
        cells = []
        for n in checkpoints:
            xs = [c[min(n, len(c)) - 1] for c in curves]
            se = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")
            cells.append(f"@{n} {statistics.fmean(xs):.4f} ± {se:.4f}")
        if args.oracle:
            k = overrides.get("best_replicates", RunConfig.best_replicates)
            for label, least in (("best evaluated", 1), (f"best with >= {k} readings", k)):
                xs = [best_evaluated(land, x["state"], x["sources"], least) for x in kept]
                xs = [x for x in xs if x is not None]
                cells.append(f"{label} {statistics.fmean(xs):.4f}" if xs else f"{label} -")
        print(f"{name:12s} {'  '.join(cells)}   ({time.monotonic() - started:.0f} s)", flush=True)
        if args.calibration:
            points = [c for x in kept for c in x["calibration"] if c is not None]
            all_points.extend(points)
            print(f"  {calibration_report(points)}", flush=True)
        if args.by_operator:
            for op, (n, better, failed, gains) in sorted(operator_report(land, kept).items()):
                median = f"{statistics.median(gains):+.4f}" if gains else "-"
                print(f"  {op:12s} {n:4d} children, {better:4d} better than their parent, {failed:3d} failed, "
                      f"median gain {median}", flush=True)
        if args.json:  # after each landscape, so a stopped run keeps what it finished
            Path(args.json).write_text(json.dumps(curves_of))
    if args.calibration:
        print(f"all landscapes: {calibration_report(all_points)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
