"""The read-only verbs: ``evo status``, ``runs``, ``export``, ``plot``, ``show``.

Each opens the archive read-only (DuckDB ``read_only``; they work on a read-only copy or
file system and never write it) and reads only the columns it shows: no log tails and
no metrics JSON, except ``evo show``, which prints one genome's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.text import Text

from evo.cli_common import (
    EXIT_OK,
    VIEW_METRICS,
    console,
    engine_of,
    load_results,
    open_archive,
    paths,
    resolve_run,
)
from evo.cli_table import Column, fitted_table

if TYPE_CHECKING:
    from evo.results import GenomeResult


def cmd_status(args: argparse.Namespace) -> int:
    from evo.cli_status import load_status, render_status
    from evo.cli_status_json import status_json
    from evo.run_index import run_state

    if args.top < 0:
        raise ValueError(f"--top takes a number of rows >= 0 (0: all), got {args.top}")
    project = paths(args)
    archive = open_archive(project)
    with archive.reading():  # one connection and one consistent view for every read below
        summaries = archive.run_summaries()
        record = resolve_run(archive, args.run, summaries)
        engine = engine_of(project, record.run)
        summary = next(s for s in summaries if s.run == record.run)
        view = load_status(archive, record, engine, run_state(summary, engine is not None), top=args.top)
    if args.json:
        sys.stdout.write(json.dumps(status_json(view), indent=1, allow_nan=False) + "\n")
        return EXIT_OK
    render_status(view, console, wide=args.wide)
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from evo.config import RunConfig
    from evo.lineage import load_nodes
    from evo.locking import running_engines
    from evo.noise import declared_best
    from evo.run_index import default_run, run_state

    project = paths(args)
    archive = open_archive(project)
    with archive.reading():
        summaries = archive.run_summaries()
        # each run's declared best by its own rule, as evo status, lineage and export name it
        bests = {s.run: declared_best(load_nodes(archive, s.run), RunConfig.from_json(s.record.config_json))
                 for s in summaries}
    engines = {h.run: h for h in running_engines(project.archive_path)}
    default = default_run(summaries)
    rows = []
    for s in summaries:
        holder = engines.get(s.run)
        best = bests[s.run]
        rows.append({
            "name": s.run, "created_at": s.record.created_at.isoformat(timespec="seconds"), "profile": s.record.profile,
            "genomes": s.genomes, "evaluations": s.evaluations,
            "best_genome": best.genome_id if best is not None else None,
            "best_val_bpb": best.val_bpb if best is not None else None,
            "state": run_state(s, holder is not None), "engine_pid": holder.pid if holder else None,
            "default": default is not None and s.run == default.run,
        })
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=1) + "\n")
        return EXIT_OK
    if not rows:
        console.print(f"no runs in {archive.path}; start one with `evo start`", highlight=False)
        return EXIT_OK
    columns = [
        Column("run", [r["name"] + (" *" if r["default"] else "") for r in rows]),
        Column("created (UTC)", [r["created_at"].replace("T", " ")[:16] for r in rows], 2),
        Column("profile", [r["profile"] for r in rows], 3),
        Column("genomes", [str(r["genomes"]) for r in rows], right=True),
        Column("evals", [str(r["evaluations"]) for r in rows], 1, right=True),
        Column("best", [r["best_genome"] or "-" for r in rows], 4),
        Column("best bpb", [f"{r['best_val_bpb']:.6f}" if r["best_val_bpb"] is not None else "-" for r in rows],
               right=True),
        Column("state", [r["state"] + (f" (pid {r['engine_pid']})" if r["engine_pid"] else "") for r in rows]),
    ]
    table, _ = fitted_table(columns, console.width, styles=["bold" if r["default"] else "" for r in rows])
    console.print(table)
    console.print(Text("* the default run of every verb without --run: the latest run whose search got past "
                       "its seed (a child scored)", style="dim"))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from evo import genome as genome_files
    from evo.archive import ArchiveError
    from evo.config import RunConfig
    from evo.export import standalone_source
    from evo.lineage import declared_best, load_nodes
    from evo.results import genome_result
    from evo.results_tsv import write_results_tsv

    archive = open_archive(paths(args))
    record = resolve_run(archive, args.run)
    config = RunConfig.from_json(record.config_json)
    if args.results_tsv:
        if args.output or args.best or args.genome or args.genome_pos:
            raise ValueError("--results-tsv writes the whole run's table and nothing else: export a genome "
                             "(--best, --genome, -o) in a command of its own")
        rows = write_results_tsv(load_results(archive, record.run), Path(args.results_tsv))
        console.print(f"wrote {args.results_tsv} ({len(rows)} evaluated genomes of run {record.run}, "
                      "autoresearch's results.tsv format)", highlight=False)
        return EXIT_OK
    if args.genome_pos is not None and (args.best or args.genome not in (None, args.genome_pos)):
        raise ValueError(f"export one genome: {args.genome_pos} or {'--best' if args.best else args.genome}, not both")
    genome_id = args.genome or args.genome_pos
    if genome_id is None:
        best = declared_best(load_nodes(archive, record.run), config)  # verdicts aggregated in SQL
        if best is None:
            raise ArchiveError(f"run {record.run!r} has no completed genome to export yet")
        genome_id = best.genome_id
    genome = archive.genome(record.run, genome_id)
    chosen = genome_result(genome, archive.evaluations(record.run, genome_id=genome_id, metrics=VIEW_METRICS))
    code = standalone_source(archive.source(genome.source_sha256), record, chosen, _evaluated_seed(chosen),
                             config.time_budget_s)
    out = Path(args.output or "train.py")
    genome_files.write_atomic(out, code)
    score = f"val_bpb {chosen.val_bpb:.6f} (n={chosen.n})" if chosen.val_bpb is not None else chosen.state
    console.print(f"wrote {out} (run {record.run}, genome {chosen.genome_id}, {score}); "
                  f"run it with `python {out.name}` beside prepare.py", highlight=False)
    return EXIT_OK


def _evaluated_seed(result: GenomeResult) -> int:
    """The EVO_SEED of the genome's first COMPLETE evaluation (else its first evaluation;
    the engine's first-evaluation seed for a genome never evaluated)."""
    done = [e for e in result.evaluations if e.state.value == "COMPLETE"] or list(result.evaluations)
    if done:
        return min(done, key=lambda e: e.eval_id).seed
    from evo.engine import EVAL_SEED  # the engine's import chain: only for a never-evaluated genome

    return EVAL_SEED


def cmd_plot(args: argparse.Namespace) -> int:
    from evo.config import RunConfig
    from evo.lineage import declared_best, load_nodes
    from evo.plot import image_format, plot_progress  # matplotlib is slow to import; only this verb needs it

    image_format(Path(args.output))  # a wrong suffix is refused before anything is read
    archive = open_archive(paths(args))
    with archive.reading():
        record = resolve_run(archive, args.run)
        evaluations = archive.evaluations(record.run, metrics=("val_bpb",))
        genomes = archive.genomes(record.run)
        best = declared_best(load_nodes(archive, record.run), RunConfig.from_json(record.config_json))
    declared = (best.genome_id, best.val_bpb, best.n) if best is not None else None
    points = plot_progress(genomes, evaluations, record.run, Path(args.output), declared=declared)
    console.print(f"wrote {args.output} ({len(points)} evaluations of run {record.run})", highlight=False)
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from evo.show import show_text

    archive = open_archive(paths(args))
    record = resolve_run(archive, args.run)
    text = show_text(archive, record.run, args.genome, diff_against=args.diff or None, diff=args.diff is not None)
    sys.stdout.write(text)  # verbatim: no rich markup in source code or diffs
    return EXIT_OK
