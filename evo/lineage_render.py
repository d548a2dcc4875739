"""The lineage of a run shown as a terminal tree, or written as Graphviz DOT, GraphML or
node-link JSON (read by :mod:`evo.lineage`).

Every genome gets a line of its own at any depth (the walk is iterative); past
:data:`INDENT_CAP` levels the indentation stops growing and the line states its depth instead.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from rich.color import ColorSystem
from rich.console import Console
from rich.style import Style

from evo.lineage import Lineage, Node
from evo.records import EvalState, state_label

FORMATS = ("dot", "graphml", "json")
SUFFIX_FORMATS = {".dot": "dot", ".gv": "dot", ".graphml": "graphml", ".json": "json"}
INDENT_CAP = 32  # tree levels that indent; deeper lines keep that indentation and state their depth
_COLOR_SYSTEMS = {"standard": ColorSystem.STANDARD, "256": ColorSystem.EIGHT_BIT,
                  "truecolor": ColorSystem.TRUECOLOR, "windows": ColorSystem.STANDARD}


# ---------------------------------------------------------------------------- the terminal tree


def _label(node: Node, marked: bool) -> str:
    if node.val_bpb is not None:
        score = f"{node.val_bpb:.6f}"
    elif node.screen_bpb is not None:
        score = f"SCREENED (screen {node.screen_bpb:.6f})"
    else:
        score = state_label(node.state, node.failure_kind)
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
