"""The request sent to the model: program.md as the system prompt, then what the run knows.

The user message has, in order: the run (profile, budget, how far it got), the best
genomes with their descriptions and val_bpb, recent failures with the tail of their log
(so they are not repeated), the changes already tried from this parent, the parent's
metrics and complete source, and the answer format. A repair request appends the model's
answer and the precise error, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evo.llm.edits import DIVIDER_MARK, REPLACE_MARK, SEARCH_MARK
from evo.records import EvalState
from evo.results import GenomeResult, ranked

if TYPE_CHECKING:  # evo.operators imports this package (the llm operator): no import cycle
    from evo.operators.base import Context, Parent

BEST_SHOWN = 8
FAILURES_SHOWN = 5
FAILURE_TAIL_LINES = 15
METRICS_SHOWN = ("training_seconds", "num_steps", "total_tokens_M", "num_params_M", "depth", "peak_vram_mb", "mfu_percent")


@dataclass(frozen=True)
class Request:
    """What one Messages API call sends: a system prompt and the conversation so far."""

    system: str
    messages: tuple[dict[str, Any], ...]

    @property
    def size_chars(self) -> int:
        return len(self.system) + sum(len(m["content"]) for m in self.messages)


def _bpb(value: float | None) -> str:
    return f"{value:.6f}" if value is not None else "-"


def _verdict(r: GenomeResult) -> str:
    if r.is_complete:
        return f"val_bpb {r.val_bpb:.6f}" + (f" (mean of {r.n})" if r.n > 1 else "")
    if r.last is None or r.state == EvalState.RUNNING.value:
        return "being evaluated"
    kind = f" ({r.last.failure_kind})" if r.last.failure_kind else ""
    return f"{r.state}{kind}"


def run_section(context: Context) -> str:
    results = context.results
    complete = [r for r in results if r.is_complete]
    failed = [r for r in results if r.is_finished and not r.is_complete]
    top = ranked(results)[0] if complete else None
    lines = [
        "## The run",
        f"- profile `{context.profile}`, training time budget {context.time_budget_s:g} s per genome",
        f"- {len(results)} genomes so far: {len(complete)} complete, {len(failed)} failed",
    ]
    if top is not None:
        lines.append(f"- best val_bpb {top.val_bpb:.6f} ({top.genome_id}: {top.genome.description})")
    return "\n".join(lines)


def best_section(results: Sequence[GenomeResult], n: int = BEST_SHOWN) -> str:
    complete = [r for r in ranked(results) if r.is_complete][:n]
    if not complete:
        return "## Best genomes so far\n(none evaluated yet)"
    rows = [f"| {r.genome_id} | {r.val_bpb:.6f} | {r.genome.operator} | {r.genome.description} |" for r in complete]
    return "\n".join(["## Best genomes so far", "| genome | val_bpb | operator | change |", "|---|---|---|---|", *rows])


def failures_section(results: Sequence[GenomeResult], n: int = FAILURES_SHOWN, tail_lines: int = FAILURE_TAIL_LINES) -> str:
    failed = [r for r in results if r.is_finished and not r.is_complete][-n:]
    if not failed:
        return "## Recent failures\n(none)"
    parts = ["## Recent failures (do not repeat them)"]
    for r in failed:
        error = f": {r.last.error}" if r.last and r.last.error else ""
        parts.append(f"### {r.genome_id} ({r.genome.operator}): {r.genome.description}\n{_verdict(r)}{error}")
        log = "\n".join((r.last.log_tail or "").splitlines()[-tail_lines:]) if r.last else ""
        if log.strip():
            parts.append(f"```\n{log}\n```")
    return "\n".join(parts)


def tried_section(parent: Parent, results: Sequence[GenomeResult]) -> str:
    children = [r for r in results if parent.genome_id in r.genome.parents]
    if not children:
        return "## Already tried from this parent\n(nothing yet)"
    lines = ["## Already tried from this parent (do not propose these again)"]
    for r in children:
        delta = ""
        if r.is_complete and parent.val_bpb is not None:
            delta = f", {r.val_bpb - parent.val_bpb:+.6f} vs parent"
        lines.append(f"- {r.genome_id} ({r.genome.operator}): {r.genome.description} -> {_verdict(r)}{delta}")
    return "\n".join(lines)


def parent_section(parent: Parent, results: Sequence[GenomeResult]) -> str:
    mine = next((r for r in results if r.genome_id == parent.genome_id), None)
    lines = [f"## The parent genome {parent.genome_id}", f"- val_bpb {_bpb(parent.val_bpb)}"]
    if mine is not None:
        lines[-1] += f" ({mine.genome.description})"
        metrics = mine.last.metrics if mine.last is not None else {}
        shown = [f"{k} {metrics[k]:g}" for k in METRICS_SHOWN if k in metrics]
        if shown:
            lines.append("- last evaluation: " + ", ".join(shown))
    lines += ["", "```python", parent.code.rstrip("\n"), "```"]
    return "\n".join(lines)


def format_section(rewrite: bool) -> str:
    if rewrite:
        return (
            "## Your answer\nThis run asks for the whole file instead of edits: first the line "
            "`DESCRIPTION: <what you change and why, under 100 characters>`, then the complete new "
            "genome in one ```python fenced block. Nothing else."
        )
    return (
        "## Your answer\nPropose one change. First the line `DESCRIPTION: <what you change and why, "
        f"under 100 characters>`, then the edits, each exactly:\n\n{SEARCH_MARK}\n<lines copied exactly from "
        f"the parent above>\n{DIVIDER_MARK}\n<the lines that replace them>\n{REPLACE_MARK}\n\n"
        "Every SEARCH block must match the parent exactly once, whitespace included; if one does not, "
        "no edit is applied."
    )


def build_request(program: str, parent: Parent, context: Context, rewrite: bool = False) -> Request:
    """The first request for a child of ``parent``.

    Args:
        program: program.md, the human-written research instructions (the system prompt).
        parent: the genome to change.
        context: what the run knows (every genome with its verdict).
        rewrite: ask for the whole file rather than SEARCH/REPLACE edits.
    """
    results = context.results
    user = "\n\n".join([
        run_section(context),
        best_section(results),
        failures_section(results),
        tried_section(parent, results),
        parent_section(parent, results),
        format_section(rewrite),
    ])
    return Request(program, ({"role": "user", "content": user},))


def repair_request(request: Request, answer: str, error: str) -> Request:
    """``request`` continued with the model's ``answer`` and why it could not be used."""
    repair = (
        f"Your answer could not be used:\n\n{error}\n\nNothing was applied. Answer again, completely and in the "
        "same format: the DESCRIPTION line and every edit, each SEARCH block copied exactly from the parent "
        "genome shown in my first message (not from your previous answer)."
    )
    messages = (*request.messages, {"role": "assistant", "content": answer}, {"role": "user", "content": repair})
    return Request(request.system, messages)
