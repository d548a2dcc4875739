"""The lineage of a run, who descends from whom: read lean from the archive, shown as a
terminal tree, or written as Graphviz DOT, GraphML or node-link JSON.

Sized for runs of 100,000 genomes and chains of thousands of generations: the archive is
read lean (the verdicts aggregated in SQL; no evaluation records, sources, log tails or
metrics JSON, see :func:`load_nodes`), every walk is iterative (no recursion limit), and
the tree gives every genome a line of its own at any depth; past :data:`INDENT_CAP` levels
the indentation stops growing and the line states its depth instead.
"""

from __future__ import annotations

import gc
import io
import json
import statistics
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rich.color import ColorSystem
from rich.console import Console
from rich.style import Style

from evo.config import RunConfig
from evo.noise import declared_best as noise_declared_best
from evo.records import EvalState, RunRecord
from evo.results import PENDING

if TYPE_CHECKING:  # the archive (and DuckDB) load only when a command reads one: `evo --help` stays light
    from evo.archive import Archive

FORMATS = ("dot", "graphml", "json")
SUFFIX_FORMATS = {".dot": "dot", ".gv": "dot", ".graphml": "graphml", ".json": "json"}
INDENT_CAP = 32  # tree levels that indent; deeper lines keep that indentation and state their depth
_COLOR_SYSTEMS = {"standard": ColorSystem.STANDARD, "256": ColorSystem.EIGHT_BIT,
                  "truecolor": ColorSystem.TRUECOLOR, "windows": ColorSystem.STANDARD}


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


# ---------------------------------------------------------------------------- the terminal tree

def _label(node: Node, marked: bool) -> str:
    if node.val_bpb is not None:
        score = f"{node.val_bpb:.6f}"
    elif node.screen_bpb is not None:
        score = f"SCREENED (screen {node.screen_bpb:.6f})"
    else:
        score = f"{node.state} ({node.failure_kind})" if node.failure_kind else node.state
    description = node.description
    if "\n" in description or "\r" in description:
        description = " ".join(description.splitlines())  # one line per genome, always
    return f"{'★ ' if marked else '  '}{node.genome_id} g{node.generation} {score}  [{node.operator}] {description}"


_FAILED = (EvalState.FAIL.value, EvalState.TIMEOUT.value)


def _style(node: Node, marked: bool) -> str | None:
    if marked:
        return "bold green"
    if node.val_bpb is None:
        return "red" if node.state in _FAILED else "dim"
    return None


def tree_lines(lineage: Lineage, title: str, cap: int = INDENT_CAP) -> Iterator[tuple[str, str | None]]:
    """The terminal tree as ``(line, style)`` pairs: ``title``, then one line per genome.

    Roots (genomes without parents) come in creation order; each genome is drawn under its
    first parent, children in creation order, and named again (dimmed, "see there") under
    each other parent. ``★`` marks the best genome's ancestry. The walk is iterative, so
    any depth is drawn in full; past ``cap`` levels a line keeps the indentation of level
    ``cap`` and begins with ``⋯[depth]`` (a root has depth 1), and the title says so.

    Styles are rich style names, ``None`` for plain lines.
    """
    deepest = max(lineage.depths().values(), default=0)
    if deepest > cap:
        title += f" · {deepest} levels deep: indentation stops at {cap}, deeper lines start with ⋯[depth]"
    yield title, "bold"
    by_id, marked = lineage.by_id, lineage.marked
    roots = [node.genome_id for node in lineage.nodes if not node.parents]
    # (genome, guides above it, last of its siblings, depth, its first parent when this is a "see there" line)
    stack: list[tuple[str, str, bool, int, str | None]] = [
        (root, "", i == len(roots) - 1, 1, None) for i, root in reversed(list(enumerate(roots)))
    ]
    while stack:
        node, guides, last, depth, drawn_under = stack.pop()
        head = guides + ("└── " if last else "├── ") if depth <= cap else f"{guides}⋯[{depth}] "
        if drawn_under is not None:
            yield f"{head}  {node} (also a child of {drawn_under}; see there)", "dim"
            continue
        record, star = by_id[node], node in marked
        yield head + _label(record, star), _style(record, star)
        kids = lineage.children.get(node, ())
        inner = guides + ("    " if last else "│   ") if depth < cap else guides
        for i in range(len(kids) - 1, -1, -1):
            first = by_id[kids[i]].parents[0]
            stack.append((kids[i], inner, i == len(kids) - 1, depth + 1, None if first == node else first))


def color_system(console: Console) -> ColorSystem | None:
    """The colour system to style tree lines with: ``None`` when ``console`` writes to a
    file or a pipe, or colour is off (``NO_COLOR``)."""
    if not console.is_terminal or console.no_color or console.color_system is None:
        return None
    return _COLOR_SYSTEMS.get(console.color_system)


def write_tree(lines: Iterable[tuple[str, str | None]], out: TextIO, colors: ColorSystem | None = None) -> int:
    """Write ``lines`` (from :func:`tree_lines`) to ``out``, one per line, as they come.

    Args:
        colors: style the lines with ANSI codes of this colour system; ``None``: plain text.

    Returns:
        The number of lines written.
    """
    styles: dict[str, Style] = {}
    batch: list[str] = []
    written = 0
    for text, style in lines:
        if style and colors is not None:
            if style not in styles:
                styles[style] = Style.parse(style)
            text = styles[style].render(text, color_system=colors)
        batch.append(text)
        if len(batch) >= 4096:
            out.write("\n".join(batch) + "\n")
            written += len(batch)
            batch.clear()
    if batch:
        out.write("\n".join(batch) + "\n")
        written += len(batch)
    out.flush()
    return written


# ---------------------------------------------------------------------------- files

def format_for(path: Path, fmt: str | None) -> str:
    """The format to write ``path`` in: ``fmt``, else the one its suffix names.

    Raises:
        ValueError: an unknown format, or no format and a suffix that names none.
    """
    if fmt is None:
        fmt = SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"cannot tell the format of {path.name} from its suffix; "
                             f"add --format ({', '.join(FORMATS)})")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def _attributes(node: Node, marked: bool) -> dict[str, Any]:
    """A node's attributes; those without a value are left out (GraphML has no null)."""
    data = {
        "generation": node.generation, "operator": node.operator, "description": node.description,
        "state": node.state, "val_bpb": node.val_bpb, "n": node.n, "failure_kind": node.failure_kind,
        "screen_val_bpb": node.screen_bpb,
    }
    clean = {k: v for k, v in data.items() if v is not None}
    clean["on_best_path"] = marked
    return clean


def _dot_string(text: str) -> str:
    """``text`` as a quoted DOT string (a newline becomes a label line break)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n") + '"'


def dot_lines(lineage: Lineage) -> Iterator[str]:
    """The lineage as Graphviz DOT, line by line.

    Nodes are labelled "id (val_bpb)" over the description's first 50 characters, filled
    green on the best genome's ancestry, pink without a score, and carry their generation.
    """
    yield "digraph lineage {"
    yield "  graph [rankdir=TB];"
    yield "  node [style=filled];"
    marked = lineage.marked
    for node in lineage.nodes:
        score = f"{node.val_bpb:.4f}" if node.val_bpb is not None else node.state
        label = _dot_string(f"{node.genome_id} ({score})\n{' '.join(node.description.splitlines())[:50]}")
        fill = "palegreen" if node.genome_id in marked else ("mistyrose" if node.val_bpb is None else "white")
        yield f"  {_dot_string(node.genome_id)} [label={label}, fillcolor={fill}, generation={node.generation}];"
    for parent, child in lineage.edges:
        yield f"  {_dot_string(parent)} -> {_dot_string(child)};"
    yield "}"


def write_graph(lineage: Lineage, fmt: str | None, path: Path) -> None:
    """Write the lineage as Graphviz DOT, GraphML (networkx) or node-link JSON (networkx's format), atomically.

    GraphML and JSON nodes carry generation, operator, description, state, val_bpb, n,
    failure_kind (those without a value left out) and ``on_best_path``; edges go parent ->
    child. DOT: see :func:`dot_lines` (written directly: networkx's pydot route takes
    minutes at 100,000 genomes).

    Args:
        fmt: one of :data:`FORMATS`; ``None``: the one ``path``'s suffix names.

    Raises:
        ValueError: unknown format.
        OSError: the file cannot be written.
    """
    from evo.genome import write_atomic  # libcst comes with evo.genome: only file writers need it

    fmt = format_for(path, fmt)
    if fmt == "dot":
        write_atomic(path, "\n".join(dot_lines(lineage)) + "\n")
        return
    marked = lineage.marked
    nodes = [(node.genome_id, _attributes(node, node.genome_id in marked)) for node in lineage.nodes]
    if fmt == "json":  # networkx's node_link_data(graph, edges="edges"), without building the graph
        data = {"directed": True, "multigraph": False, "graph": {}, "nodes": [{**attrs, "id": n} for n, attrs in nodes],
                "edges": [{"source": parent, "target": child} for parent, child in lineage.edges]}
        write_atomic(path, json.dumps(data, indent=1))
        return
    import networkx as nx  # GraphML only

    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(lineage.edges)
    buffer = io.BytesIO()
    nx.write_graphml(graph, buffer)
    write_atomic(path, buffer.getvalue().decode("utf-8"))
