"""``evo start`` and ``evo resume``: the verbs that run the engine.

Only these import the engine and what it pulls in (libcst, optuna, the LLM SDK, torch
through the harness), so the other verbs start fast. One engine per project at a time by
default (:mod:`evo.locking`): a second start or resume while a run is going is refused
with that run's name and pid, unless ``--allow-concurrent``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import re
import signal
from pathlib import Path
from typing import Any

from evo import cli_common as common
from evo import genome as genome_files
from evo.archive import Archive, ArchiveError
from evo.cli_common import EXIT_INTERRUPTED, EXIT_OK, console
from evo.config import DEFAULT_OPERATORS, Paths, RunConfig, default_dataset
from evo.engine import Engine, Execution
from evo.evaluation import sha256_file
from evo.evaluator import EVALUATOR_VERSION
from evo.gitignore import ignore_outputs
from evo.harness import (
    HarnessError,
    corpus_warning,
    cuda_device_count,
    detect_device,
    load_profiles,
    prepare_data,
)
from evo.llm.client import API_KEY_ENV, api_key_from_env
from evo.llm.prices import parse_price, price_for
from evo.locking import RunLock, running_engines
from evo.operators import REGISTRY
from evo.operators.llm import LLMMutation
from evo.progress import ConsoleReporter
from evo.records import RunRecord
from evo.results import GenomeResult
from evo.run_index import RunSummary, run_state
from evo.sandbox import detect as detect_sandbox

RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


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
    return Execution(workers=args.workers, gpus=gpus, ray=args.ray, warm_start=args.warm_start)


def _execute(
    paths: Paths, archive: Archive, config: RunConfig, time_budget_s: float, device: str, seed_code: str | None,
    execution: Execution, known_best: GenomeResult | None = None,
) -> int:
    """Run the engine; ``known_best``: a resumed run's declared best so far (not announced
    again as a new best)."""
    _sigterm_as_interrupt()
    reporter = ConsoleReporter(time_budget_s, console)
    reporter.best = known_best
    engine = Engine(paths, archive, config, time_budget_s, device, reporter, execution)
    try:
        top = engine.run(seed_code)
    except KeyboardInterrupt:
        reporter.close()
        console.print(f"[yellow]stopped[/]; the archive is consistent. Continue with: evo resume --run {config.run}",
                      highlight=False)
        return EXIT_INTERRUPTED
    finally:
        reporter.close()
    if top is not None:
        console.print(f"best genome {top.genome_id}: val_bpb {top.val_bpb:.6f} — {top.genome.description}")
        console.print(f"export it with: evo export --run {config.run} --best -o train.py")
    return EXIT_OK


# ---------------------------------------------------------------------------- verbs

def _check_max_evaluations(n: int | None) -> None:
    """Raises ValueError for ``--max-evaluations`` below 1 (checked here, not in RunConfig,
    so that a run an older evo stored with 0 still loads)."""
    if n is not None and n < 1:
        raise ValueError(f"--max-evaluations must be >= 1 (omit it for no limit), got {n}")


def cmd_start(args: argparse.Namespace) -> int:
    _sigterm_as_interrupt()  # from here on SIGTERM is Ctrl-C: data preparation can take minutes
    _check_max_evaluations(args.max_evaluations)
    if args.max_children_per_parent is not None and args.max_children_per_parent < 1:
        raise ValueError(f"--max-children-per-parent must be >= 1 (omit it for max(2, population / 2)), got "
                         f"{args.max_children_per_parent}")
    paths = common.paths(args)
    run = args.run or dt.datetime.now().strftime("run-%Y%m%d-%H%M%S")
    if not RUN_NAME.fullmatch(run):
        raise ValueError(f"--run {run!r}: a run name is 1-100 letters, digits, '.', '_' or '-', starting with a "
                         "letter or digit (it names files and folders)")
    # everything checked before the archive is opened: a mistake leaves no archive behind
    profiles = load_profiles(paths.prepare_py)
    device = detect_device()
    profile = args.profile or ("gpu" if device.startswith("cuda") else "cpu")
    if profile not in profiles:
        raise HarnessError(f"prepare.py has no profile {profile!r}")
    execution = _execution(args, device)
    dataset = args.dataset or default_dataset(profile)
    seed_path = Path(args.seed_genome).resolve() if args.seed_genome else paths.seed_genome
    if not seed_path.is_file():
        raise HarnessError(f"no seed genome at {seed_path}")
    seed_code = seed_path.read_text(encoding="utf-8")
    genome_files.validate(seed_code, str(seed_path))
    config = RunConfig(
        run=run, profile=profile, dataset=dataset, population=args.population, generations=args.generations,
        time_budget_s=args.time_budget, wall_limit_s=args.wall_limit, seed=args.seed, seed_genome=str(seed_path),
        max_evaluations=args.max_evaluations, noise_replicates=args.noise_replicates,
        best_replicates=args.best_replicates, held_out_replicates=args.held_out_replicates,
        screen_fraction=args.screen_fraction, screen_eta=args.screen_eta, selection=args.selection,
        max_children_per_parent=args.max_children_per_parent, sampler=args.sampler,
        operators=_parse_operators(args.operators), llm_model=args.llm_model, llm_base_url=args.llm_base_url,
        llm_price=parse_price(args.llm_price) if args.llm_price else None, max_llm_cost_usd=args.max_llm_cost,
        llm_rewrite=args.llm_rewrite, llm_timeout_s=args.llm_timeout, proposal_workers=args.proposal_workers,
        fitness=args.fitness, sandbox=args.sandbox, max_memory_mb=args.max_memory_mb,
        max_processes=args.max_processes, max_file_size_mb=args.max_file_mb,
    )
    run_config = _llm_ready(config, paths)
    if config.sandbox == "bwrap":
        detect_sandbox("bwrap")  # raises where bubblewrap does not work, before the run is recorded
    time_budget_s = float(args.time_budget or profiles[profile]["time_budget_s"])
    if args.wall_limit is not None and args.wall_limit <= time_budget_s:
        raise ValueError(f"--wall-limit {args.wall_limit:g} s leaves no time to train: it must exceed the time budget "
                         f"({time_budget_s:g} s) plus start-up and evaluation (omit it for 2 x budget + 120 s)")
    archive = common.open_archive(paths, read_only=False)
    if run in {r.run for r in archive.list_runs()}:
        raise ArchiveError(f"run {run!r} already exists in {paths.archive_path}; use `evo resume --run {run}`")
    # the lock first: a second engine in the project is refused before anything is prepared or recorded
    with RunLock(paths.archive_path, run, allow_concurrent=args.allow_concurrent):
        _ignore_outputs(paths)
        console.print(f"preparing data and tokenizer for profile {profile}, dataset {dataset} ...")
        prepare_data(paths.project_dir, profile, dataset)
        warning = corpus_warning(paths.prepare_py, profile, dataset, time_budget_s)
        if warning:
            console.print(f"[yellow]warning:[/] {warning}")
        archive.create_run(config, time_budget_s, paths.project_dir, sha256_file(paths.prepare_py), EVALUATOR_VERSION)
        console.print(
            f"run [bold]{run}[/]: population {config.population}, {_extent(config)}, profile {profile} "
            f"({time_budget_s:g} s per genome) on {device}, {_slots_line(execution)}; archive {paths.archive_path}"
        )
        return _execute(paths, archive, run_config, time_budget_s, device, seed_code, execution)


def _extent(config: RunConfig) -> str:
    """How long the run goes: ``"3 generations"``, ``"at most 64 evaluations"``, ``"until Ctrl-C"``."""
    limits = []
    if config.generations:
        limits.append(f"{config.generations} generations")
    if config.max_evaluations is not None:
        limits.append(f"at most {config.max_evaluations} evaluations")
    return ", ".join(limits) or "generations until Ctrl-C"


def _ignore_outputs(paths: Paths) -> None:
    """Add archive/ and genomes/ to the project's .gitignore in a git work tree (evo.gitignore)."""
    try:
        added = ignore_outputs(paths.project_dir, paths.archive_path)
    except OSError as exc:
        console.print(f"could not add evo's outputs to {paths.project_dir / '.gitignore'}: {exc}", highlight=False)
        return
    if added:
        console.print(f"added {' and '.join(added)} to {paths.project_dir / '.gitignore'} (the archive and genome "
                      "files evo writes)", highlight=False)


def cmd_resume(args: argparse.Namespace) -> int:
    _sigterm_as_interrupt()
    _check_max_evaluations(args.max_evaluations)
    paths = common.paths(args)
    if not paths.archive_path.exists():
        raise ArchiveError(f"no archive at {paths.archive_path}; start a run with `evo start`")
    archive = common.open_archive(paths, read_only=False)
    summaries = archive.run_summaries()
    record = common.resolve_run(archive, args.run, summaries) if args.run else _run_to_resume(paths, summaries)
    with RunLock(paths.archive_path, record.run, allow_concurrent=args.allow_concurrent):
        changes = _resume_changes(args)
        stored = RunConfig.from_json(record.config_json)
        _check_new_totals(changes, stored, next(s for s in summaries if s.run == record.run))
        # everything checked before the changes are stored: RunConfig validates itself, the LLM's
        # key, price and program.md, the slots, the sandbox, the data
        config = _llm_ready(dataclasses.replace(stored, **changes), paths)
        device = detect_device()
        execution = _execution(args, device)
        if config.sandbox == "bwrap":
            detect_sandbox("bwrap")
        prepare_data(paths.project_dir, config.profile, config.dataset)
        if changes:  # kept with the run: a later resume goes on with them
            record = archive.update_run_config(record.run, changes)
        summary = next(s for s in archive.run_summaries() if s.run == record.run)
        seed_code = None
        if not archive.genomes(record.run):
            seed_code = Path(config.seed_genome).read_text(encoding="utf-8")
        results = common.load_results(archive, record.run)
        done = sum(1 for r in results if r.is_finished)
        console.print(f"resuming run [bold]{record.run}[/] ({done} genomes evaluated) on {device}")
        if run_state(summary, engine_running=False) == "finished":
            console.print(f"run {record.run} has reached its limit ({_extent(config)}): only what the noise-aware "
                          "rule or the held-out figure still asks for is evaluated; to search on, give a higher "
                          "--generations or --max-evaluations", highlight=False)
        code = _execute(paths, archive, config, record.time_budget_s, device, seed_code, execution,
                        common.declared_best(record, results))
        added = next(s for s in archive.run_summaries() if s.run == record.run).evaluations - summary.evaluations
        if code == EXIT_OK and added == 0:
            console.print(f"nothing was left to evaluate in run {record.run}", highlight=False)
        return code


def _check_new_totals(changes: dict[str, Any], config: RunConfig, summary: RunSummary) -> None:
    """Raises ValueError for a ``--generations`` or ``--max-evaluations`` below what the run
    has already done (it would be stored and read back as a run past its own limit)."""
    cohorts = -(-summary.genomes // config.population)  # cohorts with a genome born
    if changes.get("generations") is not None and changes["generations"] < cohorts:
        raise ValueError(f"run {config.run} has already begun {cohorts} generations (cohorts of {config.population}); "
                         f"--generations {changes['generations']} is below that: give {cohorts} or more")
    if changes.get("max_evaluations") is not None and changes["max_evaluations"] < summary.spent - 1e-9:
        raise ValueError(f"run {config.run} has already spent {summary.spent:g} evaluations; --max-evaluations "
                         f"{changes['max_evaluations']} is below that: give {math.ceil(summary.spent - 1e-9)} or more")


def _resume_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The run settings ``evo resume`` was given (:data:`evo.config.RESUME_FIELDS`)."""
    changes: dict[str, Any] = {}
    if args.generations is not None:
        changes["generations"] = args.generations
    if args.max_evaluations is not None:
        changes["max_evaluations"] = args.max_evaluations
    if args.max_llm_cost is not None:
        changes["max_llm_cost_usd"] = args.max_llm_cost
    price = parse_price(args.llm_price) if args.llm_price else None
    if args.llm_model is not None:  # a new model keeps no price of the old one
        changes.update(llm_model=args.llm_model, llm_price=price)
    elif price is not None:
        changes["llm_price"] = price
    if args.llm_base_url is not None:
        changes["llm_base_url"] = args.llm_base_url
    if args.sandbox is not None:
        changes["sandbox"] = args.sandbox
    return changes


def _run_to_resume(paths: Paths, summaries: list[RunSummary]) -> RunRecord:
    """The run ``evo resume`` continues without a name: the most recently created stopped one.

    Raises:
        ArchiveError: no run is stopped (each is running, finished or failed-seed).
    """
    engines = {h.run for h in running_engines(paths.archive_path)}
    states = {s.run: run_state(s, s.run in engines) for s in summaries}
    stopped = [s for s in summaries if states[s.run] == "stopped"]
    if not stopped:
        listed = ", ".join(f"{run} {state}" for run, state in states.items()) or "none"
        raise ArchiveError(f"no stopped run to resume (runs: {listed}); name one with --run NAME, with a higher "
                           "--generations or --max-evaluations for a finished one")
    return stopped[-1].record


def _slots_line(execution: Execution) -> str:
    if execution.ray is not None:
        return f"Ray cluster {execution.ray}" + (f", {execution.workers} slots" if execution.workers else "")
    if execution.gpus:
        return f"{len(execution.gpus)} GPU slot(s) ({','.join(map(str, execution.gpus))})"
    n = execution.workers or 1
    return f"{n} CPU slot(s)"


