"""Exporting a genome as a standalone ``train.py``.

The exported file is the genome's exact source with a short header that selects the
harness profile, dataset and seed it was evaluated with (``os.environ.setdefault``, so
the environment still wins), placed after the module docstring and ``__future__``
imports. Beside evo's ``prepare.py`` it reproduces the evaluation with
``python train.py``; beside autoresearch's ``prepare.py`` the header is inert.
"""

from __future__ import annotations

import libcst as cst
import libcst.matchers as m

from evo.held_out import describe as describe_held_out
from evo.held_out import held_out
from evo.records import RunRecord
from evo.results import GenomeResult


def _header(run: RunRecord, result: GenomeResult, seed: int, time_budget_s: float | None) -> str:
    score = f"val_bpb {result.val_bpb:.6f} (n={result.n})" if result.val_bpb is not None else result.state
    figure = held_out(result.held_out_scores, None)
    if figure is not None:  # readings that took no part in choosing it
        score += f", {describe_held_out(figure)}"
    lines = [
        f"# Exported by evo from run {run.run!r}, genome {result.genome_id} (generation {result.genome.generation}): {score}.",
        f"# Change: {' '.join(result.genome.description.split())}",  # one comment line, whatever it holds
        "# The lines below select the harness settings it was evaluated with; environment variables win.",
        "import os as _evo_os",
        "",
        f'_evo_os.environ.setdefault("EVO_PROFILE", "{run.profile}")',
        f'_evo_os.environ.setdefault("EVO_DATASET", "{run.dataset}")',
        f'_evo_os.environ.setdefault("EVO_SEED", "{seed}")',
    ]
    if time_budget_s is not None:
        lines.append(f'_evo_os.environ.setdefault("EVO_TIME_BUDGET", "{time_budget_s!r}")')
    return "\n".join(lines) + "\n"


def _insert_index(module: cst.Module) -> int:
    """Index after the docstring and ``from __future__`` imports."""
    index = 0
    body = list(module.body)
    if body and m.matches(body[0], m.SimpleStatementLine(body=[m.Expr(m.SimpleString() | m.ConcatenatedString())])):
        index = 1
    while index < len(body) and m.matches(
        body[index], m.SimpleStatementLine(body=[m.ImportFrom(module=m.Name("__future__"))])
    ):
        index += 1
    return index


def standalone_source(code: str, run: RunRecord, result: GenomeResult, seed: int, time_budget_s: float | None) -> str:
    """The genome's source with the export header inserted.

    Args:
        code: the genome's source.
        run: its run (profile and dataset).
        result: its result (id, description, val_bpb).
        seed: the EVO_SEED it was evaluated with.
        time_budget_s: a time budget that overrode the profile's, if any.

    Raises:
        libcst.ParserSyntaxError: the source does not parse.
    """
    module = cst.parse_module(code)
    index = _insert_index(module)
    parsed = cst.parse_module(_header(run, result, seed, time_budget_s))
    # the comment lines before the header's first statement are the parsed module's header:
    # keep them, on that statement
    header = list(parsed.body)
    header[0] = header[0].with_changes(leading_lines=[*parsed.header, *header[0].leading_lines])
    body = list(module.body)
    return module.with_changes(body=[*body[:index], *header, *body[index:]]).code
