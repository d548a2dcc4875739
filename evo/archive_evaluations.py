"""The archive's evaluations: a part of :class:`evo.archive.Archive` (a mixin over its
connections), split out of ``evo/archive.py``.

An evaluation is recorded ``RUNNING`` before its process starts and finished exactly once
(:class:`~evo.archive_db.ArchiveError` if it is finished twice); finished evaluations never
change. Reads come whole (log tails and metrics JSON) or lean (``metrics=``: a few metric
columns, for views).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import duckdb

from evo.archive_db import ArchiveError, utcnow
from evo.records import SUMMARY_KEYS, EvalState, EvaluationRecord, Outcome, TimeSplit

# Metric keys that also get a column of their own, for direct SQL queries: the summary's,
# then where an evaluation's time went (evo status reads them without the metrics JSON).
TIME_COLUMNS = ("startup_seconds", "eval_seconds", "trusted_eval_s", "trusted_eval_wall_s")
METRIC_COLUMNS = (*SUMMARY_KEYS, *TIME_COLUMNS)

_EVAL_COLUMNS = (
    "eval_id, run, genome_id, attempt, state, started_at, finished_at, seed, device, log_path, "
    "wall_s, returncode, failure_kind, error, log_tail, metrics, sandbox, held_out, fidelity"
)
_N_EVAL_COLUMNS = len(_EVAL_COLUMNS.split(","))


class EvaluationTable:
    """The ``evaluations`` methods of :class:`evo.archive.Archive` (which provides ``_tx``)."""

    path: Path
    _tx: Callable[..., AbstractContextManager[duckdb.DuckDBPyConnection]]

    def start_evaluation(
        self, run: str, genome_id: str, seed: int, device: str, log_path: str | Path, sandbox: str | None = None,
        held_out: bool = False, fidelity: float = 1.0,
    ) -> EvaluationRecord:
        """Record a RUNNING evaluation of a genome, before its process starts (``held_out``:
        one that must not take part in the run's decisions, :mod:`evo.held_out`;
        ``fidelity``: the share of the time budget, below 1 for a screen, :mod:`evo.screening`).

        Raises:
            ArchiveError: unknown genome, or the genome already has a RUNNING evaluation.
        """
        with self._tx() as con:
            if not con.execute("SELECT 1 FROM genomes WHERE run = ? AND genome_id = ?", [run, genome_id]).fetchone():
                raise ArchiveError(f"no genome {genome_id!r} in run {run!r}")
            if con.execute(
                "SELECT 1 FROM evaluations WHERE run = ? AND genome_id = ? AND state = 'RUNNING'", [run, genome_id]
            ).fetchone():
                raise ArchiveError(f"genome {genome_id} of run {run} is already being evaluated")
            attempt = con.execute(
                "SELECT COUNT(*) + 1 FROM evaluations WHERE run = ? AND genome_id = ?", [run, genome_id]
            ).fetchone()[0]
            eval_id = con.execute("SELECT nextval('evaluation_ids')").fetchone()[0]
            con.execute(
                "INSERT INTO evaluations (eval_id, run, genome_id, attempt, state, started_at, seed, device, log_path, "
                "sandbox, held_out, fidelity) VALUES (?, ?, ?, ?, 'RUNNING', ?, ?, ?, ?, ?, ?, ?)",
                [eval_id, run, genome_id, attempt, utcnow(), seed, device, str(log_path), sandbox, held_out, fidelity],
            )
            row = con.execute(f"SELECT {_EVAL_COLUMNS} FROM evaluations WHERE eval_id = ?", [eval_id]).fetchone()
        return _evaluation(row)

    def finish_evaluation(self, eval_id: int, outcome: Outcome, device: str | None = None) -> EvaluationRecord:
        """Finish a RUNNING evaluation with the outcome of its process.

        Args:
            device: where it ran, when only known at its end (a Ray node); ``None``: as started.

        Raises:
            ArchiveError: the evaluation is unknown or already finished.
        """
        if not outcome.state.is_finished:
            raise ArchiveError("an evaluation can only be finished into a finished state")
        row = outcome.as_row()
        metric_values = [outcome.metrics.get(k) for k in METRIC_COLUMNS]
        with self._tx() as con:
            current = con.execute("SELECT state FROM evaluations WHERE eval_id = ?", [eval_id]).fetchone()
            if current is None:
                raise ArchiveError(f"no evaluation {eval_id}")
            if current[0] != EvalState.RUNNING.value:
                raise ArchiveError(f"evaluation {eval_id} is already finished ({current[0]}); finished records never change")
            con.execute(
                "UPDATE evaluations SET state = ?, finished_at = ?, wall_s = ?, returncode = ?, failure_kind = ?, "
                "error = ?, log_tail = ?, metrics = ?, "
                + ", ".join(f"{k} = ?" for k in METRIC_COLUMNS)
                + ", device = COALESCE(?, device) WHERE eval_id = ?",
                [row["state"], utcnow(), row["wall_s"], row["returncode"], row["failure_kind"], row["error"],
                 row["log_tail"], json.dumps(outcome.metrics), *metric_values, device, eval_id],
            )
            finished = con.execute(f"SELECT {_EVAL_COLUMNS} FROM evaluations WHERE eval_id = ?", [eval_id]).fetchone()
        return _evaluation(finished)

    def interrupt_running(self, run: str, reason: str, keep: Collection[int] = ()) -> list[EvaluationRecord]:
        """Finish every RUNNING evaluation of a run as INTERRUPTED (they are re-run later),
        except those in ``keep`` (eval ids whose outcome is kept for the archive, evo.pending).

        Call only when no process is evaluating this run (the engine holds the run's lock).
        """
        with self._tx() as con:
            ids = [r[0] for r in con.execute(
                "SELECT eval_id FROM evaluations WHERE run = ? AND state = 'RUNNING' ORDER BY eval_id", [run]
            ).fetchall() if r[0] not in keep]
            for eval_id in ids:
                con.execute(
                    "UPDATE evaluations SET state = 'INTERRUPTED', finished_at = ?, failure_kind = 'interrupted', error = ? "
                    "WHERE eval_id = ? AND state = 'RUNNING'",
                    [utcnow(), reason, eval_id],
                )
        return [self.evaluation(i) for i in ids]

    def evaluation(self, eval_id: int) -> EvaluationRecord:
        """One evaluation.

        Raises:
            ArchiveError: no such evaluation.
        """
        with self._tx(read_only=True) as con:
            row = con.execute(f"SELECT {_EVAL_COLUMNS} FROM evaluations WHERE eval_id = ?", [eval_id]).fetchone()
        if row is None:
            raise ArchiveError(f"no evaluation {eval_id}")
        return _evaluation(row)

    def evaluations(
        self, run: str, log_tails_of_last: int | None = None, *, metrics: Sequence[str] | None = None,
        genome_id: str | None = None, eval_ids: Sequence[int] | None = None,
    ) -> list[EvaluationRecord]:
        """All evaluations of a run (or of one of its genomes), oldest first.

        Args:
            log_tails_of_last: read the (large) log tails of only this many latest
                evaluations; the others come with an empty ``log_tail`` (``None``: all).
            metrics: read only these metrics, from their own columns (names of
                :data:`METRIC_COLUMNS`), and neither the log tails (``log_tail`` is ``None``)
                nor the metrics JSON: what a view that shows a few numbers needs, at a
                fraction of the memory. ``None``: everything.
            genome_id: only this genome's evaluations.
            eval_ids: only these evaluations.

        Raises:
            ValueError: a name in ``metrics`` that has no column.
        """
        params: dict[str, Any] = {"run": run}
        where = "run = $run"
        if genome_id is not None:
            where += " AND genome_id = $genome"
            params["genome"] = genome_id
        if eval_ids is not None:
            where += " AND eval_id IN (SELECT unnest($ids::BIGINT[]))"
            params["ids"] = [int(i) for i in eval_ids]
        if metrics is not None:
            unknown = sorted(set(metrics) - set(METRIC_COLUMNS))
            if unknown:
                raise ValueError(f"no metric column {', '.join(unknown)}; known: {', '.join(METRIC_COLUMNS)}")
            light = _EVAL_COLUMNS.replace("log_tail, metrics", "NULL, NULL")
            names = list(dict.fromkeys(metrics))
            with self._tx(read_only=True) as con:
                rows = con.execute(
                    f"SELECT {', '.join([light, *names])} FROM evaluations WHERE {where} ORDER BY eval_id", params
                ).fetchall()
            return [_evaluation(r[:_N_EVAL_COLUMNS], dict(zip(names, r[_N_EVAL_COLUMNS:], strict=True))) for r in rows]
        columns = _EVAL_COLUMNS
        if log_tails_of_last is not None:
            keep = (
                "CASE WHEN eval_id > (SELECT COALESCE(MAX(eval_id), 0) FROM evaluations WHERE run = $run) - "
                f"{int(log_tails_of_last)} THEN log_tail ELSE '' END"
            )
            columns = ", ".join(keep if c.strip() == "log_tail" else c.strip() for c in _EVAL_COLUMNS.split(","))
        with self._tx(read_only=True) as con:
            rows = con.execute(f"SELECT {columns} FROM evaluations WHERE {where} ORDER BY eval_id", params).fetchall()
        return [_evaluation(r) for r in rows]

    def time_split(self, run: str, latest: int = 1000) -> TimeSplit:
        """Where the wall time of ``run``'s latest ``latest`` COMPLETE evaluations went (medians).

        Training, start-up and evaluation seconds are what the genomes report
        (``training_seconds``, ``startup_seconds``, ``eval_seconds``: the seed prints all
        three; ``None`` where none reported it); ``wall_s`` is the engine's clock on the genome
        process and ``trusted_eval_s`` on the trusted evaluator's process that runs after it
        (its own scoring seconds where that was not recorded). Read from columns of their
        own (:data:`TIME_COLUMNS`), empty for evaluations recorded before evo kept them.
        """
        with self._tx(read_only=True) as con:
            row = con.execute(_SPLIT_SQL, [run, int(latest)]).fetchone()
        return TimeSplit(*row)

    def duty_cycle(self, run: str) -> list[tuple[str, int, float, float, float | None, float | None]]:
        """Per evaluation slot (device) of ``run``: ``(device, evaluations, training seconds,
        wall seconds, median and max idle gap in seconds between one evaluation's finish and
        the next one's start)``, over the evaluations that finished (INTERRUPTED ones left
        out). Wall seconds are those evaluations' own spans plus the idle gaps between them;
        a gap in which the run was stopped (an INTERRUPTED evaluation ended in it: a
        Ctrl-C, ``kill -9``, the engine down until ``evo resume``) is downtime, not idle
        time, and counts in neither. Training seconds are what the genomes report (0 for
        those that report none), capped at each evaluation's wall seconds (a genome cannot
        claim more); the rest is the engine's clock."""
        with self._tx(read_only=True) as con:
            rows = con.execute(_DUTY_SQL, [run, run]).fetchall()
        return [(d, n, float(t or 0.0), float(w or 0.0), gm, gx) for d, n, t, w, gm, gx in rows]


_SPLIT_SQL = """
WITH e AS (
    SELECT wall_s, least(training_seconds, wall_s) AS training_s, startup_seconds, eval_seconds,
           coalesce(trusted_eval_wall_s, trusted_eval_s) AS trusted_s
    FROM evaluations
    WHERE run = ? AND state = 'COMPLETE' AND wall_s IS NOT NULL AND training_seconds IS NOT NULL
    ORDER BY eval_id DESC LIMIT ?
)
SELECT count(*), median(wall_s), median(training_s), median(startup_seconds), median(eval_seconds), median(trusted_s)
FROM e
"""

_DUTY_SQL = """
WITH e AS (
    SELECT device, started_at, finished_at, least(coalesce(training_seconds, 0), coalesce(wall_s, 0)) AS training_s,
           date_diff('millisecond', started_at, finished_at) / 1000.0 AS span_s,
           lag(finished_at) OVER (PARTITION BY device ORDER BY started_at) AS previous_end
    FROM evaluations
    WHERE run = ? AND device IS NOT NULL AND started_at IS NOT NULL AND finished_at IS NOT NULL
        AND state <> 'INTERRUPTED'
),
stops AS (SELECT finished_at FROM evaluations WHERE run = ? AND state = 'INTERRUPTED'),
g AS (
    SELECT e.*, CASE WHEN previous_end IS NULL
                       OR EXISTS (SELECT 1 FROM stops s WHERE s.finished_at BETWEEN e.previous_end AND e.started_at)
                     THEN NULL
                     ELSE date_diff('millisecond', previous_end, started_at) / 1000.0 END AS gap_s
    FROM e
)
SELECT device, count(*), sum(training_s), sum(span_s) + coalesce(sum(gap_s), 0), median(gap_s), max(gap_s)
FROM g GROUP BY device ORDER BY device
"""


def _evaluation(row: Sequence[Any], columns: dict[str, float | None] | None = None) -> EvaluationRecord:
    """An EvaluationRecord from a row of ``_EVAL_COLUMNS``; ``columns``: metrics read from
    their own columns instead of the JSON (NULLs left out)."""
    (eval_id, run, genome_id, attempt, state, started_at, finished_at, seed, device, log_path,
     wall_s, returncode, failure_kind, error, log_tail, metrics, sandbox, held_out, fidelity) = row
    if columns is not None:
        values = {k: v for k, v in columns.items() if v is not None}
    else:
        values = json.loads(metrics) if metrics else {}
    return EvaluationRecord(
        eval_id=eval_id, run=run, genome_id=genome_id, attempt=attempt, state=EvalState(state),
        started_at=started_at, finished_at=finished_at, seed=seed, device=device, log_path=log_path,
        wall_s=wall_s, returncode=returncode, failure_kind=failure_kind, error=error, log_tail=log_tail,
        metrics=values, sandbox=sandbox, held_out=bool(held_out),
        fidelity=1.0 if fidelity is None else float(fidelity),
    )
