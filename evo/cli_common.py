"""What every ``evo`` command shares: the consoles, exit codes, the archive, the run to use.

Kept light on purpose (rich's console and evo's plain-value config; the archive and its
DuckDB are imported when a command opens it): ``evo --help`` and the read-only verbs
import only what they need, and the engine, libcst, optuna and the LLM SDK load only
for ``evo start`` and ``evo resume``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console

from evo.config import Paths, RunConfig

if TYPE_CHECKING:
    from evo.archive import Archive
    from evo.locking import Holder
    from evo.records import RunRecord
    from evo.results import GenomeResult
    from evo.run_index import RunSummary

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130

# The metrics the views read from their own columns (never the log tails or metrics JSON).
VIEW_METRICS = ("val_bpb", "training_seconds", "peak_vram_mb")

# evo's exception classes that are refusals, not bugs: a one-line error and exit 2. Matched
# by name along the exception's class hierarchy (within evo), so that this module imports
# none of the modules that define them and a class moving between modules changes nothing.
_USER_ERRORS = frozenset({"ArchiveError", "EngineError", "HarnessError", "HarnessChangedError",
                          "SandboxUnavailableError", "RunLockedError"})


def _width() -> int | None:
    """A terminal's own width; piped or redirected output gets 200 columns (or ``$COLUMNS``)."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit():
        return None
    return 200


console = Console(width=_width())
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a refusal to report in one line (bad input, a locked run, a
    damaged archive, a failed seed, a file that cannot be written) rather than a bug to
    show with its traceback."""
    if isinstance(exc, (ValueError, OSError)):
        return True
    return any(cls.__name__ in _USER_ERRORS and cls.__module__.startswith("evo.") for cls in type(exc).__mro__)


def paths(args: argparse.Namespace) -> Paths:
    """The project's paths from ``--project`` and ``--archive``."""
    return Paths.for_project(args.project, args.archive)


def open_archive(project: Paths, read_only: bool = True) -> Archive:
    """The project's archive, read-only unless a command writes it.

    Raises:
        ArchiveError: there is no archive (read-only), or it cannot be opened.
    """
    from evo.archive import Archive

    return Archive(project.archive_path, read_only=read_only)


def resolve_run(archive: Archive, name: str | None, summaries: Sequence[RunSummary] | None = None) -> RunRecord:
    """The run named ``name``, or the default run (:func:`evo.run_index.default_run`).

    When the default skips newer runs (none of which has a scored child yet), a note on
    stderr names them.

    Args:
        summaries: ``archive.run_summaries()`` when the caller has read them already.

    Raises:
        ArchiveError: no run of that name, or no run at all.
    """
    from evo.archive import ArchiveError
    from evo.run_index import default_run

    if name:
        named = next((s for s in summaries if s.run == name), None) if summaries is not None else None
        return named.record if named is not None else archive.get_run(name)
    if summaries is None:
        summaries = archive.run_summaries()
    chosen = default_run(summaries)
    if chosen is None:
        raise ArchiveError(f"no runs in {archive.path}; start one with `evo start`")
    newer = [s.run for s in summaries[summaries.index(chosen) + 1:]]
    if newer:
        from evo.locking import running_engines

        running = {h.run for h in running_engines(archive.path)} & set(newer)
        names = ", ".join(f"{n} (running now)" if n in running else n for n in newer)
        hint = f"--run {max(running, key=newer.index)}" if running else "--run NAME"
        err_console.print(
            f"note: using run {chosen.run}, the latest with a scored child; newer without one: {names} "
            f"(choose with {hint})", highlight=False, markup=False, soft_wrap=True,
        )
    return chosen.record


def load_results(archive: Archive, run: str, details: bool = False) -> list[GenomeResult]:
    """Every genome of a run with its evaluations; without ``details``, only the metrics in
    :data:`VIEW_METRICS` are read (no log tails, no metrics JSON)."""
    from evo.results import genome_results

    evaluations = archive.evaluations(run) if details else archive.evaluations(run, metrics=VIEW_METRICS)
    return genome_results(archive.genomes(run), evaluations)


def declared_best(record: RunRecord, results: Sequence[GenomeResult]) -> GenomeResult | None:
    """The run's best by its own noise-aware rule (see evo.noise.incumbent)."""
    from evo.noise import declared_best as best

    return best(results, RunConfig.from_json(record.config_json))


def engine_of(project: Paths, run: str) -> Holder | None:
    """The engine running ``run`` now, if any (its lock; see evo.locking)."""
    from evo.locking import running_engines

    return next((h for h in running_engines(project.archive_path) if h.run == run), None)
