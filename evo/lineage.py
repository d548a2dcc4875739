"""The lineage graph (networkx), rebuilt from the archive: who descends from whom.

Nodes are genome ids with their generation, operator, description, state and val_bpb;
edges go parent -> child (a crossover child has two parents).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import networkx as nx
from rich.text import Text
from rich.tree import Tree

from evo.results import GenomeResult

FORMATS = ("dot", "graphml", "json")


def build_graph(results: Sequence[GenomeResult], edges: Iterable[tuple[str, str]]) -> nx.DiGraph:
    """A DiGraph with one node per genome and one edge per (parent, child).

    Raises:
        ValueError: an edge names a genome that is not in ``results``.
    """
    graph = nx.DiGraph()
    for r in results:
        graph.add_node(
            r.genome_id,
            generation=r.genome.generation,
            operator=r.genome.operator,
            description=r.genome.description,
            state=r.state,
            val_bpb=r.val_bpb,
            n=r.n,
            failure_kind=r.last.failure_kind if r.last is not None else None,
        )
    for parent, child in edges:
        if parent not in graph or child not in graph:
            raise ValueError(f"lineage edge {parent} -> {child} names an unknown genome")
        graph.add_edge(parent, child)
    return graph


def best_ancestry(graph: nx.DiGraph, top: GenomeResult | None) -> set[str]:
    """The best genome ``top`` and all its ancestors (empty when ``top`` is ``None``)."""
    if top is None:
        return set()
    return {top.genome_id} | nx.ancestors(graph, top.genome_id)


def render_tree(graph: nx.DiGraph, marked: set[str], title: str) -> Tree:
    """A terminal tree: roots first, children under their first parent; ``★`` marks ``marked``.

    A child with several parents is drawn under the first and named in the others.
    """
    tree = Tree(Text(title, style="bold"))

    def label(node: str) -> Text:
        data = graph.nodes[node]
        star = "★ " if node in marked else "  "
        bpb = f"{data['val_bpb']:.6f}" if data["val_bpb"] is not None else data["state"]
        text = Text(f"{star}{node} g{data['generation']} {bpb}  [{data['operator']}] {data['description']}")
        if node in marked:
            text.stylize("bold green")
        elif data["val_bpb"] is None:
            text.stylize("red" if data["state"] in ("FAIL", "TIMEOUT") else "dim")
        return text

    def add(branch: Tree, node: str) -> None:
        sub = branch.add(label(node))
        for child in sorted(graph.successors(node)):
            first_parent = sorted(graph.predecessors(child))[0]
            if first_parent == node:
                add(sub, child)
            else:
                sub.add(Text(f"  {child} (also a child of {first_parent}; see there)", style="dim"))

    for root in sorted(n for n in graph.nodes if graph.in_degree(n) == 0):
        add(tree, root)
    return tree


def write_graph(graph: nx.DiGraph, fmt: str, path: Path, marked: set[str] = frozenset()) -> None:
    """Write the graph as Graphviz DOT, GraphML or node-link JSON.

    Attributes with value ``None`` are left out (GraphML has no null); ``on_best_path``
    is added to every node.

    Raises:
        ValueError: unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = nx.DiGraph()
    for node, data in graph.nodes(data=True):
        clean = {k: v for k, v in data.items() if v is not None}
        clean["on_best_path"] = node in marked
        out.add_node(node, **clean)
    out.add_edges_from(graph.edges)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "graphml":
        nx.write_graphml(out, path)
    elif fmt == "json":
        path.write_text(json.dumps(nx.node_link_data(out, edges="edges"), indent=1))
    else:
        dot = nx.DiGraph()
        dot.graph["graph"] = {"rankdir": "TB"}
        for node, data in out.nodes(data=True):
            bpb = f"{data['val_bpb']:.4f}" if "val_bpb" in data else data["state"]
            dot.add_node(
                node,
                label=json.dumps(f"{node} ({bpb})\n{data['description'][:50]}"),
                style="filled",
                fillcolor="palegreen" if data["on_best_path"] else ("mistyrose" if "val_bpb" not in data else "white"),
                generation=data["generation"],
            )
        dot.add_edges_from(out.edges)
        nx.nx_pydot.write_dot(dot, path)
