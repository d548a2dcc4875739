"""The archive's LLM calls: a part of :class:`evo.archive.Archive` (a mixin over its
connections), split out of ``evo/archive.py``. Every call of the LLM operator is one row
of ``llm_calls`` (tokens, cost, latency, outcome), whatever its outcome.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

import duckdb

from evo.archive_db import ArchiveError, utcnow
from evo.records import LLMCallRecord


class LLMCallTable:
    """The ``llm_calls`` methods of :class:`evo.archive.Archive` (which provides ``_tx``)."""

    _tx: Callable[..., AbstractContextManager[duckdb.DuckDBPyConnection]]

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
            created = utcnow()
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
            if con.execute("SELECT 1 FROM llm_calls WHERE run = ? LIMIT 1", [run]).fetchone() is None:
                return []  # (the child look-up below costs a join over the run's genomes even then)
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

