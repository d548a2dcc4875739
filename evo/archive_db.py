"""The archive's DuckDB file: schema, short connections, read-only opening, damage detection.

:class:`Connector` is the only place that calls ``duckdb.connect``. It opens a connection
per transaction and closes it at once (DuckDB lets one process hold a file for writing
and then nobody else can read it), retrying while another process holds the file. A
command that reads several things at once (``evo status``) can serve them all from one
read-only connection (:meth:`Connector.reading`): one open instead of one per read, and
one consistent view.

Read-only connectors (``evo status``, ``lineage``, ``export``, ``plot``, ``show``,
``runs``) open the file with DuckDB's ``read_only=True``: they work on a read-only file
or file system and never write. The one exception is an archive written by an older evo
whose tables lack columns the current schema adds: if the file is writable it is upgraded
once (``CREATE ... IF NOT EXISTS`` / ``ADD COLUMN IF NOT EXISTS``, one short transaction),
otherwise the read fails with a clear error.

A file DuckDB cannot open (truncated, garbage header, written by a newer DuckDB) raises
:class:`ArchiveDamagedError` naming the file and what to do; before a read-write
connection is opened on an existing file, it is opened read-only first, so a damaged file
is never written to.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import duckdb
from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run VARCHAR PRIMARY KEY,
    created_at TIMESTAMP NOT NULL,
    profile VARCHAR NOT NULL,
    dataset VARCHAR NOT NULL,
    time_budget_s DOUBLE NOT NULL,
    project_dir VARCHAR NOT NULL,
    config JSON NOT NULL
);
CREATE TABLE IF NOT EXISTS sources (
    sha256 VARCHAR PRIMARY KEY,
    code VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS genomes (
    run VARCHAR NOT NULL,
    genome_id VARCHAR NOT NULL,
    seq INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    operator VARCHAR NOT NULL,
    description VARCHAR NOT NULL,
    source_sha256 VARCHAR NOT NULL,
    normalized_sha256 VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (run, genome_id)
);
CREATE TABLE IF NOT EXISTS lineage (
    run VARCHAR NOT NULL,
    parent_id VARCHAR NOT NULL,
    child_id VARCHAR NOT NULL,
    PRIMARY KEY (run, parent_id, child_id)
);
-- the parents' order matters (a crossover child is built on its first parent's code)
ALTER TABLE lineage ADD COLUMN IF NOT EXISTS parent_index INTEGER DEFAULT 0;
CREATE TABLE IF NOT EXISTS noise_floor (
    run VARCHAR PRIMARY KEY,
    genome_id VARCHAR NOT NULL,
    sigma DOUBLE NOT NULL,
    n INTEGER NOT NULL,
    k DOUBLE NOT NULL,
    recorded_at TIMESTAMP NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS evaluation_ids START 1;
CREATE TABLE IF NOT EXISTS evaluations (
    eval_id BIGINT NOT NULL,
    run VARCHAR NOT NULL,
    genome_id VARCHAR NOT NULL,
    attempt INTEGER NOT NULL,
    state VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    seed INTEGER NOT NULL,
    device VARCHAR NOT NULL,
    log_path VARCHAR NOT NULL,
    wall_s DOUBLE,
    returncode INTEGER,
    failure_kind VARCHAR,
    error VARCHAR,
    log_tail VARCHAR,
    val_bpb DOUBLE,
    training_seconds DOUBLE,
    total_seconds DOUBLE,
    peak_vram_mb DOUBLE,
    mfu_percent DOUBLE,
    total_tokens_M DOUBLE,
    num_steps DOUBLE,
    num_params_M DOUBLE,
    depth DOUBLE,
    metrics JSON
);
-- the trust boundary (added with trusted fitness; older archives get the columns empty)
ALTER TABLE runs ADD COLUMN IF NOT EXISTS harness_sha256 VARCHAR;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS evaluator_version VARCHAR;
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS reported_val_bpb DOUBLE;
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS sandbox VARCHAR;
-- where an evaluation's time went (added with evo status's time split; empty before)
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS startup_seconds DOUBLE;
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS eval_seconds DOUBLE;
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS trusted_eval_s DOUBLE;
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS trusted_eval_wall_s DOUBLE;
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS held_out BOOLEAN DEFAULT false;
-- the share of the time budget (added with screening, evo.screening; 1.0 before)
ALTER TABLE evaluations ADD COLUMN IF NOT EXISTS fidelity DOUBLE DEFAULT 1.0;
CREATE SEQUENCE IF NOT EXISTS llm_call_ids START 1;
CREATE TABLE IF NOT EXISTS llm_calls (
    call_id BIGINT NOT NULL,
    run VARCHAR NOT NULL,
    parent_id VARCHAR NOT NULL,
    model VARCHAR NOT NULL,
    round INTEGER NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_usd DOUBLE NOT NULL,
    latency_s DOUBLE NOT NULL,
    outcome VARCHAR NOT NULL,
    error VARCHAR,
    child_sha256 VARCHAR,
    created_at TIMESTAMP NOT NULL
);
"""

_COLUMNS_SQL = (
    "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main' "
    "AND table_catalog = current_database()"
)
_current_columns: frozenset[tuple[str, str]] | None = None


class ArchiveError(Exception):
    """A request the archive refuses: unknown run or genome, finishing twice, a name taken."""


class ArchiveLockedError(ArchiveError):
    """Another process held the archive file for longer than the lock timeout."""


class ArchiveDamagedError(ArchiveError):
    """DuckDB cannot read the archive file (truncated, overwritten, or from a newer DuckDB)."""


def utcnow() -> datetime:
    """Now in UTC, naive (the archive's TIMESTAMP columns hold UTC)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


def _schema_columns() -> frozenset[tuple[str, str]]:
    """(table, column) pairs of the current schema, read from an in-memory database."""
    global _current_columns
    if _current_columns is None:
        with duckdb.connect(":memory:") as con:
            con.execute(SCHEMA)
            _current_columns = frozenset(tuple(row) for row in con.execute(_COLUMNS_SQL).fetchall())
    return _current_columns


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Connector:
    """Short-lived DuckDB connections to one archive file.

    Args:
        path: the DuckDB file.
        lock_timeout_s: how long a connection waits for another process's lock, seconds.
        read_only: open every connection with ``read_only=True`` (the file must exist).

    Raises:
        ArchiveError: from :meth:`tx`: no file (read-only), or a write on a read-only connector.
        ArchiveLockedError: the file stayed locked longer than ``lock_timeout_s``.
        ArchiveDamagedError: DuckDB cannot read the file.
    """

    def __init__(self, path: Path, lock_timeout_s: float, read_only: bool) -> None:
        self.path = path
        self.lock_timeout_s = lock_timeout_s
        self.read_only = read_only
        self._lock = threading.RLock()
        self._checked = False  # the file was opened once: readable, and its schema current
        self._shared: duckdb.DuckDBPyConnection | None = None  # the connection of reading(), while it lasts

    def create_schema(self) -> None:
        """Create or upgrade the tables (read-write connectors only)."""
        with self.tx() as con:
            con.execute(SCHEMA)

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Serve every read-only :meth:`tx` of this thread from one connection until the block
        ends (other threads wait for it). For read-only connectors only: a writer must not
        hold the file between its transactions.

        Raises:
            ArchiveError: a read-write connector.
        """
        if not self.read_only:
            raise ArchiveError("reading() serves read-only archives (a writer's connections stay short)")
        with self._lock:
            if self._shared is not None:  # nested: the outer block's connection serves
                yield
                return
            self._shared = self._open(True)
            try:
                yield
            finally:
                con, self._shared = self._shared, None
                con.close()

    @contextmanager
    def tx(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one unit of work; a write runs in one transaction, committed on exit."""
        if self.read_only and not read_only:
            raise ArchiveError(f"archive {self.path} is open read-only; this command does not write it")
        with self._lock:
            if self._shared is not None:
                try:
                    yield self._shared
                except BaseException as exc:
                    if self._unreadable(exc):
                        raise self._damaged(exc) from exc
                    raise
                return
            con = self._open(read_only or self.read_only)
            try:
                if not read_only:
                    con.execute("BEGIN TRANSACTION")
                try:
                    yield con
                except BaseException as exc:
                    if not read_only:
                        con.execute("ROLLBACK")
                    elif self._unreadable(exc):  # a read that hit a damaged part of the file
                        raise self._damaged(exc) from exc
                    raise  # a write's error stays DuckDB's (the engine keeps the outcome and stops)
                if not read_only:
                    con.execute("COMMIT")
            finally:
                con.close()

    def _open(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        if not self._checked:
            self._check()
        return self._connect(read_only)

    def _check(self) -> None:
        """Open the file read-only once: it must be readable and, for a reader, current."""
        if not self.path.exists():
            if self.read_only:
                raise ArchiveError(f"no archive at {self.path}; start a run with `evo start`")
            self._checked = True  # a new archive: the writer creates it
            return
        con = self._connect(True)  # waits while another process holds the file (creating it, say)
        try:
            if self.path.stat().st_size == 0:
                raise self._damaged(None, "the file is empty")
            missing = _schema_columns() - {tuple(r) for r in con.execute(_COLUMNS_SQL).fetchall()}
        except duckdb.Error as exc:
            raise self._damaged(exc) from exc
        finally:
            con.close()
        if missing and self.read_only:
            if ("runs", "run") in missing:
                raise ArchiveError(f"{self.path} is a DuckDB file but not an evo archive (it has no runs table)")
            if not os.access(self.path, os.W_OK) or not os.access(self.path.parent, os.W_OK):
                names = sorted(f"{t}.{c}" for t, c in missing)
                lacks = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
                raise ArchiveError(
                    f"archive {self.path} was written by an older evo and lacks {lacks}; it is read-only here, "
                    "so it cannot be upgraded: copy it somewhere writable and run this command on the copy"
                )
            con = self._connect(False)  # the one write of a reader: the schema upgrade
            try:
                con.execute(SCHEMA)
            finally:
                con.close()
        self._checked = True

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        @retry(
            retry=retry_if_exception(_is_lock_error),
            wait=wait_random_exponential(multiplier=0.05, max=1.0),
            stop=stop_after_delay(self.lock_timeout_s),
            reraise=True,
        )
        def connect() -> duckdb.DuckDBPyConnection:
            return duckdb.connect(str(self.path), read_only=read_only)

        try:
            return connect()
        except duckdb.IOException as exc:
            if _is_lock_error(exc):
                raise ArchiveLockedError(
                    f"archive {self.path} stayed locked by another process for {self.lock_timeout_s:.0f} s"
                ) from exc
            if not self.path.exists() or self._os_error(exc):
                raise ArchiveError(f"cannot open archive {self.path}: {_first_line(exc)}") from exc
            raise self._damaged(exc) from exc
        except duckdb.Error as exc:
            if read_only:
                raise self._damaged(exc) from exc
            raise

    def _unreadable(self, exc: BaseException) -> bool:
        """Whether a read failed on the file's content (not a lock, permissions or a bug in a query)."""
        damage = (duckdb.SerializationException, duckdb.InternalException, duckdb.IOException)
        return isinstance(exc, damage) and not _is_lock_error(exc) and not self._os_error(exc)

    @staticmethod
    def _os_error(exc: BaseException) -> bool:
        """An error of the file system (permissions, read-only), not of the file's content."""
        text = str(exc).lower()
        return any(s in text for s in ("permission denied", "read-only file system", "no such file"))

    def _damaged(self, exc: BaseException | None, reason: str | None = None) -> ArchiveDamagedError:
        reason = reason or (_first_line(exc) if exc is not None else "unreadable")
        reason = reason.replace(f'"{self.path}"', self.path.name)  # the full path is named once, in front
        wal = self.path.with_name(self.path.name + ".wal")
        wal_note = f" together with {wal.name} (DuckDB's write-ahead log) if the copy has one" if wal.exists() else (
            f" (with its {wal.name}, DuckDB's write-ahead log, if the copy has one)")
        return ArchiveDamagedError(
            f"archive {self.path} is damaged or not a DuckDB file ({reason}); nothing was written to it. "
            f"Restore it from a copy{wal_note}, or use another archive with --archive FILE"
        )
