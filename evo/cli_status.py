"""``evo status``: a run's header lines and leaderboard, sized to the terminal, or JSON.

Read lean: every genome's verdict (state, mean/std/n val_bpb) is aggregated in SQL by
:func:`evo.lineage.load_nodes` (the rule of :func:`evo.results.genome_result`, no
evaluation record built), and only the evaluations the leaderboard shows (its rows and
the running slots) are read, without log tails or metrics JSON.

The leaderboard's columns are chosen by width (:mod:`evo.cli_table`): every value shown
is whole (numbers are never cut), the least important columns are dropped first when the
terminal is narrow (wall s, gen, ± std, operator, vs seed, n), and the description takes
the rest of the line, cut with an ellipsis on one line. ``--wide`` shows every column
and whole descriptions, however long the lines get. ``--json`` prints one JSON object
(:func:`evo.cli_status_json.status_json`).
"""

from __future__ import annotations

import datetime as dt
import heapq
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from evo.cli_table import Column, fitted_table
from evo.config import RunConfig
from evo.credit import OPERATOR_WINDOW, OperatorCredit, operator_credit
from evo.held_out import HeldOut, held_out
from evo.held_out import describe as describe_held_out
from evo.held_out import scores as held_out_scores
from evo.lineage import Node, load_nodes
from evo.locking import Holder
from evo.noise import NoiseEstimate, noise_estimate
from evo.racing import Verdict, judge
from evo.records import EvalState, EvaluationRecord, LLMCallRecord, RunRecord, TimeSplit, state_label

if TYPE_CHECKING:
    from evo.archive import Archive

MIN_DESCRIPTION = 28  # columns are dropped before the description gets narrower than this


@dataclass(frozen=True)
class StatusView:
    """Everything ``evo status`` shows, read once from the archive (:func:`load_status`).

    Attributes:
        nodes: every genome with its verdict, in creation order.
        shown: the leaderboard's rows: COMPLETE genomes best first, then the others.
        details: eval_id -> the last evaluation of each shown or running genome.
        time_split: where the latest COMPLETE evaluations' wall time went (medians).
        state: the run's state (evo.run_index.run_state).
        held_out: the declared best's held-out evaluations (:mod:`evo.held_out`), oldest first.
    """

    record: RunRecord
    config: RunConfig
    nodes: list[Node]
    shown: list[Node]
    total_ranked: int
    noise: NoiseEstimate | None
    best: Node | None
    details: dict[int, EvaluationRecord]
    time_split: TimeSplit
    llm_calls: list[LLMCallRecord]
    engine: Holder | None
    state: str
    now: dt.datetime
    verdict: Verdict | None = None
    duty: list[tuple[str, int, float, float, float | None, float | None]] | None = None
    held_out: tuple[EvaluationRecord, ...] = ()

    @property
    def held_out_figure(self) -> HeldOut | None:
        """The declared best's held-out val_bpb (:mod:`evo.held_out`), ``None`` without one."""
        return held_out(held_out_scores(self.held_out), None if self.noise is None else self.noise.sigma)

    @property
    def seed(self) -> Node | None:
        return next((n for n in self.nodes if n.operator == "seed"), None)

    def last(self, node: Node) -> EvaluationRecord | None:
        return self.details.get(node.last_eval_id) if node.last_eval_id is not None else None

    def state_of(self, node: Node) -> str:
        """The genome's state as shown: ``RUNNING`` with no engine running the run is
        ``INTERRUPTED`` (left so by an engine that died; :func:`stale_evaluations`)."""
        return "INTERRUPTED" if node.state == "RUNNING" and self.engine is None else node.state


def ranked(nodes: Sequence[Node], top: int = 0) -> list[Node]:
    """COMPLETE genomes by val_bpb (best first, ties by age), then the rest in creation order
    (the order of :func:`evo.results.ranked`); with ``top`` > 0, only its first ``top``."""
    complete = [n for n in nodes if n.val_bpb is not None]
    key = attrgetter("val_bpb", "index")
    if 0 < top < len(complete):
        return heapq.nsmallest(top, complete, key=key)
    rest = [n for n in nodes if n.val_bpb is None]
    return (sorted(complete, key=key) + rest)[:top or None]


def load_status(archive: Archive, record: RunRecord, engine: Holder | None, state: str, top: int = 30) -> StatusView:
    """Read what ``evo status`` shows of ``record``'s run.

    Args:
        engine: the engine running the run now (evo.locking), if any.
        state: the run's state (evo.run_index.run_state).
        top: leaderboard rows (0: all).
    """
    config = RunConfig.from_json(record.config_json)
    nodes = load_nodes(archive, record.run)
    shown = ranked(nodes, top)
    wanted = {n.last_eval_id for n in shown if n.last_eval_id is not None}
    wanted |= {n.last_eval_id for n in nodes if n.state == "RUNNING" and n.last_eval_id is not None}
    details = {}
    if wanted:
        details = {e.eval_id: e for e in archive.evaluations(record.run, metrics=("training_seconds",),
                                                             eval_ids=sorted(wanted))}
    noise = noise_estimate(nodes)
    verdict = judge(nodes, None if noise is None else noise.sigma, config.best_replicates)
    best = next((n for n in nodes if n.genome_id == verdict.best), None)
    held = () if best is None else tuple(
        e for e in archive.evaluations(record.run, metrics=("val_bpb",), genome_id=best.genome_id) if e.held_out
    )
    return StatusView(record, config, nodes, shown, len(nodes), noise, best, details,
                      archive.time_split(record.run), archive.llm_calls(record.run), engine, state,
                      dt.datetime.now(dt.timezone.utc).replace(tzinfo=None), verdict, archive.duty_cycle(record.run),
                      held)


def _time_split_line(split: TimeSplit) -> str | None:
    """Where an evaluation's wall time goes, in medians over the latest COMPLETE evaluations."""
    if not split.evaluations or split.wall_s is None or split.training_s is None:
        return None
    parts = []
    if split.startup_s is not None:
        parts.append(f"start-up {split.startup_s:.1f}")
    parts.append(f"training {split.training_s:.1f}")
    if split.eval_s is not None:
        parts.append(f"evaluation {split.eval_s:.1f}")
    known = sum(x for x in (split.startup_s, split.training_s, split.eval_s) if x is not None)
    parts.append(f"{'rest' if len(parts) > 1 else 'not training'} {max(0.0, split.wall_s - known):.1f}")
    if split.trusted_eval_s is not None:
        parts.append(f"then trusted evaluation {split.trusted_eval_s:.1f}")
    return (f"seconds per evaluation (median of the latest {split.evaluations}, as genomes report them): "
            + ", ".join(parts))


# ---------------------------------------------------------------------------- JSON

def posterior_of(view: StatusView, node: Node) -> float | None:
    belief = view.verdict.beliefs.get(node.genome_id) if view.verdict is not None else None
    return None if belief is None or view.verdict.probability is None else belief.mean


def credit_now(view: StatusView) -> dict[str, OperatorCredit]:
    """The operators' credit as the engine sees it now (evo.credit, the scheduler's window)."""
    if view.verdict is None:
        return {}
    configured = {n: w for n, w in view.config.operators.items() if w > 0}
    sigma = view.noise.sigma if view.noise is not None else None
    return operator_credit(view.nodes, view.verdict.beliefs, configured, sigma)


def shares_of(credit: dict[str, OperatorCredit]) -> dict[str, float]:
    """name -> the operator's share of the next children (its weight over the operators' total)."""
    total = sum(c.weight for c in credit.values()) or 1.0
    return {name: c.weight / total for name, c in credit.items()}


def best_probability(view: StatusView) -> float | None:
    return None if view.verdict is None else view.verdict.probability


def finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _recorded_running(view: StatusView) -> list[tuple[Node, EvaluationRecord]]:
    """(genome, evaluation) per evaluation recorded RUNNING: each genome's latest, then the
    declared best's held-out ones (``evaluation.held_out``)."""
    out = [(n, last) for n in view.nodes if n.state == "RUNNING" and (last := view.last(n)) is not None]
    by_id = {n.genome_id: n for n in view.nodes}
    out += [(by_id[e.genome_id], e) for e in view.held_out if e.state is EvalState.RUNNING and e.genome_id in by_id]
    return out


def running_evaluations(view: StatusView) -> list[tuple[Node, EvaluationRecord, float, float]]:
    """(genome, evaluation, seconds running, seconds of training budget left) per running
    evaluation, held-out ones included; none while no engine runs the run (see
    :func:`stale_evaluations`)."""
    if view.engine is None:
        return []
    out = []
    for node, e in _recorded_running(view):
        elapsed = (view.now - e.started_at).total_seconds() if e.started_at else 0.0
        budget_s = view.record.time_budget_s * e.fidelity  # a screen's is shorter (evo.screening)
        out.append((node, e, elapsed, max(0.0, budget_s - elapsed)))
    return out


def stale_evaluations(view: StatusView) -> list[tuple[Node, EvaluationRecord]]:
    """Evaluations recorded RUNNING while no engine runs the run: the engine died (kill -9,
    a crash, a lost machine) before it could mark them; ``evo resume`` records their kept
    outcome or runs them again. Held-out evaluations included."""
    return [] if view.engine is not None else _recorded_running(view)


def llm_summary(calls: Sequence[LLMCallRecord]) -> dict[str, Any] | None:
    if not calls:
        return None
    failed = Counter(c.outcome for c in calls if c.outcome != "ok")
    return {
        "model": calls[-1].model, "attempts": len(calls), "children": len({c.child_id for c in calls if c.child_id}),
        "failed": dict(failed.most_common()), "input_tokens": sum(c.input_tokens for c in calls),
        "output_tokens": sum(c.output_tokens for c in calls), "spend_usd": sum(c.cost_usd for c in calls),
    }


def screening_summary(view: StatusView) -> dict[str, Any] | None:
    """``{fraction, eta, screened, promoted}`` of a run with screening on (COMPLETE screens;
    promoted: those evaluated in full since), ``None`` with it off."""
    config = view.config
    if not config.screening:
        return None
    screened = [n for n in view.nodes if n.screen_bpb is not None]
    return {"fraction": config.screen_fraction, "eta": config.screen_eta, "screened": len(screened),
            "promoted": sum(1 for n in screened if n.state != "SCREENED")}


# ---------------------------------------------------------------------------- text

def header_lines(view: StatusView) -> list[str]:
    """The lines above the leaderboard (each a sentence; long ones wrap at words)."""
    record, config, nodes = view.record, view.config, view.nodes
    generations = max((n.generation for n in nodes), default=-1) + 1
    fitness = " · fitness REPORTED by the genomes (untrusted)" if config.fitness == "reported" else ""
    lines = [f"run {record.run} · profile {record.profile} · dataset {record.dataset} · "
             f"{record.time_budget_s:g} s per genome{fitness}"]
    if view.engine is not None:
        lines.append(f"state: running (engine pid {view.engine.pid or 'unknown'})")
    elif view.state == "stopped":
        lines.append(f"state: stopped; continue with: evo resume --run {record.run}")
    elif view.state == "failed-seed":
        seed = view.seed
        lines.append(f"state: failed-seed: the seed genome never completed (see: evo show --run {record.run} "
                     f"{seed.genome_id if seed else 'g0000'})")
    else:
        lines.append(f"state: {view.state}")
    counts = Counter(view.state_of(n) for n in nodes)
    lines.append(f"{len(nodes)} genomes in {generations} generation(s) · states: "
                 + (", ".join(f"{state} {k}" for state, k in sorted(counts.items())) or "none yet"))
    screening = screening_summary(view)
    if screening is not None:
        lines.append(
            f"screening (evo.screening): a child trains {config.screen_fraction:.0%} of the budget first, and the best "
            f"1/{config.screen_eta} of those screened are promoted to a full evaluation: {screening['screened']} "
            f"screened, {screening['promoted']} promoted; screen readings are compared only with each other")
    split = _time_split_line(view.time_split)
    if split:
        lines.append(split)
    for device, n, training_s, wall_s, gap_median, gap_max in view.duty or []:
        if wall_s > 0:
            gaps = f", idle gap median {gap_median:.1f} s (max {gap_max:.1f} s)" if gap_median is not None else ""
            lines.append(f"slot {device}: trains {100 * training_s / wall_s:.0f}% of the time ({training_s:.0f} of "
                         f"{wall_s:.0f} s, {n} evaluations){gaps}")
    noise = view.noise
    if noise is not None:
        lines.append(f"noise floor sigma {noise.sigma:.6f} (90% {noise.low:.6f}-{noise.high:.6f}, pooled over "
                     f"{noise.genomes} genome(s) with replicates)")
    credit = credit_now(view)
    if credit and any(c.children for c in credit.values()):
        shares = shares_of(credit)
        lines.append(f"operators (improved / children with a belief, over the latest {OPERATOR_WINDOW} births; "
                     "share of the next children): " + ", ".join(
                         f"{name} {c.improved}/{c.children} {100 * shares[name]:.0f}%" for name, c in credit.items()))
    llm = llm_summary(view.llm_calls)
    if llm:
        failed = llm["failed"]
        failures = f"{sum(failed.values())} failed" + (
            f" ({', '.join(f'{k} {n}' for k, n in failed.items())})" if failed else "")
        cap = f" of ${config.max_llm_cost_usd:.2f} cap" if config.max_llm_cost_usd is not None else ""
        lines.append(f"LLM {llm['model']}: {llm['attempts']} attempts, {llm['children']} children recorded, {failures}; "
                     f"tokens {llm['input_tokens']:,} in / {llm['output_tokens']:,} out; "
                     f"spend ${llm['spend_usd']:.4f}{cap}")
    if view.best is not None:
        b = view.best
        spread = f" ± {b.val_bpb_std:.6f}" if b.n >= 2 else ""  # one reading has no spread, not a spread of 0
        line = f"declared best: {b.genome_id} val_bpb {b.val_bpb:.6f}{spread} (n={b.n})"
        posterior, p_best = posterior_of(view, b), best_probability(view)
        if posterior is not None and p_best is not None:
            line += f" · posterior {posterior:.6f} · P(best of all evaluated) {p_best:.2f}"
        lines.append(line)
        figure = view.held_out_figure
        if figure is not None:
            lines.append(f"  {describe_held_out(figure)}: evaluations with fresh seeds after the search, "
                         "which took no part in choosing it")
    return lines


def running_lines(view: StatusView) -> list[str]:
    """One line per evaluation running now: slot, genome, seconds so far, description."""
    lines = []
    for n, last, elapsed, left in running_evaluations(view):
        head = f"  {last.device or '?'}: {n.genome_id} (attempt {last.attempt}) "
        if last.held_out:
            lines.append(f"{head}running {elapsed:.0f} s: a held-out evaluation of the declared best")
            continue
        screen = f"screening at {last.fidelity:.0%} of the budget, " if last.is_screen else ""
        lines.append(f"{head}{screen}running {elapsed:.0f} s, ~{left:.0f} s of training budget left · "
                     f"{' '.join(n.description.split())}")
    return lines


def leaderboard_columns(view: StatusView) -> list[Column]:
    """The leaderboard's columns for the shown rows, the most important (priority 0) always kept."""
    rows = view.shown
    seed = view.seed
    seed_bpb = seed.val_bpb if seed else None
    best_id = view.best.genome_id if view.best is not None else None
    complete = [n for n in rows if n.is_complete]  # shown rows are ranked: COMPLETE ones first, best first
    rank_of = {n.genome_id: i for i, n in enumerate(complete, start=1)}

    def state(n: Node) -> str:
        if n.screen_bpb is not None and n.val_bpb is None:
            return f"{view.state_of(n)} (screen {n.screen_bpb:.4f})"
        return state_label(view.state_of(n), n.failure_kind)

    def wall(n: Node) -> str:
        last = view.last(n)
        return f"{last.wall_s:.1f}" if last is not None and last.wall_s is not None else ""

    return [
        Column("#", [str(rank_of[n.genome_id]) if n.genome_id in rank_of else "" for n in rows], 1, right=True),
        Column("genome", [n.genome_id + (" ★" if n.genome_id == best_id else "") for n in rows]),
        Column("gen", [str(n.generation) for n in rows], 6, right=True),
        Column("operator", [n.operator for n in rows], 4),
        Column("description", [" ".join(n.description.split()) for n in rows], flexible=True),
        Column("val_bpb", [f"{n.val_bpb:.6f}" if n.val_bpb is not None else "-" for n in rows], right=True),
        Column("± std", [f"{n.val_bpb_std:.6f}" if n.val_bpb_std is not None and n.n > 1 else "" for n in rows], 5,
               right=True),
        Column("n", [str(n.n) for n in rows], 2, right=True),
        Column("vs seed", [f"{n.val_bpb - seed_bpb:+.4f}" if n.val_bpb is not None and seed_bpb is not None else ""
                           for n in rows], 3, right=True),
        Column("state", [state(n) for n in rows], 1),
        Column("wall s", [wall(n) for n in rows], 7, right=True),
    ]


def _style(n: Node, best_id: str | None, state: str) -> str:
    if n.genome_id == best_id:
        return "bold green"
    return {"FAIL": "red", "TIMEOUT": "red", "RUNNING": "yellow", "PENDING": "dim", "INTERRUPTED": "dim",
            "SCREENED": "dim"}.get(state, "")


def render_status(view: StatusView, console: Console, wide: bool = False) -> None:
    """Print the status of a run on ``console``, at its width (module docstring).

    Args:
        wide: every column and whole descriptions, whatever the width.
    """
    for line in header_lines(view):
        console.print(Text(line), crop=not wide)
    running = running_lines(view)
    if running:
        console.print(Text(f"running now ({len(running)} slot(s)):"))
        for line in running:
            console.print(Text(line, no_wrap=not wide, overflow="ellipsis"))
    stale = stale_evaluations(view)
    if stale:
        console.print(Text(
            f"interrupted: the engine stopped during {', '.join(f'{n.genome_id} (attempt {e.attempt})' for n, e in stale)}"
            f"; `evo resume --run {view.record.run}` records their kept outcome or runs them again"), crop=not wide)
    best_id = view.best.genome_id if view.best is not None else None
    table, needed = fitted_table(leaderboard_columns(view), console.width, wide, MIN_DESCRIPTION,
                                 [_style(n, best_id, view.state_of(n)) for n in view.shown])
    if wide and needed > console.width:  # rich renders no wider than its console: print on a wider one
        Console(file=console.file, width=needed, color_system=console.color_system, force_terminal=console.is_terminal,
                no_color=console.no_color, legacy_windows=False).print(table)
    else:
        console.print(table)
    if len(view.shown) < view.total_ranked:
        console.print(Text(f"... {view.total_ranked - len(view.shown)} more (use --top 0 for all)"))
