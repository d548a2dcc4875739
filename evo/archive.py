"""The DuckDB archive: the single source of truth of every run.

Contract (in the spirit of optuna's ``BaseStorage``):

* Every method opens a connection, does its work in one transaction, and closes it, so
  that another process (``evo status`` while ``evo start`` runs) can open the file
  between two calls. DuckDB lets a single process hold a file open for writing, and then
  nobody else can even read it; a call that meets that lock retries with backoff for up
  to ``lock_timeout_s`` and then raises :class:`ArchiveLockedError`. Within
  :meth:`Archive.reading`, the reads of a read-only archive share one connection instead.
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

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from evo.archive_db import SCHEMA, ArchiveDamagedError, ArchiveError, ArchiveLockedError, Connector, utcnow
from evo.archive_evaluations import METRIC_COLUMNS, EvaluationTable
from evo.archive_llm import LLMCallTable
from evo.config import RESUME_FIELDS, RunConfig
from evo.records import GenomeRecord, RunRecord
from evo.run_index import RunSummary, summary_sql

__all__ = ["METRIC_COLUMNS", "SCHEMA", "Archive", "ArchiveDamagedError", "ArchiveError", "ArchiveLockedError",
           "RunSummary"]

_RUN_COLUMNS = "run, created_at, profile, dataset, time_budget_s, project_dir, config, harness_sha256, evaluator_version"


class Archive(EvaluationTable, LLMCallTable):
    """DuckDB-backed storage of runs, genomes, sources, evaluations and lineage.

    The evaluations' methods live in :mod:`evo.archive_evaluations`, the LLM calls' in
    :mod:`evo.archive_llm`; this class holds the connections, runs, genomes and sources.

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
                [config.run, utcnow(), config.profile, config.dataset, time_budget_s, str(project_dir),
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

    def update_run_config(self, run: str, changes: Mapping[str, Any]) -> RunRecord:
        """Store what ``evo resume`` changes of a run (new limits, a new LLM model, price,
        address or cost cap: :data:`RESUME_FIELDS`), so that every later resume and view uses
        it; the rest of the configuration stays frozen.

        Raises:
            ArchiveError: no such run.
            ValueError: a field ``evo resume`` may not change, or a value
                :class:`~evo.config.RunConfig` refuses (nothing is stored).
        """
        unknown = set(changes) - RESUME_FIELDS
        if unknown:
            raise ValueError(f"a resume cannot change {', '.join(sorted(unknown))}")
        config = dataclasses.replace(RunConfig.from_json(self.get_run(run).config_json), **changes)
        with self._tx() as con:
            con.execute("UPDATE runs SET config = ? WHERE run = ?", [config.to_json(), run])
        return self.get_run(run)

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
            created = utcnow()
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
            con.execute("INSERT INTO noise_floor VALUES (?, ?, ?, ?, ?, ?)", [run, genome_id, sigma, n, k, utcnow()])

    def noise_floor(self, run: str) -> tuple[str, float, int, float] | None:
        """``(genome_id, sigma, n, k)`` of a run's noise floor, or ``None`` before it is measured."""
        with self._tx(read_only=True) as con:
            row = con.execute("SELECT genome_id, sigma, n, k FROM noise_floor WHERE run = ?", [run]).fetchone()
        return tuple(row) if row else None

    # ------------------------------------------------------------------ run summaries

    def run_summaries(self) -> list[RunSummary]:
        """Every run with its counts (:class:`RunSummary`), oldest first, in one query."""
        with self._tx(read_only=True) as con:
            rows = con.execute(summary_sql(_RUN_COLUMNS.split(", "))).fetchall()
        n = len(_RUN_COLUMNS.split(", "))
        return [RunSummary(RunRecord(*row[:n]), *row[n:]) for row in rows]

