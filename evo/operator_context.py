"""What the mutation operators may learn from the run: the :class:`evo.operators.Context`.

Bounded, so a proposal costs the same at 100 and at 100,000 genomes: the sources of the
``CONTEXT_BEST`` best and the ``CONTEXT_RECENT`` latest COMPLETE genomes (with their mean
val_bpb and, once the run has a noise floor, their posterior means), every genome's
verdict, the latest ``CONTEXT_FAILED`` failed genomes (the optuna operator learns where
the cliffs are), and the constant weights of :func:`evo.credit.constant_weights` from the
edits among the shown genomes.
"""

from __future__ import annotations

from collections.abc import Callable

from evo.credit import constant_weights
from evo.operators import Context
from evo.operators.optuna_sampler import cached_constants
from evo.results import GenomeResult
from evo.state import RunState

CONTEXT_BEST = 128  # operators learn from the best and the latest COMPLETE genomes:
CONTEXT_RECENT = 128  # bounded, so a proposal costs the same at 100 and at 100k genomes
CONTEXT_FAILED = 64  # and the latest failed genomes (the optuna operator learns where the cliffs are)


class ContextBuilder:
    """Builds the operators' :class:`Context` from a run's state (module docstring).

    Args:
        best_replicates: COMPLETE evaluations a genome needs to be declared best (the verdict's).
        profile: the run's harness profile.
        time_budget_s: training seconds per genome.
        program_md: returns the project's program.md; called at every build, so edits of
            program.md apply at once.
    """

    def __init__(self, best_replicates: int, profile: str, time_budget_s: float, program_md: Callable[[], str]) -> None:
        self.best_replicates = best_replicates
        self.profile = profile
        self.time_budget_s = time_budget_s
        self.program_md = program_md
        self._changed: dict[str, list[str]] = {}  # genome id -> constants it changed from its first parent

    def __call__(self, state: RunState) -> Context:
        chosen = {r.genome_id: r for r in [*state.best(CONTEXT_BEST), *state.latest_complete(CONTEXT_RECENT)]}
        shown = sorted(chosen.values(), key=lambda r: state.birth_index(r.genome_id))
        sources = state.sources.get_many(r.genome.source_sha256 for r in shown)
        failed = state.latest_failed(CONTEXT_FAILED)
        verdict = state.verdict(self.best_replicates)
        believed = () if verdict.probability is None else tuple(
            (sources[r.genome.source_sha256], verdict.beliefs[r.genome_id].mean) for r in shown
            if r.genome_id in verdict.beliefs
        )
        return Context(
            tuple((sources[r.genome.source_sha256], r.val_bpb) for r in shown), tuple(state.results()), self.profile,
            self.time_budget_s, self.program_md(), constant_weights(self.edits(chosen, sources)), believed,
            tuple(state.sources.get_many(r.genome.source_sha256 for r in failed).values()),
        )

    def edits(self, shown: dict[str, GenomeResult], sources: dict[str, str]) -> list[tuple[list[str], float]]:
        """(constants changed, gain over the first parent in bits/byte) of each shown child of
        the hyperparam or optuna operator whose first parent is shown too (constants parsed
        once per source, a genome's changes diffed once)."""
        edits = []
        for r in shown.values():
            parent = shown.get(r.genome.parents[0]) if r.genome.parents else None
            if parent is None or r.genome.operator not in ("hyperparam", "optuna"):
                continue
            changed = self._changed.get(r.genome_id)
            if changed is None:
                child_c = cached_constants(sources[r.genome.source_sha256])
                parent_c = cached_constants(sources[parent.genome.source_sha256])
                if child_c is None or parent_c is None:
                    continue
                changed = [n for n, c in child_c.items() if n in parent_c and parent_c[n].value != c.value]
                self._changed[r.genome_id] = changed  # a genome's code never changes: diffed once
            edits.append((changed, parent.val_bpb - r.val_bpb))
        return edits
