"""Where each genome of a lineage page goes: one row per generation, ordered to reduce crossings.

Pure functions of the genome ids, their generations and the (parent, child) edges; the page
(:mod:`evo.viewer`) draws what :func:`layout` returns. The row order follows the barycenter
heuristic of Sugiyama, Tagawa and Toda (1981), "Methods for Visual Understanding of
Hierarchical System Structures".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

NODE_DX, NODE_DY = 46.0, 64.0  # pixels between neighbours in a row (room for an id label), between rows
SWEEPS = 4  # barycenter passes (down, up, down, up)


def _order_rows(rows: dict[int, list[str]], parents: Mapping[str, Sequence[str]],
                children: Mapping[str, Sequence[str]]) -> None:
    """Reorder each row in place to reduce crossings (barycenter heuristic, Sugiyama et al. 1981).

    A node's key is the mean relative position (0..1 within its row) of its neighbours in
    earlier rows (downward sweeps) or later rows (upward sweeps); nodes without such
    neighbours keep their place. Sorting is stable, so ties keep creation order.
    """
    pos: dict[str, float] = {}

    def place(row: list[str]) -> None:
        for i, node in enumerate(row):
            pos[node] = (i + 0.5) / len(row)

    for row in rows.values():
        place(row)
    gen_of = {node: gen for gen, row in rows.items() for node in row}
    gens = sorted(rows)
    for sweep in range(SWEEPS):
        down = sweep % 2 == 0
        for gen in gens[1:] if down else gens[-2::-1]:
            row = rows[gen]
            keys = {}
            for node in row:
                if down:
                    near = [pos[n] for n in parents.get(node, ()) if gen_of.get(n, gen) < gen]
                else:
                    near = [pos[n] for n in children.get(node, ()) if gen_of.get(n, gen) > gen]
                keys[node] = sum(near) / len(near) if near else pos[node]
            row.sort(key=lambda n: keys[n])
            place(row)


def _same_generation_depths(generations: Mapping[str, int], parents: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Node -> rows below the first of its generation: 1 + the deepest parent in its own
    generation, 0 without one. Iterative (a depth-first walk with an explicit stack), so
    chains of any length are fine; in creation order each node takes one step."""
    depth: dict[str, int] = {}
    for start in generations:
        stack, on_stack = [start], {start}
        while stack:
            node = stack[-1]
            same = [p for p in parents.get(node, ()) if generations[p] == generations[node] and p not in on_stack]
            todo = next((p for p in same if p not in depth), None)
            if todo is not None and node not in depth:
                stack.append(todo)
                on_stack.add(todo)
                continue
            if node not in depth:
                depth[node] = 1 + max(depth[p] for p in same) if same else 0
            on_stack.discard(stack.pop())
    return depth


def layout(generations: Mapping[str, int], edges: Iterable[tuple[str, str]],
           dx: float = NODE_DX, dy: float = NODE_DY) -> dict[str, tuple[float, float]]:
    """Positions of the nodes: one row per generation, top to bottom, in order.

    A node whose parent is in its own generation (generation 0: the seed's mutants) goes
    on a row of its own just below that parent's, so that no edge runs along a row.
    Within a row, nodes are ordered to reduce crossings (:func:`_order_rows`).

    Args:
        generations: genome id -> generation, in creation order (the initial row order).
        edges: (parent, child) pairs.
        dx, dy: spacing in pixels.

    Returns:
        genome id -> ``(x, y)`` in pixels; rows are ``dy`` apart, each centred on ``x = 0``.
    """
    parents: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    for parent, child in edges:
        if parent in generations and child in generations:
            parents.setdefault(child, []).append(parent)
            children.setdefault(parent, []).append(child)
    depth = _same_generation_depths(generations, parents)
    keyed: dict[tuple[int, int], list[str]] = {}
    for node, gen in generations.items():
        keyed.setdefault((gen, depth[node]), []).append(node)
    rows = {index: keyed[key] for index, key in enumerate(sorted(keyed))}
    _order_rows(rows, parents, children)
    out = {}
    for index, row in rows.items():
        for i, node in enumerate(row):
            out[node] = ((i - (len(row) - 1) / 2) * dx, index * dy)
    return out
