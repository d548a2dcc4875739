"""``evo lineage --html``: a self-contained, offline HTML page of a run's lineage graph.

The page is one file: the template ``evo/viewer.html`` (its own small SVG renderer, no
library and no network) with the run's data embedded as JSON (see :func:`render_html`).
The layout is computed in Python (:mod:`evo.lineage_layout`: one row per generation,
nodes ordered by the barycenter heuristic to reduce edge crossings), with the colour scale
and the best genome's ancestry; the browser draws only the genomes in view, so that a run
of 100,000 genomes stays responsive.

Per genome the page holds id, generation, operator, description (what changed), state and
failure kind, val_bpb (mean, std, n) and parents. The details shown on a click (the last
counted evaluation's metrics and error, the log tail and the unified diff against each
parent, or the whole source of a root) are kept for a bounded set only
(:func:`detailed_ids`: every genome of a run of up to :data:`DETAILED_MAX`, else the best
genome's ancestry and the best by val_bpb): diffing every edge would take minutes and
write a page of a hundred megabytes at 100,000 genomes.
"""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import html
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evo.archive import Archive, ArchiveError
from evo.config import RunConfig
from evo.lineage import Lineage, Node, load_lineage
from evo.lineage_layout import layout
from evo.records import EvalState, EvaluationRecord, RunRecord
from evo.show import source_diff

TEMPLATE = "viewer.html"
DATA_MARK = "__EVO_DATA__"
TITLE_MARK = "__EVO_TITLE__"
DETAILS_MARK = "__EVO_DETAILS__"
DETAILED_MAX = 1000  # genomes whose metrics, diffs and log tail the page holds (all of a smaller run)
LOG_TAIL_LINES = 40  # log lines kept per genome in the page


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


def _round(value: float | None, digits: int = 8) -> float | None:
    return None if value is None else round(value, digits)


def _codes(values: Iterable[Any]) -> tuple[list[Any], list[int]]:
    """Categorical values as a table of the distinct ones and an index into it per value."""
    table: dict[Any, int] = {}
    codes = [table.setdefault(v, len(table)) for v in values]
    return list(table), codes


_FULL_COLUMNS = ("eval_id, run, genome_id, attempt, state, started_at, finished_at, seed, device, log_path, wall_s, "
                 "returncode, failure_kind, error, log_tail, metrics, sandbox")


def full_evaluations(archive: Archive, eval_ids: Iterable[int]) -> dict[int, EvaluationRecord]:
    """eval_id -> the complete record (metrics, error, log tail) of each of ``eval_ids``, in one query.

    Uses the archive's own read-only connection: ``Archive.evaluations`` reads a whole run
    or one genome, and a page of 1,000 genomes would otherwise open 1,000 connections.
    """
    wanted = sorted(set(eval_ids))
    if not wanted:
        return {}
    with archive._tx(read_only=True) as con:
        rows = con.execute(
            f"SELECT {_FULL_COLUMNS} FROM evaluations WHERE eval_id IN (SELECT unnest(?::BIGINT[]))", [wanted]
        ).fetchall()
    return {row[0]: EvaluationRecord(*row[:4], EvalState(row[4]), *row[5:15], json.loads(row[15]) if row[15] else {},
                                     row[16]) for row in rows}


def read_sources(archive: Archive, shas: Iterable[str]) -> dict[str, str]:
    """sha256 -> code of each of ``shas``, in one query.

    Raises:
        ArchiveError: one of them is not stored.
    """
    wanted = sorted(set(shas))
    codes = archive.sources_by_sha256(wanted)
    missing = [sha for sha in wanted if sha not in codes]
    if missing:
        raise ArchiveError(f"no source {missing[0][:12]} in the archive ({len(missing)} missing)")
    return codes


def detailed_ids(lineage: Lineage, limit: int | None = None) -> list[str]:
    """The genomes whose details (metrics, diffs, log tail) the page holds.

    All of them when the run has at most ``limit`` (default :data:`DETAILED_MAX`); otherwise
    the best genome and its nearest ancestors (at most half of ``limit``), then the others
    by val_bpb, best first, up to ``limit`` in all. This bounds the page and its build time
    whatever the run's size.
    """
    limit = DETAILED_MAX if limit is None else limit
    if len(lineage.nodes) <= limit:
        return [node.genome_id for node in lineage.nodes]
    chosen = dict.fromkeys(lineage.ancestry[: limit // 2])
    complete = sorted((node for node in lineage.nodes if node.val_bpb is not None), key=lambda n: (n.val_bpb, n.index))
    for node in [*complete, *(node for node in lineage.nodes if node.val_bpb is None)]:
        if len(chosen) >= limit:
            break
        chosen.setdefault(node.genome_id)
    return list(chosen)


def genome_details(node: Node, last: EvaluationRecord | None, sources: Mapping[str, str],
                   by_id: Mapping[str, Node]) -> dict[str, Any]:
    """What the page shows of one genome once it is clicked.

    Args:
        node: the genome.
        last: its last evaluation, complete (metrics, error, log tail).
        sources: sha256 -> code, holding the genome's and its parents' sources.
        by_id: every genome of the run by id.

    Returns:
        Metrics, timings, device, error, log tail (last :data:`LOG_TAIL_LINES` lines) and a
        unified diff against each parent (:func:`evo.show.source_diff`); a genome without
        parents holds its whole source instead.
    """
    diffs = [
        {"against": p, "text": source_diff(sources[by_id[p].source_sha256], sources[node.source_sha256],
                                           f"{p}.py", f"{node.genome_id}.py")}
        for p in node.parents
    ]
    return {
        "metrics": _finite(last.metrics) if last is not None else {},
        "wall_s": last.wall_s if last is not None else None,
        "device": last.device if last is not None else None,
        "attempt": last.attempt if last is not None else None,
        "started": f"{last.started_at:%Y-%m-%d %H:%M:%S}" if last is not None else None,
        "error": last.error if last is not None else None,
        "log": _tail(last.log_tail) if last is not None else "",
        "log_path": last.log_path if last is not None else None,
        "diffs": diffs,
        "source": None if node.parents else sources[node.source_sha256],
    }


def read_details(archive: Archive, lineage: Lineage, genome_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Genome id -> :func:`genome_details` for ``genome_ids``, read in two queries (their last
    evaluations, then their and their parents' sources)."""
    by_id = lineage.by_id
    chosen = [by_id[g] for g in genome_ids]
    evaluations = full_evaluations(archive, (node.last_eval_id for node in chosen if node.last_eval_id is not None))
    shas = {by_id[g].source_sha256 for node in chosen for g in (node.genome_id, *node.parents)}
    sources = read_sources(archive, shas)
    return {node.genome_id: genome_details(node, evaluations.get(node.last_eval_id), sources, by_id)
            for node in chosen}


def page_data(run: RunRecord, lineage: Lineage, details: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-able values.

    The genomes are columns (one list per field, in creation order; operators, states and
    failure kinds as indices into ``tables``; parents as indices into the columns), so that
    100,000 genomes take about 100 bytes each. ``details`` (genome id -> :func:`genome_details`)
    go into ``details`` in the order of ``genomes.detail``'s indices (-1: none kept).
    """
    nodes = lineage.nodes
    positions = layout({node.genome_id: node.generation for node in nodes}, lineage.edges)
    ops, op_codes = _codes(node.operator for node in nodes)
    states, state_codes = _codes(node.state for node in nodes)
    fails, fail_codes = _codes(node.failure_kind for node in nodes)
    index = {node.genome_id: node.index for node in nodes}
    detail_ids = [node.genome_id for node in nodes if node.genome_id in details]
    detail_index = {g: i for i, g in enumerate(detail_ids)}
    genomes = {
        "id": [node.genome_id for node in nodes],
        "gen": [node.generation for node in nodes],
        "x": [round(positions[node.genome_id][0], 1) for node in nodes],
        "y": [round(positions[node.genome_id][1], 1) for node in nodes],
        "op": op_codes,
        "desc": [node.description for node in nodes],
        "parents": [[index[p] for p in node.parents] for node in nodes],
        "state": state_codes,
        "fail": fail_codes,
        "bpb": [_round(node.val_bpb) for node in nodes],
        "std": [_round(node.val_bpb_std) for node in nodes],
        "n": [node.n for node in nodes],
        "detail": [detail_index.get(node.genome_id, -1) for node in nodes],
    }
    rows: dict[float, list[Node]] = {}
    for node in nodes:
        rows.setdefault(positions[node.genome_id][1], []).append(node)
    labels = [
        {"y": y, "x": min(positions[node.genome_id][0] for node in row),
         "text": "seed" if all(node.operator == "seed" for node in row) else f"gen {row[0].generation}"}
        for y, row in sorted(rows.items())
    ]
    scale = colour_scale([node.val_bpb for node in nodes if node.val_bpb is not None])
    return {
        "run": {
            "name": run.run,
            "profile": run.profile,
            "dataset": run.dataset,
            "time_budget_s": run.time_budget_s,
            "created": f"{run.created_at:%Y-%m-%d %H:%M:%S}",
            "fitness": RunConfig.from_json(run.config_json).fitness,
        },
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "scale": None if scale is None else {"low": scale.low, "high": scale.high, "clipped": scale.clipped},
        "best": lineage.best.genome_id if lineage.best is not None else None,
        "ancestry": list(lineage.ancestry),
        "tables": {"op": ops, "state": states, "fail": fails},
        "genomes": genomes,
        "rows": labels,
        "details": [details[g] for g in detail_ids],
    }


# ---------------------------------------------------------------------------- page

def _template() -> str:
    # beside this module (package data); importlib.resources trips over editable installs on 3.11
    return (Path(__file__).parent / TEMPLATE).read_text(encoding="utf-8")


def render_html(data: Mapping[str, Any]) -> str:
    """The page: the template with ``data`` embedded.

    The graph (everything but ``details``) is plain JSON, so the page draws at once and
    every genome id is in the file as text. The details, most of the bytes (log tails,
    diffs), are one JSON array, gzip-compressed and base64-encoded; the page inflates them
    with the browser's ``DecompressionStream``.

    ``<`` is written as ``\\u003c`` inside the JSON so that no string in the data (a log
    line with ``</script>``) can end the script element.
    """
    graph = {k: v for k, v in data.items() if k != "details"}
    payload = json.dumps(graph, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
    packed = gzip.compress(json.dumps(data["details"], separators=(",", ":"), allow_nan=False).encode("utf-8"),
                           compresslevel=6, mtime=0)
    values = {
        TITLE_MARK: html.escape(f"evo lineage: {data['run']['name']}"),
        DATA_MARK: payload,
        DETAILS_MARK: base64.b64encode(packed).decode("ascii"),
    }
    # one pass, so that a mark inside the data (a description) is never replaced
    return re.sub("|".join(values), lambda m: values[m.group(0)], _template())


@dataclass(frozen=True)
class Page:
    """What :func:`write_lineage_html` wrote: ``size_bytes``, ``genomes``, and ``detailed``
    (the genomes whose metrics, diffs and log tail the page holds)."""

    size_bytes: int
    genomes: int
    detailed: int


def write_lineage_html(archive: Archive, run: RunRecord, path: Path, lineage: Lineage | None = None,
                       detailed_max: int | None = None) -> Page:
    """Write the page of ``run`` to ``path`` atomically.

    Reads only what it shows: the lineage lean (:func:`evo.lineage.load_nodes`, unless
    given), then the last evaluation and the sources of at most ``detailed_max`` genomes
    (default :data:`DETAILED_MAX`; :func:`detailed_ids`) and of their parents. At 100,000 genomes this takes seconds and
    writes about 100 bytes per genome plus the details.

    Raises:
        ValueError: a lineage edge names an unknown genome.
        ArchiveError: the archive cannot be read.
        OSError: the file cannot be written.
    """
    from evo.genome import write_atomic  # libcst comes with evo.genome: only the writer needs it

    lineage = lineage if lineage is not None else load_lineage(archive, run)
    details = read_details(archive, lineage, detailed_ids(lineage, detailed_max))
    text = render_html(page_data(run, lineage, details))
    write_atomic(path, text)
    return Page(len(text.encode("utf-8")), len(lineage.nodes), len(details))
