"""One genome in full: ``evo show GENOME`` (source, metrics, log tail) and ``--diff``.

The text is built here and printed by the CLI as is (no rich markup, so source code with
square brackets is printed verbatim and the output pipes cleanly into ``less`` or
``patch``).
"""

from __future__ import annotations

import difflib

from evo.archive import Archive, ArchiveError
from evo.held_out import describe as describe_held_out
from evo.held_out import held_out
from evo.records import SUMMARY_KEYS, state_label
from evo.results import GenomeResult, genome_result


def source_diff(old_code: str, new_code: str, old_name: str, new_name: str, context: int = 3) -> str:
    """A unified diff (difflib) that turns ``old_code`` into ``new_code``.

    Args:
        old_code, new_code: whole source files.
        old_name, new_name: file names for the ``---``/``+++`` header lines.
        context: unchanged lines shown around each change.

    Returns:
        The diff, each line ending in a newline; ``""`` when the sources are identical.
    """
    lines = difflib.unified_diff(
        old_code.splitlines(keepends=True), new_code.splitlines(keepends=True), old_name, new_name, n=context
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def parent_delta(result: GenomeResult, by_id: dict[str, GenomeResult]) -> float | None:
    """val_bpb of ``result`` minus that of its first parent (``None`` if either has none)."""
    if not result.genome.parents or result.val_bpb is None:
        return None
    parent = by_id.get(result.genome.parents[0])
    return None if parent is None or parent.val_bpb is None else result.val_bpb - parent.val_bpb


def format_metrics(result: GenomeResult) -> list[str]:
    """``key: value`` lines of the genome's last counted evaluation (summary keys first)."""
    last = result.last
    if last is None:
        return ["(never evaluated)"]
    keys = [k for k in SUMMARY_KEYS if k in last.metrics] + sorted(k for k in last.metrics if k not in SUMMARY_KEYS)
    lines = [f"{k}: {last.metrics[k]:g}" for k in keys]
    if last.wall_s is not None:
        lines.append(f"wall_s: {last.wall_s:.1f}")
    lines.append(f"device: {last.device} · attempt {last.attempt} · started {last.started_at:%Y-%m-%d %H:%M:%S} UTC")
    return lines


def header(result: GenomeResult, run: str, by_id: dict[str, GenomeResult]) -> list[str]:
    """The summary lines printed above the source or the diff."""
    g = result.genome
    parents = ", ".join(g.parents) if g.parents else "none"
    state = state_label(result.state, result.last.failure_kind if result.last is not None else None)
    score = "val_bpb -"
    if result.val_bpb is not None:
        score = f"val_bpb {result.val_bpb:.6f} (n={result.n}"
        score += f", std {result.val_bpb_std:.6f})" if result.n > 1 else ")"
    delta = parent_delta(result, by_id)
    if delta is not None:
        score += f" · {delta:+.6f} vs parent {g.parents[0]}"
    lines = [
        f"genome {g.genome_id} · run {run} · generation {g.generation} · operator {g.operator} · parents {parents}",
        f"state {state} · {score}",
        f"description: {g.description}",
    ]
    if result.last is not None and result.last.error:
        lines.append(f"why it ended: {result.last.error}")
    figure = held_out(result.held_out_scores, None)
    if figure is not None:
        lines.append(f"{describe_held_out(figure)}: readings with fresh seeds after the search, "
                     "which took no part in choosing it (evo.held_out)")
    if result.screens:
        screen = result.screens[-1]
        reading = f"val_bpb {result.screen_bpb:.6f}" if result.screen_bpb is not None else screen.state.value
        verdict = "promoted to a full evaluation" if result.evaluations else "not promoted (yet)"
        lines.append(f"screen: {reading} at {screen.fidelity:.0%} of the time budget, compared only with other "
                     f"screens; {verdict} (evo.screening)")
    return lines


def show_text(archive: Archive, run: str, genome_id: str, diff_against: str | None = None, diff: bool = False) -> str:
    """What ``evo show`` prints.

    Args:
        archive: the archive.
        run: the run's name.
        genome_id: the genome to show.
        diff: print a unified diff instead of the source and log tail.
        diff_against: the genome to diff against (default: the first parent).

    Returns:
        The text, ending in a newline.

    Reads the genome (its evaluations in full: metrics, log tail), its first parent's
    val_bpb (for the delta) and the genome diffed against; nothing else of the run.

    Raises:
        ArchiveError: unknown run or genome, or ``--diff`` on a genome without a parent
            and without ``diff_against``.
    """
    archive.get_run(run)
    genome = archive.genome(run, genome_id)
    result = genome_result(genome, archive.evaluations(run, genome_id=genome_id))
    by_id = {genome_id: result}
    if genome.parents:
        parent = archive.genome(run, genome.parents[0])
        by_id[parent.genome_id] = genome_result(
            parent, archive.evaluations(run, genome_id=parent.genome_id, metrics=("val_bpb",)))
    lines = header(result, run, by_id)
    code = archive.source(genome.source_sha256)
    if diff:
        other_id = diff_against or (genome.parents[0] if genome.parents else None)
        if other_id is None:
            raise ArchiveError(f"{genome_id} has no parent; name a genome to diff against: --diff OTHER")
        other = archive.genome(run, other_id)
        text = source_diff(archive.source(other.source_sha256), code, f"{other_id}.py", f"{genome_id}.py")
        lines.append("")
        lines.append(text.rstrip("\n") if text else f"(no difference between {other_id} and {genome_id})")
        return "\n".join(lines) + "\n"
    lines += ["", "metrics:"] + [f"  {line}" for line in format_metrics(result)]
    lines += ["", f"----- source {genome_id}.py -----", code.rstrip("\n"), ""]
    log_name = result.last.log_path if result.last is not None else "no log"
    lines.append(f"----- log tail ({log_name}) -----")
    lines.append(result.last.log_tail.rstrip("\n") if result.last is not None and result.last.log_tail else "(empty)")
    return "\n".join(lines) + "\n"
