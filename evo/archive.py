"""The DuckDB archive: the single source of truth of every run.

Contract (in the spirit of optuna's ``BaseStorage``):

* Every method opens a connection, does its work in one transaction, and closes it, so
  that another process (``evo status`` while ``evo start`` runs) can open the file
  between two calls. DuckDB lets a single process hold a file open for writing, and then
  nobody else can even read it; a call that meets that lock retries with backoff for up
  to ``lock_timeout_s`` and then raises :class:`ArchiveLockedError`.
* An archive opened with ``read_only=True`` (every command that only reads) opens the
  file with DuckDB's ``read_only``: it works on a read-only file system, and a write
  method raises :class:`ArchiveError`. See :mod:`evo.archive_db` for the one exception
  (upgrading an older archive's tables) and for damaged files
  (:class:`ArchiveDamagedError`, nothing written).
* Methods are thread-safe within a process (one lock serialises them).
* A genome and its source and lineage edges are written in one transaction. An
  evaluation is written ``RUNNING`` before its process starts and finished exactly once;
  finished evaluations never change (:class:`ArchiveError` if one is finished twice).
* Durability is DuckDB's: a write-ahead log, replayed after a crash or ``kill -9``.

Tables: ``runs``, ``sources`` (code by sha256), ``genomes``, ``lineage`` (parent ->
child edges), ``evaluations``, ``llm_calls`` (every call of the LLM operator: tokens,
cost, outcome). Query them directly with ``duckdb archive/evo.duckdb``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from evo.archive_db import SCHEMA, ArchiveDamagedError, ArchiveError, ArchiveLockedError, Connector
from evo.config import RunConfig
from evo.records import (
    SUMMARY_KEYS,
    EvalState,
    EvaluationRecord,
    GenomeRecord,
    LLMCallRecord,
    Outcome,
    RunRecord,
)
from evo.run_index import RunSummary, summary_sql

__all__ = ["METRIC_COLUMNS", "SCHEMA", "Archive", "ArchiveDamagedError", "ArchiveError", "ArchiveLockedError",
           "RunSummary"]

# Metric keys that also get a column of their own, for direct SQL queries.
METRIC_COLUMNS = SUMMARY_KEYS

_EVAL_COLUMNS = (
    "eval_id, run, genome_id, attempt, state, started_at, finished_at, seed, device, log_path, "
    "wall_s, returncode, failure_kind, error, log_tail, metrics, sandbox"
)
_RUN_COLUMNS = "run, created_at, profile, dataset, time_budget_s, project_dir, config, harness_sha256, evaluator_version"


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Archive:
    """DuckDB-backed storage of runs, genomes, sources, evaluations and lineage.

    Args:
        path: the DuckDB file; its folder is created if missing (unless ``read_only``).
        lock_timeout_s: how long a call waits for another process's lock, seconds.
        read_only: open the file read-only, for commands that only read it.

    Raises:
        ArchiveError: ``read_only`` and there is no file; a write method of a read-only archive.
        ArchiveDamagedError: DuckDB cannot read the file (nothing is written to it).
        ArchiveLockedError: from any method, when the file stayed locked too long.
    """

    def __init__(self, path: str | Path, lock_timeout_s: float = 60.0, read_only: bool = False) -> None:
        self.path = Path(path)
        self.lock_timeout_s = lock_timeout_s
        self.read_only = read_only
        self._db = Connector(self.path, lock_timeout_s, read_only)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db.create_schema()

    # ------------------------------------------------------------------ connections

    @contextmanager
    def _tx(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived connection; writes run in one transaction, committed on exit."""
        with self._db.tx(read_only) as con:
            yield con

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Within the block, every read of a read-only archive uses one connection: one open
        instead of one per method call, and one consistent view of the file (for a command
        that reads several things, such as ``evo status``). Another process's writes wait
        until the block ends, so keep it short.

        Raises:
            ArchiveError: the archive is not read-only.
        """
        with self._db.reading():
            yield

    # ------------------------------------------------------------------ runs

    def create_run(
        self, config: RunConfig, time_budget_s: float, project_dir: str | Path,
        harness_sha256: str | None = None, evaluator_version: str | None = None,
    ) -> RunRecord:
        """Record a new run, with the sha256 of the harness it pins and the evaluator's version.

        Raises:
            ArchiveError: a run of that name exists already (use ``evo resume``).
        """
        with self._tx() as con:
            if con.execute("SELECT 1 FROM runs WHERE run = ?", [config.run]).fetchone():
                raise ArchiveError(f"run {config.run!r} already exists in {self.path}; use `evo resume --run {config.run}`")
            con.execute(
                f"INSERT INTO runs ({_RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [config.run, _utcnow(), config.profile, config.dataset, time_budget_s, str(project_dir),
                 config.to_json(), harness_sha256, evaluator_version],
            )
        return self.get_run(config.run)

    def pin_harness(self, run: str, harness_sha256: str, evaluator_version: str) -> None:
        """Pin the harness of a run recorded before pinning existed (no-op when already pinned)."""
        with self._tx() as con:
            con.execute(
                "UPDATE runs SET harness_sha256 = ?, evaluator_version = ? WHERE run = ? AND harness_sha256 IS NULL",
                [harness_sha256, evaluator_version, run],
            )

    def get_run(self, run: str) -> RunRecord:
        """The run called ``run``.

        Raises:
            ArchiveError: no such run.
        """
        with self._tx(read_only=True) as con:
            row = con.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run = ?", [run]).fetchone()
        if row is None:
            raise ArchiveError(f"no run {run!r} in {self.path}")
        return RunRecord(*row)

    def list_runs(self) -> list[RunRecord]:
        """All runs, oldest first."""
        with self._tx(read_only=True) as con:
            rows = con.execute(f"SELECT {_RUN_COLUMNS} FROM runs ORDER BY created_at").fetchall()
        return [RunRecord(*r) for r in rows]

    def latest_run(self) -> RunRecord:
        """The most recently created run.

        Raises:
            ArchiveError: the archive holds no run.
        """
        runs = self.list_runs()
        if not runs:
            raise ArchiveError(f"no runs in {self.path}; start one with `evo start`")
        return runs[-1]

    # ------------------------------------------------------------------ genomes

    def add_genome(
        self,
        run: str,
        generation: int,
        operator: str,
        description: str,
        code: str,
        parents: Sequence[str] = (),
    ) -> GenomeRecord:
        """Record a genome, its source and its lineage edges in one transaction.

        Returns:
            The new record, with the next ``g0000``-style id of the run.

        Raises:
            ArchiveError: unknown run or parent.
        """
        from evo.genome import normalized_sha256, source_sha256  # libcst: only writers need it

        sha = source_sha256(code)
        norm = normalized_sha256(code)
        with self._tx() as con:
            if not con.execute("SELECT 1 FROM runs WHERE run = ?", [run]).fetchone():
                raise ArchiveError(f"no run {run!r}")
            for parent in parents:
                if not con.execute("SELECT 1 FROM genomes WHERE run = ? AND genome_id = ?", [run, parent]).fetchone():
                    raise ArchiveError(f"parent {parent!r} is not a genome of run {run!r}")
            seq = con.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM genomes WHERE run = ?", [run]).fetchone()[0]
            genome_id = f"g{seq:04d}"
            con.execute("INSERT INTO sources SELECT ?, ? WHERE NOT EXISTS (SELECT 1 FROM sources WHERE sha256 = ?)", [sha, code, sha])
            created = _utcnow()
            con.execute(
                "INSERT INTO genomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run, genome_id, seq, generation, operator, description, sha, norm, created],
            )
            for index, parent in enumerate(dict.fromkeys(parents)):
                con.execute(
                    "INSERT INTO lineage (run, parent_id, child_id, parent_index) VALUES (?, ?, ?, ?)",
                    [run, parent, genome_id, index],
                )
        return GenomeRecord(run, genome_id, generation, operator, description, sha, norm, created, tuple(parents))

    def genomes(self, run: str) -> list[GenomeRecord]:
        """All genomes of a run in creation order, each with its parents."""
        with self._tx(read_only=True) as con:
            rows = con.execute(
                "SELECT run, genome_id, generation, operator, description, source_sha256, normalized_sha256, created_at "
                "FROM genomes WHERE run = ? ORDER BY seq",
                [run],
            ).fetchall()
            edges = con.execute(
                "SELECT parent_id, child_id FROM lineage WHERE run = ? ORDER BY child_id, parent_index", [run]
            ).fetchall()
        parents: dict[str, list[str]] = {}
        for parent, child in edges:
            parents.setdefault(child, []).append(parent)
        return [GenomeRecord(*r, parents=tuple(parents.get(r[1], ()))) for r in rows]

    def genome(self, run: str, genome_id: str) -> GenomeRecord:
        """One genome.

        Raises:
            ArchiveError: no such genome in the run.
        """
        with self._tx(read_only=True) as con:
            row = con.execute(
                "SELECT run, genome_id, generation, operator, description, source_sha256, normalized_sha256, created_at "
                "FROM genomes WHERE run = ? AND genome_id = ?",
                [run, genome_id],
            ).fetchone()
            parents = [r[0] for r in con.execute(
                "SELECT parent_id FROM lineage WHERE run = ? AND child_id = ? ORDER BY parent_index", [run, genome_id]
            ).fetchall()]
        if row is None:
            raise ArchiveError(f"no genome {genome_id!r} in run {run!r}")
        return GenomeRecord(*row, parents=tuple(parents))

    def source(self, sha256: str) -> str:
        """The code stored under ``sha256``.

        Raises:
            ArchiveError: no such source.
        """
        with self._tx(read_only=True) as con:
            row = con.execute("SELECT code FROM sources WHERE sha256 = ?", [sha256]).fetchone()
        if row is None:
            raise ArchiveError(f"no source {sha256[:12]}")
        return row[0]

    def sources_by_sha256(self, shas: Sequence[str]) -> dict[str, str]:
        """sha256 -> code of each of ``shas`` that is stored, read in one query."""
        if not shas:
            return {}
        with self._tx(read_only=True) as con:
            rows = con.execute("SELECT sha256, code FROM sources WHERE list_contains(?, sha256)", [list(shas)]).fetchall()
        return dict(rows)

    def edges(self, run: str) -> list[tuple[str, str]]:
        """Lineage edges ``(parent_id, child_id)`` of a run."""
        with self._tx(read_only=True) as con:
            return [tuple(r) for r in con.execute(
                "SELECT parent_id, child_id FROM lineage WHERE run = ? ORDER BY child_id, parent_id", [run]
            ).fetchall()]

    # ------------------------------------------------------------------ noise floor

    def record_noise_floor(self, run: str, genome_id: str, sigma: float, n: int, k: float) -> None:
        """Record a run's noise floor: sigma (bits/byte) of ``n`` seeds of ``genome_id``.

        Raises:
            ArchiveError: the run already has one (it is measured once).
        """
        with self._tx() as con:
            if con.execute("SELECT 1 FROM noise_floor WHERE run = ?", [run]).fetchone():
                raise ArchiveError(f"run {run!r} already has a noise floor")
            con.execute("INSERT INTO noise_floor VALUES (?, ?, ?, ?, ?, ?)", [run, genome_id, sigma, n, k, _utcnow()])

    def noise_floor(self, run: str) -> tuple[str, float, int, float] | None:
        """``(genome_id, sigma, n, k)`` of a run's noise floor, or ``None`` before it is measured."""
        with self._tx(read_only=True) as con:
            row = con.execute("SELECT genome_id, sigma, n, k FROM noise_floor WHERE run = ?", [run]).fetchone()
        return tuple(row) if row else None

    # ------------------------------------------------------------------ evaluations

    def start_evaluation(
        self, run: str, genome_id: str, seed: int, device: str, log_path: str | Path, sandbox: str | None = None
    ) -> EvaluationRecord:
        """Record a RUNNING evaluation of a genome, before its process starts.

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
                "sandbox) VALUES (?, ?, ?, ?, 'RUNNING', ?, ?, ?, ?, ?)",
                [eval_id, run, genome_id, attempt, _utcnow(), seed, device, str(log_path), sandbox],
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
                [row["state"], _utcnow(), row["wall_s"], row["returncode"], row["failure_kind"], row["error"],
                 row["log_tail"], json.dumps(outcome.metrics), *metric_values, device, eval_id],
            )
            finished = con.execute(f"SELECT {_EVAL_COLUMNS} FROM evaluations WHERE eval_id = ?", [eval_id]).fetchone()
        return _evaluation(finished)

    def interrupt_running(self, run: str, reason: str) -> list[EvaluationRecord]:
        """Finish every RUNNING evaluation of a run as INTERRUPTED (they are re-run later).

        Call only when no process is evaluating this run (the engine holds the run's lock).
        """
        with self._tx() as con:
            ids = [r[0] for r in con.execute(
                "SELECT eval_id FROM evaluations WHERE run = ? AND state = 'RUNNING' ORDER BY eval_id", [run]
            ).fetchall()]
            for eval_id in ids:
                con.execute(
                    "UPDATE evaluations SET state = 'INTERRUPTED', finished_at = ?, failure_kind = 'interrupted', error = ? "
                    "WHERE eval_id = ? AND state = 'RUNNING'",
                    [_utcnow(), reason, eval_id],
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
            return [_evaluation(r[:17], dict(zip(names, r[17:], strict=True))) for r in rows]
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

    def overhead_s(self, run: str) -> tuple[float | None, int]:
        """Mean wall seconds not spent training (start-up, compilation, evaluation, engine)
        over the run's counted evaluations that report their training time, and their number."""
        with self._tx(read_only=True) as con:
            mean, n = con.execute(
                "SELECT avg(wall_s - training_seconds), count(*) FROM evaluations WHERE run = ? "
                "AND state IN ('COMPLETE', 'FAIL', 'TIMEOUT') AND wall_s IS NOT NULL AND training_seconds IS NOT NULL",
                [run],
            ).fetchone()
        return mean, n

    def run_summaries(self) -> list[RunSummary]:
        """Every run with its counts (:class:`RunSummary`), oldest first, in one query."""
        with self._tx(read_only=True) as con:
            rows = con.execute(summary_sql(_RUN_COLUMNS.split(", "))).fetchall()
        n = len(_RUN_COLUMNS.split(", "))
        return [RunSummary(RunRecord(*row[:n]), *row[n:]) for row in rows]

    # ------------------------------------------------------------------ LLM calls

    def record_llm_call(
        self,
        run: str,
        parent_id: str,
        model: str,
        *,
        round: int,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
        latency_s: float,
        outcome: str,
        error: str | None = None,
        child_sha256: str | None = None,
    ) -> LLMCallRecord:
        """Record one call of the LLM mutation operator, whatever its outcome.

        Raises:
            ArchiveError: unknown run.
        """
        with self._tx() as con:
            if not con.execute("SELECT 1 FROM runs WHERE run = ?", [run]).fetchone():
                raise ArchiveError(f"no run {run!r}")
            call_id = con.execute("SELECT nextval('llm_call_ids')").fetchone()[0]
            created = _utcnow()
            con.execute(
                "INSERT INTO llm_calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [call_id, run, parent_id, model, round, input_tokens, output_tokens, cost_usd, latency_s,
                 outcome, error, child_sha256, created],
            )
        return LLMCallRecord(call_id, run, parent_id, model, round, input_tokens, output_tokens, cost_usd,
                             latency_s, outcome, error, child_sha256, created)

    def llm_calls(self, run: str) -> list[LLMCallRecord]:
        """Every LLM call of a run, oldest first, each with the child genome it led to (if recorded)."""
        with self._tx(read_only=True) as con:
            rows = con.execute(
                "SELECT c.call_id, c.run, c.parent_id, c.model, c.round, c.input_tokens, c.output_tokens, c.cost_usd, "
                "c.latency_s, c.outcome, c.error, c.child_sha256, c.created_at, "
                "(SELECT MIN(g.genome_id) FROM genomes g JOIN lineage l ON l.run = g.run AND l.child_id = g.genome_id "
                " WHERE g.run = c.run AND g.source_sha256 = c.child_sha256 AND l.parent_id = c.parent_id) "
                "FROM llm_calls c WHERE c.run = ? ORDER BY c.call_id",
                [run],
            ).fetchall()
        return [LLMCallRecord(*row) for row in rows]

    def llm_spend_usd(self, run: str) -> float:
        """USD spent on LLM calls by a run."""
        with self._tx(read_only=True) as con:
            return float(con.execute("SELECT COALESCE(SUM(cost_usd), 0) FROM llm_calls WHERE run = ?", [run]).fetchone()[0])


def _evaluation(row: Sequence[Any], columns: dict[str, float | None] | None = None) -> EvaluationRecord:
    """An EvaluationRecord from a row of ``_EVAL_COLUMNS``; ``columns``: metrics read from
    their own columns instead of the JSON (NULLs left out)."""
    (eval_id, run, genome_id, attempt, state, started_at, finished_at, seed, device, log_path,
     wall_s, returncode, failure_kind, error, log_tail, metrics, sandbox) = row
    if columns is not None:
        values = {k: v for k, v in columns.items() if v is not None}
    else:
        values = json.loads(metrics) if metrics else {}
    return EvaluationRecord(
        eval_id=eval_id, run=run, genome_id=genome_id, attempt=attempt, state=EvalState(state),
        started_at=started_at, finished_at=finished_at, seed=seed, device=device, log_path=log_path,
        wall_s=wall_s, returncode=returncode, failure_kind=failure_kind, error=error, log_tail=log_tail,
        metrics=values, sandbox=sandbox,
    )

