"""``evo status --json``: the view of :mod:`evo.cli_status` as one JSON object."""

from __future__ import annotations

from collections import Counter
from typing import Any

from evo.cli_status import (
    StatusView,
    best_probability,
    credit_now,
    finite_or_none,
    llm_summary,
    posterior_of,
    ranked,
    running_evaluations,
    screening_summary,
    shares_of,
    stale_evaluations,
)
from evo.credit import OperatorCredit
from evo.lineage import Node
from evo.records import TimeSplit


def _operators_json(credit: dict[str, OperatorCredit]) -> dict[str, dict[str, Any]]:
    shares = shares_of(credit)
    return {name: {"children": c.children, "improved": c.improved, "weight": round(c.weight, 4),
                   "share": round(shares[name], 4)} for name, c in credit.items()}


def _spread(node: Node) -> float | None:
    """The standard deviation of a genome's readings; ``None`` with fewer than 2 (no spread, not 0)."""
    return finite_or_none(node.val_bpb_std) if node.n >= 2 else None


def status_json(view: StatusView) -> dict[str, Any]:
    """``evo status --json``: the run, its noise floor, declared best, every genome, the running slots.

    Keys: ``run`` (name, created_at, profile, dataset, time_budget_s, fitness,
    population, generations, max_evaluations (each ``None`` without that limit),
    state: running / stopped / finished / failed-seed,
    engine_pid: ``None`` when no engine runs it), ``states`` (genome state -> count),
    ``noise_floor`` (pooled sigma, the seed's n, df, genomes pooled, sigma_90: its 90%
    interval; ``None`` before any replicate), ``declared_best`` (genome_id, val_bpb,
    val_bpb_std (null below 2 readings), n, posterior_mean, p_best: its probability of being the best of every
    COMPLETE genome, :mod:`evo.racing`; both ``None`` without a noise floor; held_out:
    {val_bpb, se, n} of its held-out evaluations, :mod:`evo.held_out`, ``None`` without), ``genomes`` in
    creation order (id, rank among COMPLETE genomes, generation, parents, operator,
    description, state, failure_kind, val_bpb {mean, std (null below 2 readings), n}, screen_val_bpb: the mean
    COMPLETE screen reading, :mod:`evo.screening`), ``screening`` (fraction, eta, screened,
    promoted; ``None`` when the run does not screen), ``running`` (slot,
    genome_id, attempt, elapsed_s, budget_left_s, held_out: a held-out evaluation of the
    declared best; empty while no engine runs the run),
    ``interrupted`` (genome_id, attempt, slot of each evaluation left RUNNING by an engine
    that died; ``evo resume`` records their kept outcome or runs them again), ``slots`` (per device: evaluations,
    training_s as the genomes report it, wall_s: the evaluations' spans and the idle gaps
    between them, the run's stopped time left out (:meth:`Archive.duty_cycle`), duty_cycle = training_s / wall_s, idle gaps between evaluations), ``operators`` (name -> children,
    improved, weight: the credit the engine draws operators by, :mod:`evo.credit`, over
    the latest births; share: the weight over the operators' total), ``llm`` (model, attempts, children,
    failed by outcome, tokens, spend_usd; ``None`` without calls). Times are UTC ISO 8601;
    non-finite numbers are ``null``.
    """
    record, config, best, seed, noise = view.record, view.config, view.best, view.seed, view.noise
    rank = {n.genome_id: i for i, n in enumerate((n for n in ranked(view.nodes) if n.is_complete), start=1)}
    return {
        "run": {
            "name": record.run, "created_at": record.created_at.isoformat(timespec="seconds"), "profile": record.profile,
            "dataset": record.dataset, "time_budget_s": record.time_budget_s, "fitness": config.fitness,
            "population": config.population, "generations": config.generations,
            "max_evaluations": config.max_evaluations, "state": view.state,
            "engine_pid": view.engine.pid if view.engine else None,
        },
        "states": dict(sorted(Counter(view.state_of(n) for n in view.nodes).items())),
        "screening": screening_summary(view),
        "noise_floor": None if noise is None else {
            "sigma": finite_or_none(noise.sigma), "n": seed.n if seed else 0, "df": noise.df, "genomes": noise.genomes,
            "sigma_90": [finite_or_none(noise.low), finite_or_none(noise.high)],
        },
        "declared_best": None if best is None else {
            "genome_id": best.genome_id, "val_bpb": finite_or_none(best.val_bpb), "val_bpb_std": _spread(best),
            "n": best.n, "posterior_mean": finite_or_none(posterior_of(view, best)), "p_best": finite_or_none(best_probability(view)),
            "held_out": None if (h := view.held_out_figure) is None else {
                "val_bpb": finite_or_none(h.val_bpb), "se": finite_or_none(h.se), "n": h.n,
            },
        },
        "genomes": [
            {
                "id": n.genome_id, "rank": rank.get(n.genome_id), "generation": n.generation,
                "parents": list(n.parents), "operator": n.operator, "description": n.description,
                "state": view.state_of(n), "failure_kind": n.failure_kind,
                "val_bpb": {"mean": finite_or_none(n.val_bpb), "std": _spread(n), "n": n.n},
                "screen_val_bpb": finite_or_none(n.screen_bpb),
            }
            for n in view.nodes
        ],
        "running": [
            {"slot": last.device, "genome_id": n.genome_id, "attempt": last.attempt,
             "elapsed_s": round(elapsed, 1), "budget_left_s": round(left, 1), "held_out": last.held_out}
            for n, last, elapsed, left in running_evaluations(view)
        ],
        "interrupted": [
            {"genome_id": n.genome_id, "attempt": e.attempt, "slot": e.device} for n, e in stale_evaluations(view)
        ],
        "llm": llm_summary(view.llm_calls),
        "slots": [
            {"device": d, "evaluations": n, "training_s": round(t, 1), "wall_s": round(w, 1),
             "duty_cycle": round(t / w, 4) if w > 0 else None, "idle_gap_median_s": g, "idle_gap_max_s": x}
            for d, n, t, w, g, x in view.duty or []
        ],
        "operators": _operators_json(credit_now(view)),
        "time_per_evaluation": _time_split_json(view.time_split),
    }


def _time_split_json(split: TimeSplit) -> dict[str, Any]:
    return {"evaluations": split.evaluations, "wall_s": finite_or_none(split.wall_s), "training_s": finite_or_none(split.training_s),
            "startup_s": finite_or_none(split.startup_s), "eval_s": finite_or_none(split.eval_s),
            "trusted_eval_s": finite_or_none(split.trusted_eval_s)}
