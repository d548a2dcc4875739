"""A run as karpathy/autoresearch's ``results.tsv``: one row per evaluated genome.

Columns (tab-separated, with a header line), as autoresearch's ``program.md`` defines them:

* ``commit``: the experiment's short id; here the genome id (``g0007``).
* ``val_bpb``: the genome's val_bpb, ``0.000000`` for a crash.
* ``memory_gb``: peak VRAM in GB (``peak_vram_mb / 1024``, one decimal; ``0.0`` for a crash).
* ``status``: ``keep`` when the genome became the new best as it finished (in evaluation
  order; the first completed genome is the baseline and is kept), ``discard`` when it
  completed without beating the best so far, ``crash`` for FAIL or TIMEOUT.
* ``description``: the genome's one-line description.

Genomes without a counted evaluation (PENDING, RUNNING, or only INTERRUPTED attempts) are
left out, and so are genomes screened and never promoted (``SCREENED``,
:mod:`evo.screening`): they have no val_bpb at the full budget. Rows are in the order the genomes' counted evaluations finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from evo.genome import write_atomic
from evo.results import SCREENED, GenomeResult

COLUMNS = ("commit", "val_bpb", "memory_gb", "status", "description")


@dataclass(frozen=True)
class Row:
    """One line of results.tsv (values already formatted as autoresearch writes them)."""

    commit: str
    val_bpb: str
    memory_gb: str
    status: str
    description: str


def rows(results: Sequence[GenomeResult]) -> list[Row]:
    """The rows of a run's results.tsv, in evaluation order.

    Args:
        results: every genome of the run (``evo.results.genome_results``).
    """
    evaluated = [r for r in results if r.is_finished and r.last is not None and r.state != SCREENED]
    evaluated.sort(key=lambda r: (r.last.finished_at or r.last.started_at, r.last.eval_id))
    best_bpb: float | None = None
    out = []
    for r in evaluated:
        description = " ".join(r.genome.description.split())  # no tabs or newlines inside a field
        if r.val_bpb is None:
            out.append(Row(r.genome_id, f"{0.0:.6f}", f"{0.0:.1f}", "crash", description))
            continue
        keep = best_bpb is None or r.val_bpb < best_bpb
        if keep:
            best_bpb = r.val_bpb
        vram_mb = r.last.metrics.get("peak_vram_mb") or 0.0
        out.append(Row(r.genome_id, f"{r.val_bpb:.6f}", f"{vram_mb / 1024:.1f}", "keep" if keep else "discard", description))
    return out


def to_tsv(table: Sequence[Row]) -> str:
    """The TSV text: a header line, then one line per row (``\\n`` line ends), fields as they
    are, unquoted as in autoresearch's file (no field holds a tab or a line break; a
    description that starts with a quote is the one exception, :func:`_field`)."""
    lines = ["\t".join(COLUMNS)]
    lines += ["\t".join((row.commit, row.val_bpb, row.memory_gb, row.status, _field(row.description)))
              for row in table]
    return "\n".join(lines) + "\n"


def _field(text: str) -> str:
    """``text`` as it is, unless it starts with a quote, which TSV readers (pandas, csv) take
    as the start of a quoted field: then quoted, its quotes doubled."""
    return '"' + text.replace('"', '""') + '"' if text.startswith('"') else text


def write_results_tsv(results: Sequence[GenomeResult], path: Path) -> list[Row]:
    """Write the run's results.tsv to ``path`` atomically.

    Returns:
        The rows written.

    Raises:
        OSError: the file cannot be written.
    """
    table = rows(results)
    write_atomic(path, to_tsv(table))
    return table
