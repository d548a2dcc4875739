"""``evo lineage --html``: a self-contained, offline HTML page of a run's lineage graph.

The page is one file: the template ``evo/viewer.html`` (its own small SVG renderer, no
library and no network) with the run's data embedded as JSON (the bulky per-genome details gzip-compressed, see
:func:`render_html`). Everything that costs work
is done here in Python: the layout (one row per generation, nodes ordered by the
barycenter heuristic to reduce edge crossings), the colour scale, the best genome's
ancestry and each genome's unified diff against its parent(s). The browser only draws
it, so the page stays responsive at a few thousand genomes.

Per genome the page holds: id, generation, operator, description, state and failure
kind, val_bpb (mean, std, n), the last counted evaluation's metrics and error, the log
tail (last :data:`LOG_TAIL_LINES` lines) and the diffs (a root genome holds its whole
source instead).
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import html
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo.archive import Archive
from evo.config import RunConfig
from evo.genome import write_atomic
from evo.lineage import best_ancestry, build_graph
from evo.noise import declared_best
from evo.records import RunRecord
from evo.results import GenomeResult
from evo.show import parent_delta, source_diff

TEMPLATE = "viewer.html"
DATA_MARK = "__EVO_DATA__"
TITLE_MARK = "__EVO_TITLE__"
DETAILS_MARK = "__EVO_DETAILS__"
# Per-node fields shipped compressed and read only when a genome is clicked.
DETAIL_KEYS = ("metrics", "wall_s", "device", "attempt", "started", "error", "log", "log_path", "diffs", "source")
NODE_DX, NODE_DY = 26.0, 64.0  # pixels between neighbours in a row, and between generation rows
LOG_TAIL_LINES = 40  # log lines kept per genome in the page
SWEEPS = 4  # barycenter passes (down, up, down, up)


# ---------------------------------------------------------------------------- layout

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
    depth: dict[str, int] = {}  # rows below the first of its generation

    def depth_of(node: str, seen: frozenset[str] = frozenset()) -> int:
        if node not in depth:
            same = [p for p in parents.get(node, ()) if generations[p] == generations[node] and p not in seen]
            depth[node] = 1 + max(depth_of(p, seen | {node}) for p in same) if same else 0
        return depth[node]

    keyed: dict[tuple[int, int], list[str]] = {}
    for node, gen in generations.items():
        keyed.setdefault((gen, depth_of(node)), []).append(node)
    rows = {index: keyed[key] for index, key in enumerate(sorted(keyed))}
    _order_rows(rows, parents, children)
    out = {}
    for index, row in rows.items():
        for i, node in enumerate(row):
            out[node] = ((i - (len(row) - 1) / 2) * dx, index * dy)
    return out


# ---------------------------------------------------------------------------- data

@dataclass(frozen=True)
class ColourScale:
    """The val_bpb range the colours span: ``low`` (the best) to ``high``.

    ``clipped`` is true when some completed genomes score worse than ``high`` (the 90th
    percentile is used once there are 10 or more, so that a few disasters do not wash out
    the differences that matter); they get the colour of ``high``.
    """

    low: float
    high: float
    clipped: bool


def colour_scale(scores: Sequence[float]) -> ColourScale | None:
    """The colour range of a run's val_bpb values (``None`` when nothing completed)."""
    if not scores:
        return None
    ordered = sorted(scores)
    high = ordered[int(0.9 * (len(ordered) - 1) + 0.5)] if len(ordered) >= 10 else ordered[-1]
    return ColourScale(ordered[0], high, ordered[-1] > high)


def _finite(metrics: Mapping[str, float]) -> dict[str, float | str]:
    """Metrics with NaN and infinities as strings (JSON has no such numbers)."""
    return {k: v if isinstance(v, (int, float)) and math.isfinite(v) else str(v) for k, v in metrics.items()}


def _tail(text: str | None, n_lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join((text or "").splitlines()[-n_lines:])


def page_data(run: RunRecord, results: Sequence[GenomeResult], edges: Sequence[tuple[str, str]],
              source_of: Callable[[str], str]) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able values.

    Args:
        run: the run.
        results: its genomes with their results (creation order).
        edges: its lineage edges (parent, child).
        source_of: sha256 -> source code (e.g. ``Archive.source``).

    Raises:
        ValueError: an edge names an unknown genome.
    """
    graph = build_graph(results, edges)
    top = declared_best(results, RunConfig.from_json(run.config_json))
    marked = best_ancestry(graph, top)
    positions = layout({r.genome_id: r.genome.generation for r in results}, edges)
    by_id = {r.genome_id: r for r in results}
    sources: dict[str, str] = {}

    def code(r: GenomeResult) -> str:
        sha = r.genome.source_sha256
        if sha not in sources:
            sources[sha] = source_of(sha)
        return sources[sha]

    nodes = []
    for r in results:
        g, last = r.genome, r.last
        x, y = positions[r.genome_id]
        diffs = [
            {"against": p, "text": source_diff(code(by_id[p]), code(r), f"{p}.py", f"{g.genome_id}.py")}
            for p in g.parents if p in by_id
        ]
        nodes.append({
            "id": g.genome_id,
            "gen": g.generation,
            "x": round(x, 1),
            "y": round(y, 1),
            "op": g.operator,
            "desc": g.description,
            "parents": list(g.parents),
            "state": r.state,
            "fail": last.failure_kind if last is not None else None,
            "bpb": r.val_bpb,
            "std": r.val_bpb_std,
            "n": r.n,
            "delta": parent_delta(r, by_id),
            "metrics": _finite(last.metrics) if last is not None else {},
            "wall_s": last.wall_s if last is not None else None,
            "device": last.device if last is not None else None,
            "attempt": last.attempt if last is not None else None,
            "started": f"{last.started_at:%Y-%m-%d %H:%M:%S}" if last is not None else None,
            "error": last.error if last is not None else None,
            "log": _tail(last.log_tail) if last is not None else "",
            "log_path": last.log_path if last is not None else None,
            "diffs": diffs,
            "source": None if diffs else code(r),
        })
    rows: dict[float, list[GenomeResult]] = {}
    for r in results:
        rows.setdefault(positions[r.genome_id][1], []).append(r)
    labels = [
        {"y": y, "x": min(positions[r.genome_id][0] for r in row),
         "text": "seed" if all(r.genome.operator == "seed" for r in row) else f"gen {row[0].genome.generation}"}
        for y, row in sorted(rows.items())
    ]
    scale = colour_scale([r.val_bpb for r in results if r.val_bpb is not None])
    return {
        "run": {
            "name": run.run,
            "profile": run.profile,
            "dataset": run.dataset,
            "time_budget_s": run.time_budget_s,
            "created": f"{run.created_at:%Y-%m-%d %H:%M:%S}",
        },
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "scale": None if scale is None else {"low": scale.low, "high": scale.high, "clipped": scale.clipped},
        "best": top.genome_id if top is not None else None,
        "ancestry": sorted(marked),
        "edges": [list(e) for e in edges],
        "nodes": nodes,
        "rows": labels,
    }


def source_lookup(archive: Archive, run: str) -> Callable[[str], str]:
    """sha256 -> source code for every genome of ``run``, read in one query.

    ``Archive.source`` opens a connection per call (about 25 ms), which would make a
    3000-genome page take over a minute. Unknown hashes fall back to ``Archive.source``.
    """
    codes = archive.sources(run)
    return lambda sha: codes[sha] if sha in codes else archive.source(sha)


# ---------------------------------------------------------------------------- page

def _template() -> str:
    # beside this module (package data); importlib.resources trips over editable installs on 3.11
    return (Path(__file__).parent / TEMPLATE).read_text(encoding="utf-8")


def render_html(data: Mapping[str, Any]) -> str:
    """The page: the template with ``data`` embedded.

    The graph (each node's :data:`DETAIL_KEYS` left out) is plain JSON, so the page draws
    at once and every genome id is in the file as text. The details, most of the bytes
    (log tails, diffs), are one JSON array in node order, gzip-compressed and base64-encoded;
    the page inflates them with the browser's ``DecompressionStream``. A 3000-genome run
    shrinks about sixfold this way.

    ``<`` is written as ``\\u003c`` inside the JSON so that no string in the data (a log
    line with ``</script>``) can end the script element.
    """
    graph = dict(data)
    graph["nodes"] = [{k: v for k, v in node.items() if k not in DETAIL_KEYS} for node in data["nodes"]]
    details = [{k: node[k] for k in DETAIL_KEYS} for node in data["nodes"]]
    payload = json.dumps(graph, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    packed = gzip.compress(json.dumps(details, separators=(",", ":"), allow_nan=False).encode("utf-8"), mtime=0)
    values = {
        TITLE_MARK: html.escape(f"evo lineage: {data['run']['name']}"),
        DATA_MARK: payload,
        DETAILS_MARK: base64.b64encode(packed).decode("ascii"),
    }
    # one pass, so that a mark inside the data (a description) is never replaced
    return re.sub("|".join(values), lambda m: values[m.group(0)], _template())


def write_lineage_html(run: RunRecord, results: Sequence[GenomeResult], edges: Sequence[tuple[str, str]],
                       source_of: Callable[[str], str], path: Path) -> int:
    """Write the page of a run to ``path`` atomically.

    Returns:
        The size of the page in bytes.

    Raises:
        ValueError: an edge names an unknown genome.
        OSError: the file cannot be written.
    """
    text = render_html(page_data(run, results, edges, source_of))
    write_atomic(path, text)
    return len(text.encode("utf-8"))
