"""The lineage of a run, who descends from whom, read lean from the archive (shown and
written by :mod:`evo.lineage_render`).

Sized for runs of 100,000 genomes and chains of thousands of generations: the archive is
read lean (the verdicts aggregated in SQL; no evaluation records, sources, log tails or
metrics JSON, see :func:`load_nodes`) and every walk is iterative (no recursion limit).
"""

from __future__ import annotations

import gc
import statistics
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from evo.config import RunConfig
from evo.noise import declared_best as noise_declared_best
from evo.records import RunRecord
from evo.results import PENDING

if TYPE_CHECKING:  # the archive (and DuckDB) load only when a command reads one: `evo --help` stays light
    from evo.archive import Archive



# ---------------------------------------------------------------------------- reading the archive

@dataclass(slots=True, unsafe_hash=True)
class Node:
    """One genome as the lineage views show it: its record and verdict, lean; never changed
    once loaded (not ``frozen``: its slower ``__init__`` would be a fifth of a 100,000-node load).

    The verdict is :func:`evo.results.genome_result`'s: ``state`` and ``failure_kind``
    are those of the last evaluation (``last_eval_id``: the latest not INTERRUPTED, else the
    latest; ``state`` PENDING without one); ``val_bpb`` is the mean of the COMPLETE
    evaluations' finite scores (``None`` without one), ``val_bpb_std`` their sample std (0.0
    for one), ``n`` their count. ``index`` is the creation order (0 for the first genome),
    ``parents`` the parents' ids, the one whose code the child was built on first.
    """

    genome_id: str
    index: int
    generation: int
    operator: str
    description: str
    parents: tuple[str, ...]
    source_sha256: str
    state: str
    failure_kind: str | None
    val_bpb: float | None
    val_bpb_std: float | None
    n: int
    last_eval_id: int | None
    ignores_seed: bool = False  # replicates with different EVO_SEED gave one value (GenomeResult.ignores_seed)
    screen_bpb: float | None = None  # mean COMPLETE screen reading (evo.screening), not a fitness

    @property
    def is_complete(self) -> bool:
        return self.val_bpb is not None


# Per genome, in creation order: the last evaluation (see Node) and the COMPLETE scores:
# their count, the one score when there is one, all of them (in order) when there are more.
# Held-out evaluations are left out, as genome_result leaves them out (evo.held_out); screens
# (fidelity < 1, evo.screening) give the state and the screen reading of a genome with no
# full evaluation (SCREENED once one is COMPLETE), as in genome_result.
_NODES_SQL = """
WITH scored AS (
    SELECT genome_id,
           coalesce(max(eval_id) FILTER (WHERE state <> 'INTERRUPTED'), max(eval_id)) AS last_id,
           count(*) FILTER (WHERE state = 'COMPLETE' AND isfinite(val_bpb)) AS n,
           min(val_bpb) FILTER (WHERE state = 'COMPLETE' AND isfinite(val_bpb)) AS single,
           list(val_bpb ORDER BY eval_id) FILTER (WHERE state = 'COMPLETE' AND isfinite(val_bpb)) AS scores,
           count(DISTINCT seed) FILTER (WHERE state = 'COMPLETE' AND isfinite(val_bpb)) AS seeds,
           count(DISTINCT val_bpb) FILTER (WHERE state = 'COMPLETE' AND isfinite(val_bpb)) AS distinct_scores
    FROM evaluations WHERE run = $run AND NOT coalesce(held_out, false) AND coalesce(fidelity, 1.0) >= 1.0
    GROUP BY genome_id
), screened AS (
    SELECT genome_id,
           coalesce(max(eval_id) FILTER (WHERE state <> 'INTERRUPTED'), max(eval_id)) AS last_id,
           avg(val_bpb) FILTER (WHERE state = 'COMPLETE' AND isfinite(val_bpb)) AS screen_bpb
    FROM evaluations WHERE run = $run AND NOT coalesce(held_out, false) AND coalesce(fidelity, 1.0) < 1.0
    GROUP BY genome_id
)
SELECT g.genome_id, g.generation, g.operator, g.description, g.source_sha256, coalesce(s.last_id, c.last_id),
       CASE WHEN s.last_id IS NULL AND e.state = 'COMPLETE' THEN 'SCREENED' ELSE e.state END, e.failure_kind,
       coalesce(s.n, 0), s.single, CASE WHEN s.n > 1 THEN s.scores END,
       coalesce(s.seeds >= 2 AND s.distinct_scores = 1, false), c.screen_bpb
FROM genomes g LEFT JOIN scored s ON s.genome_id = g.genome_id LEFT JOIN screened c ON c.genome_id = g.genome_id
     LEFT JOIN evaluations e ON e.eval_id = coalesce(s.last_id, c.last_id)
WHERE g.run = $run ORDER BY g.seq
"""
_EDGES_SQL = "SELECT parent_id, child_id FROM lineage WHERE run = $run ORDER BY child_id, parent_index"


def load_nodes(archive: Archive, run: str) -> list[Node]:
    """Every genome of ``run`` with its verdict, in creation order, in two queries.

    The verdicts are aggregated in SQL (the rule of :func:`evo.results.genome_result`;
    means and stds of replicated genomes with its ``statistics`` functions), so that no
    evaluation record is built: 100,000 genomes load in about a third of a second.
    ``tests/test_lineage_scale.py`` checks that the verdicts agree with ``genome_results``.
    Uses the archive's own read-only connection (``Archive`` reads whole records only).
    """
    with _gc_paused(), archive._tx(read_only=True) as con:
        rows = con.execute(_NODES_SQL, {"run": run}).fetchall()
        edges = con.execute(_EDGES_SQL, {"run": run}).fetchall()
        parents: dict[str, tuple[str, ...]] = {}
        for parent, child in edges:
            parents[child] = (*parents[child], parent) if child in parents else (parent,)
        nodes = []
        append = nodes.append
        for index, (genome_id, generation, operator, description, sha, last_id, state, failure_kind, n, single,
                    scores, ignores_seed, screen_bpb) in enumerate(rows):
            if n > 1:
                mean, std = statistics.fmean(scores), statistics.stdev(scores)
            else:
                mean, std = single, (0.0 if n else None)
            append(Node(genome_id, index, generation, operator, description, parents.get(genome_id, ()), sha,
                        state if last_id is not None else PENDING, failure_kind, mean, std, n, last_id,
                        ignores_seed, screen_bpb))
    return nodes


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a block builds many long-lived objects with no
    cycles (100,000 nodes: its passes over the growing heap cost a third of the load); then
    everything alive is moved to its permanent generation (``gc.freeze``), so that its next
    passes do not walk the nodes again. Reference counting still frees them as usual."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def declared_best(nodes: Sequence[Node], config: RunConfig) -> Node | None:
    """The run's declared best: the engine's rule, :func:`evo.noise.declared_best` (it reads
    only ``is_complete``, ``n``, ``val_bpb``, ``val_bpb_std`` and ``ignores_seed``, which a
    :class:`Node` has)."""
    return noise_declared_best(nodes, config)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- the graph

@dataclass(frozen=True)
class Lineage:
    """A run's genomes in creation order, their children, and the declared best.

    Edges go parent -> child; a crossover child has two parents, the first the one whose
    code it was built on. Build it with :meth:`of` (or :func:`load_lineage`).

    Attributes:
        nodes: every genome with its verdict, in creation order.
        children: genome id -> ids of its children in creation order (absent: none).
        best: the run's declared best (:func:`declared_best`), ``None`` before anything completed.
        ancestry: the best genome, then its ancestors nearest first (empty without a best).
    """

    nodes: tuple[Node, ...]
    children: Mapping[str, tuple[str, ...]]
    best: Node | None
    ancestry: tuple[str, ...]

    @classmethod
    def of(cls, nodes: Sequence[Node], config: RunConfig) -> Lineage:
        """The lineage of ``nodes`` (creation order), its best by ``config``'s noise rule.

        Raises:
            ValueError: a genome names a parent that is not among ``nodes``.
        """
        known = {node.genome_id for node in nodes}
        children: dict[str, list[str]] = {}
        for node in nodes:
            for parent in node.parents:
                if parent not in known:
                    raise ValueError(f"lineage edge {parent} -> {node.genome_id} names an unknown genome")
                children.setdefault(parent, []).append(node.genome_id)
        top = declared_best(nodes, config)
        ancestry = ancestors(top.genome_id, {node.genome_id: node.parents for node in nodes}) if top else []
        return cls(tuple(nodes), {k: tuple(v) for k, v in children.items()}, top, tuple(ancestry))

    @cached_property
    def by_id(self) -> dict[str, Node]:
        return {node.genome_id: node for node in self.nodes}

    @cached_property
    def marked(self) -> frozenset[str]:
        """The best genome's ancestry as a set (``★`` in the tree)."""
        return frozenset(self.ancestry)

    @property
    def edges(self) -> list[tuple[str, str]]:
        """``(parent, child)`` pairs, children in creation order, each child's parents in order."""
        return [(parent, node.genome_id) for node in self.nodes for parent in node.parents]

    def depths(self) -> dict[str, int]:
        """Genome id -> its depth in the tree drawn under first parents (a root is 1)."""
        depth: dict[str, int] = {}
        for node in self.nodes:  # a parent is always recorded before its child
            depth[node.genome_id] = depth.get(node.parents[0], 0) + 1 if node.parents else 1
        return depth


def ancestors(genome_id: str, parents: Mapping[str, Sequence[str]]) -> list[str]:
    """``genome_id`` then all its ancestors, nearest first (breadth-first, iterative).

    Args:
        parents: genome id -> its parents' ids.
    """
    seen = {genome_id: None}
    queue = deque([genome_id])
    while queue:
        for parent in parents.get(queue.popleft(), ()):
            if parent not in seen:
                seen[parent] = None
                queue.append(parent)
    return list(seen)


def load_lineage(archive: Archive, run: RunRecord) -> Lineage:
    """The lineage of ``run``, read lean (:func:`load_nodes`).

    Raises:
        ValueError: a lineage edge names an unknown genome.
    """
    return Lineage.of(load_nodes(archive, run.run), RunConfig.from_json(run.config_json))
