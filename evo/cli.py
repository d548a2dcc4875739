"""The ``evo`` command line: the parser, and one small function per verb returning an exit code.

The verbs live in modules of their own, imported only when they run (``evo.cli_run``:
start, resume; ``evo.cli_views``: status, runs, export, plot, show), so ``evo --help``
and the read-only verbs never import the engine, libcst, optuna, the LLM SDK, torch or
Ray. Typed errors become one ``error:`` line on stderr and exit status 2 at this
boundary; Ctrl-C (or SIGTERM) stops a run cleanly with status 130 and a hint to resume,
and Ctrl-C at any other moment, imports included, exits 130 with one line.

Every verb names its run with ``--run NAME``; the positional ``RUN`` that ``status``,
``lineage``, ``plot`` and ``resume`` also accept is the same thing, kept for
compatibility. Without either, the default run is the latest one whose search got past
its seed (``evo.run_index.default_run``).
"""

from __future__ import annotations

import sys

try:
    import argparse
    import importlib
    import os
    from collections.abc import Callable, Sequence
    from pathlib import Path
    from typing import Any

    from evo import cli_common
    from evo.cli_common import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, console, err_console, is_user_error
    from evo.config import DATASETS, DEFAULT_LLM_MODEL, PROFILES, SELECTIONS, Paths
    from evo.lineage_render import FORMATS
except KeyboardInterrupt:  # Ctrl-C while Python loads evo: one line, no traceback
    sys.stderr.write("interrupted\n")
    raise SystemExit(130) from None

# Names the parser shows, kept here so that `evo --help` needs none of the modules that
# define them (tests/test_cli_speed.py checks they match evo.operators.REGISTRY,
# evo.operators.optuna_sampler.SAMPLERS and evo.llm.client.API_KEY_ENV).
OPERATOR_NAMES = ("crossover", "hyperparam", "llm", "optuna")
SAMPLER_NAMES = ("gp", "tpe", "cmaes")
API_KEY_ENV = "ANTHROPIC_API_KEY"

# Old import paths of functions that moved to evo.cli_run and evo.cli_views, resolved on first use.
_MOVED = {"_parse_operators": "evo.cli_run", "_llm_ready": "evo.cli_run", "cmd_start": "evo.cli_run",
          "cmd_resume": "evo.cli_run", "cmd_status": "evo.cli_views", "cmd_runs": "evo.cli_views",
          "cmd_export": "evo.cli_views", "cmd_plot": "evo.cli_views", "cmd_show": "evo.cli_views"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _verb(module: str, name: str) -> Callable[[argparse.Namespace], int]:
    """The command ``module.name``, imported when it runs."""

    def run(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), name)(args)

    run.__name__ = name
    return run


# ---------------------------------------------------------------------------- helpers (shared with cmd_lineage)

def _paths(args: argparse.Namespace) -> Paths:
    return cli_common.paths(args)


def _open_archive(paths: Paths) -> Any:
    """The archive, read-only (the lineage verb only reads)."""
    return cli_common.open_archive(paths, read_only=True)


def _run_record(archive: Any, name: str | None) -> Any:
    return cli_common.resolve_run(archive, name)


# ---------------------------------------------------------------------------- verbs

def cmd_lineage(args: argparse.Namespace) -> int:
    import os

    from evo.lineage import load_lineage
    from evo.lineage_render import color_system, format_for, tree_lines, write_graph, write_tree
    from evo.viewer import write_lineage_html

    output = Path(args.output) if args.output else None
    if args.format and output is None:
        raise ValueError("--format needs -o FILE")
    fmt = format_for(output, args.format) if output is not None else None  # refused before anything is read
    archive = _open_archive(_paths(args))
    record = _run_record(archive, args.run)
    lineage = load_lineage(archive, record)
    if args.html:
        page = write_lineage_html(archive, record, Path(args.html), lineage)
        size = f"{page.size_bytes / 1e6:.1f} MB" if page.size_bytes >= 1e6 else f"{page.size_bytes / 1e3:.0f} kB"
        kept = "" if page.detailed == page.genomes else f"; metrics, diffs and log tails of {page.detailed}"
        console.print(f"wrote {args.html} ({page.genomes} genomes{kept}; {size}); open it in a browser, it works "
                      "offline", highlight=False, markup=False, soft_wrap=True)
    if output is not None:
        write_graph(lineage, fmt, output)
        console.print(f"wrote {len(lineage.nodes)} genomes and {len(lineage.edges)} edges to {output}",
                      highlight=False, markup=False, soft_wrap=True)
    if args.html or output is not None:
        return EXIT_OK
    top = lineage.best
    title = f"lineage of run {record.run} (★ = ancestry of the best genome"
    title += f", {top.genome_id} {top.val_bpb:.6f})" if top else ")"
    try:
        write_tree(tree_lines(lineage, title), console.file, color_system(console))
    except BrokenPipeError:  # `evo lineage | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
    return EXIT_OK


# ---------------------------------------------------------------------------- parser

RUN_HELP = "the run (default: the latest whose search got past its seed; see `evo runs`)"
POSITIONAL_RUN_HELP = "the run, as --run NAME (accepted for compatibility)"
CONCURRENT_HELP = ("run even if another run of this project is going (refused by default: engines sharing cores "
                   "or GPUs halve each other's throughput and skew every timed val_bpb)")


def _slots_options(p: argparse.ArgumentParser) -> None:
    slots = p.add_argument_group("evaluation slots")
    slots.add_argument("--gpus", default=None, metavar="0,1,...",
                       help="CUDA devices to use, one genome on each at a time (default: every visible GPU)")
    slots.add_argument("--workers", type=int, default=None, metavar="N",
                       help="genomes evaluated at once: on CPU, the cores are split into N pinned blocks "
                       "(default 1); with --ray, Ray tasks in flight (default: the cluster's GPUs)")
    slots.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="run each evaluation as a Ray task on a cluster: auto (the one `ray start` made "
                       "here), HOST:PORT, or local (a Ray instance of this process); needs pip install 'evo[ray]'")
    slots.add_argument("--warm-start", action=argparse.BooleanOptionalAction, default=None,
                       help="while a slot's genome exports its model and is scored, start the next genome's "
                       "interpreter (Python, torch; on a GPU torch.compile's modules too) and hold it until the next "
                       "genome is known; a genome whose code touches the environment still starts cold "
                       "(default: on for GPU slots, off on CPU, where the imports compete for the same cores)")
    slots.add_argument("--allow-concurrent", action="store_true", help=CONCURRENT_HELP)


def build_parser() -> argparse.ArgumentParser:
    project = argparse.ArgumentParser(add_help=False)
    project.add_argument("--project", default=".", metavar="DIR",
                         help="project folder with prepare.py, seed_train.py, genomes/ and archive/ (default: .)")
    project.add_argument("--archive", default=None, metavar="PATH",
                         help="DuckDB archive file (default: <project>/archive/evo.duckdb)")
    common = argparse.ArgumentParser(add_help=False, parents=[project])
    common.add_argument("--run", dest="run_option", default=None, metavar="NAME", help=RUN_HELP)
    resumable = argparse.ArgumentParser(add_help=False, parents=[project])  # resume's default run differs
    resumable.add_argument("--run", dest="run_option", default=None, metavar="NAME",
                           help="the run (default: the most recently created stopped run; see `evo runs`)")

    parser = argparse.ArgumentParser(
        prog="evo",
        description="Evolutionary population search over train.py genomes, scored by val_bpb "
        "(validation bits per byte, lower is better) under a fixed training time budget.",
        epilog="Every verb but start names its run with --run NAME (default: the latest run whose search got "
        "past its seed; for resume, the latest stopped run); `evo runs` lists them.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("start", parents=[project], help="start a new run",
                       description="Start a new run: evaluate the seed genome and its mutants (generation 0), "
                       "then evolve the population generation by generation. Ctrl-C stops cleanly; "
                       "`evo resume` continues. Refused while another run of the project is going, "
                       "unless --allow-concurrent.")
    p.add_argument("--population", type=int, default=8, help="survivors kept and children per generation (default 8)")
    p.add_argument("--generations", type=int, default=None, help="stop after this many generations (default: until Ctrl-C)")
    p.add_argument("--profile", choices=PROFILES, default=None,
                   help="harness profile; val_bpb is comparable only within one (default: gpu with CUDA, else cpu)")
    p.add_argument("--dataset", choices=DATASETS, default=None,
                   help="corpus (default: climbmix on the gpu profile, downloaded on first use; "
                        "sotu, embedded and offline, on cpu and smoke)")
    p.add_argument("--time-budget", type=float, default=None, metavar="S",
                   help="training seconds per genome (default: the profile's: gpu 300, cpu 30, smoke 3)")
    p.add_argument("--wall-limit", type=float, default=None, metavar="S",
                   help="hard wall-clock limit per genome process (default: 2 x budget + 120 s)")
    p.add_argument("--run", default=None, metavar="NAME", help="name of the run (default: run-<date>-<time>)")
    p.add_argument("--seed-genome", default=None, metavar="FILE", help="first genome (default: <project>/seed_train.py)")
    p.add_argument("--seed", type=int, default=0, help="random seed of selection and mutation (default 0)")
    p.add_argument("--max-evaluations", type=int, default=None, metavar="N",
                   help="stop after N evaluations, replicates included; a screen counts as its fraction "
                   "(default: no limit)")
    search = p.add_argument_group("noise-aware search")
    search.add_argument("--noise-replicates", type=int, default=2, metavar="N",
                        help="evaluations of the seed genome with different seeds, the first measure of the noise "
                        "floor sigma, which every later replicate refines (default 2; 1 turns noise awareness off)")
    search.add_argument("--best-replicates", type=int, default=2, metavar="N",
                        help="evaluations a genome needs before it is declared the run's best: the one most "
                        "likely to be best among such genomes (default 2)")
    search.add_argument("--held-out", type=int, default=2, metavar="N", dest="held_out_replicates",
                        help="when the search ends, evaluate the declared best N more times with fresh seeds, "
                        "readings that take no part in any decision: an unbiased val_bpb for it, free of the "
                        "winner's curse (default 2; within --max-evaluations when it is at least 4 N; 0: none)")
    search.add_argument("--screen", type=float, default=0.0, metavar="FRACTION", dest="screen_fraction",
                        help="multi-fidelity screening (ASHA): train each new child for FRACTION of the time budget "
                        "first (a complete run with its own schedule) and promote only the best 1/ETA of the screened "
                        "children to a full evaluation; a screen counts FRACTION of an evaluation against "
                        "--max-evaluations, and its reading is compared only with other screens (default 0: off)")
    search.add_argument("--screen-eta", type=int, default=3, metavar="ETA",
                        help="the share of screened children promoted is 1/ETA (default 3)")
    search.add_argument("--selection", choices=SELECTIONS, default="tournament",
                        help="parent selection among the survivors (default tournament, with elitism)")
    search.add_argument("--max-children-per-parent", type=int, default=None, metavar="N",
                        help="children one parent may get per generation (default: max(2, population / 2))")
    search.add_argument("--sampler", choices=SAMPLER_NAMES, default="gp",
                        help="the optuna operator's sampler: gp (Gaussian-process Bayesian optimization over "
                        "every constant, default), tpe or cmaes (a few constants at a time)")
    search.add_argument("--operators", default=None, metavar="NAME=W,...",
                        help="mutation operators and their weights, e.g. llm=0.5,hyperparam=0.5 (known: "
                        f"{', '.join(OPERATOR_NAMES)}; default: hyperparam, optuna, crossover, and llm for half "
                        f"of the children when {API_KEY_ENV} is set)")
    llm = p.add_argument_group("LLM operator")
    llm.add_argument("--llm-model", default=DEFAULT_LLM_MODEL, metavar="MODEL",
                     help=f"Claude model proposing code changes (default {DEFAULT_LLM_MODEL})")
    llm.add_argument("--llm-base-url", default=None, metavar="URL",
                     help="Messages API address (default: $ANTHROPIC_BASE_URL, else the public API)")
    llm.add_argument("--llm-price", default=None, metavar="IN,OUT",
                     help="USD per million input and output tokens; required for a model evo has no price for")
    llm.add_argument("--max-llm-cost", type=float, default=None, metavar="USD",
                     help="hard cap on the run's LLM spend; once reached the run goes on with the other operators, "
                          "or, when the LLM is the only one, stops making children and ends (raise it on resume)")
    llm.add_argument("--llm-rewrite", action="store_true",
                     help="ask for the whole file instead of SEARCH/REPLACE edits")
    llm.add_argument("--llm-timeout", type=float, default=120.0, metavar="S",
                     help="limit of one LLM request, seconds (default 120; raise it for --llm-rewrite of long "
                     "files). A child waits at most 2 x S for the LLM in all (retries of timeouts, 429, 529 and "
                     "5xx, and the repair round included); then it comes from another operator, or in an "
                     "LLM-only run the LLM is asked again after a backoff of 15 s doubling up to 4 min")
    llm.add_argument("--proposal-workers", type=int, default=4, metavar="N",
                     help="children proposed ahead, in threads, while genomes train (default 4; 0: none)")
    _slots_options(p)
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
    p.set_defaults(func=_verb("evo.cli_run", "cmd_start"))

    p = sub.add_parser("resume", parents=[resumable], help="continue a stopped or crashed run",
                       description="Continue a run after Ctrl-C, a crash or kill -9: completed evaluations are kept, "
                       "an interrupted one is run again, generation numbers continue. Without RUN, the most "
                       "recently created stopped run (see `evo runs`). A finished run continues with a higher "
                       "--generations or --max-evaluations. Refused while another run of the project is going, "
                       "unless --allow-concurrent.")
    p.add_argument("run", nargs="?", metavar="RUN", help=POSITIONAL_RUN_HELP)
    p.add_argument("--generations", type=int, default=None, help="new total number of generations (default: as started)")
    p.add_argument("--max-evaluations", type=int, default=None, metavar="N",
                   help="new total number of evaluations, replicates included (default: as started); continues a "
                   "run that reached its limit")
    _slots_options(p)
    p.add_argument("--max-llm-cost", type=float, default=None, metavar="USD",
                   help="new cap on the run's total LLM spend (default: as started)")
    p.add_argument("--llm-model", default=None, metavar="MODEL",
                   help="the Claude model from now on (default: as started), e.g. after the API did not know it")
    p.add_argument("--llm-base-url", default=None, metavar="URL", help="the Messages API address from now on")
    p.add_argument("--llm-price", default=None, metavar="IN,OUT",
                   help="USD per million input and output tokens of --llm-model, where evo has no price for it")
    p.add_argument("--sandbox", choices=("auto", "bwrap", "none"), default=None,
                   help="where genomes run from now on (default: as started); each evaluation records its own")
    p.set_defaults(func=_verb("evo.cli_run", "cmd_resume"))

    p = sub.add_parser("runs", parents=[project], help="list the runs of the archive",
                       description="Every run: name, creation time, profile, genomes, evaluations, best val_bpb "
                       "and state (running: an engine holds its lock; stopped: resumable; finished: reached "
                       "--generations or --max-evaluations; failed-seed: its seed genome never completed). "
                       "* marks the default run of the other verbs.")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=_verb("evo.cli_views", "cmd_runs"))

    p = sub.add_parser("status", parents=[common], help="leaderboard of a run",
                       description="Header and leaderboard of a run (works while `evo start` is running). Columns "
                       "are fitted to the terminal: the least important are dropped on a narrow one and "
                       "descriptions cut to one line.")
    p.add_argument("run", nargs="?", metavar="RUN", help=POSITIONAL_RUN_HELP)
    p.add_argument("--top", type=int, default=30, help="rows to show, 0 for all (default 30)")
    view = p.add_mutually_exclusive_group()
    view.add_argument("--wide", action="store_true", help="every column and whole descriptions, however wide")
    view.add_argument("--json", action="store_true",
                      help="print the run, noise floor, declared best, every genome and the running slots as JSON")
    p.set_defaults(func=_verb("evo.cli_views", "cmd_status"))

    p = sub.add_parser("lineage", parents=[common], help="lineage graph of a run",
                       description="The lineage graph as a terminal tree, one line per genome at any depth "
                       "(★ marks the best genome's ancestry), or written to a file with -o, or as a page with --html.")
    p.add_argument("run", nargs="?", metavar="RUN", help=POSITIONAL_RUN_HELP)
    p.add_argument("-o", "--output", default=None, metavar="FILE",
                   help="write the graph to FILE: Graphviz DOT (.dot, .gv), GraphML (.graphml) or node-link JSON (.json)")
    p.add_argument("--format", choices=FORMATS, default=None, help="format of -o FILE (default: from its suffix)")
    p.add_argument("--html", default=None, metavar="FILE",
                   help="write an interactive, self-contained HTML page of the graph (works offline)")
    p.set_defaults(func=cmd_lineage)

    p = sub.add_parser("export", parents=[common], help="write a genome as a standalone train.py",
                       description="Write a genome as a standalone train.py that runs with `python train.py` "
                       "beside prepare.py and reproduces its evaluation.")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--best", action="store_true",
                       help="the run's declared best: the lowest val_bpb that held up over its replicates (default)")
    which.add_argument("--genome", default=None, metavar="ID", help="a genome id, e.g. g0007")
    p.add_argument("genome_pos", nargs="?", metavar="GENOME", help="a genome id, as --genome")
    p.add_argument("-o", "--output", default=None, metavar="FILE", help="output file (default: train.py)")
    p.add_argument("--results-tsv", default=None, metavar="FILE",
                   help="instead of a train.py, write the run as autoresearch's results.tsv "
                   "(commit, val_bpb, memory_gb, status keep/discard/crash, description)")
    p.set_defaults(func=_verb("evo.cli_views", "cmd_export"))

    p = sub.add_parser("plot", parents=[common], help="plot a run's progress to a PNG",
                       description="val_bpb of every evaluation in order, the running best, each kept "
                       "improvement labelled with its description, failures as red crosses on the top edge.")
    p.add_argument("run", nargs="?", metavar="RUN", help=POSITIONAL_RUN_HELP)
    p.add_argument("-o", "--output", default="progress.png", metavar="FILE",
                   help="image file, PNG, SVG or PDF by its suffix (default: progress.png)")
    p.set_defaults(func=_verb("evo.cli_views", "cmd_plot"))

    p = sub.add_parser("show", parents=[common], help="one genome: source, metrics, log tail, or a diff",
                       description="Print a genome's summary, metrics, source and log tail; with --diff, "
                       "a unified diff against its first parent or against another genome.")
    p.add_argument("genome", metavar="GENOME", help="genome id, e.g. g0007")
    p.add_argument("--diff", nargs="?", const="", default=None, metavar="OTHER",
                   help="print a unified diff against the first parent, or against OTHER")
    p.set_defaults(func=_verb("evo.cli_views", "cmd_show"))
    return parser


def _one_run(args: argparse.Namespace) -> None:
    """Merge ``--run NAME`` and the positional RUN into ``args.run``.

    Raises:
        ValueError: both given, naming different runs.
    """
    if not hasattr(args, "run_option"):
        return
    positional = getattr(args, "run", None)
    if args.run_option and positional and args.run_option != positional:
        raise ValueError(f"two runs named: RUN {positional!r} and --run {args.run_option!r}; give one")
    args.run = args.run_option or positional


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``evo`` with ``argv`` (default: the command line); returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        _one_run(args)
        return args.func(args)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `evo status | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return EXIT_OK
    except Exception as exc:
        if not is_user_error(exc):
            raise
        from rich.text import Text

        err_console.print(Text.assemble(("error:", "red"), " ", str(exc)), highlight=False, soft_wrap=True)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
