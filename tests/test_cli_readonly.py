"""Read-only verbs on a read-only archive, reading only the columns they show; damaged archives."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from pathlib import Path

import duckdb
import pytest
from fake_run import build_fake_run

from evo.archive import Archive, ArchiveError
from evo.archive_db import SCHEMA
from evo.cli import main

READ_VERBS = [
    ["runs"], ["runs", "--json"], ["status"], ["status", "--json"], ["status", "--wide"], ["lineage"],
    ["export", "--best", "-o", "{out}/train.py"], ["export", "--results-tsv", "{out}/results.tsv"],
    ["plot", "-o", "{out}/progress.png"], ["show", "{genome}"], ["show", "{genome}", "--diff"],
]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return build_fake_run(tmp_path_factory.mktemp("project"))


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


class _Spy:
    """A DuckDB connection that records every statement it runs."""

    def __init__(self, con, log):
        self._con, self._log = con, log

    def execute(self, sql, *args):
        self._log.append(sql)
        return self._con.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._con, name)


@pytest.fixture
def read_only_copy(fake, tmp_path, monkeypatch):
    """A copy of the fake run's archive on a "read-only file system": the folder and file are
    chmod'ed read-only, and (as root ignores modes) a read-write open of it fails as it would there.
    Yields the copy's project folder and the SQL run against it."""
    project = tmp_path / "ro"
    (project / "archive").mkdir(parents=True)
    shutil.copy(fake.archive.path, project / "archive" / "evo.duckdb")
    archive_dir = project / "archive"
    log: list[str] = []
    real_connect = duckdb.connect

    def connect(database=":memory:", read_only=False, **kwargs):
        if str(database).startswith(str(archive_dir)):
            if not read_only:
                raise duckdb.IOException(f'IO Error: Cannot open file "{database}": Read-only file system')
            return _Spy(real_connect(database, read_only=read_only, **kwargs), log)
        return real_connect(database, read_only=read_only, **kwargs)

    monkeypatch.setattr(duckdb, "connect", connect)
    (archive_dir / "evo.duckdb").chmod(0o444)
    archive_dir.chmod(0o555)
    yield project, log
    archive_dir.chmod(0o755)


@pytest.mark.parametrize("verb", READ_VERBS, ids=lambda v: " ".join(v).replace("{out}/", "").replace("{genome}", "g"))
def test_read_verbs_work_on_a_read_only_archive_and_read_no_log_tails(fake, read_only_copy, tmp_path, verb, capsys):
    project, log = read_only_copy
    before = _snapshot(project / "archive")
    genome = fake.crashed
    argv = [a.format(out=tmp_path, genome=genome) for a in verb] + ["--project", str(project)]
    assert main(argv) == 0, capsys.readouterr()
    assert _snapshot(project / "archive") == before  # nothing written, no WAL or lock file created
    assert log, "the archive was never opened"
    for sql in log:
        selects_details = "log_tail" in sql or re.search(r"\bmetrics\b", sql)
        if selects_details:  # only `evo show` reads them, of its one genome
            assert verb[0] == "show" and "genome_id = $genome" in sql, sql


def test_a_read_only_archive_refuses_writes(fake):
    archive = Archive(fake.archive.path, read_only=True)
    assert archive.genomes(fake.run)
    with pytest.raises(ArchiveError, match="read-only"):
        archive.add_genome(fake.run, 0, "seed", "x", "X = 1\n")


def test_views_read_selected_metric_columns_only(fake):
    archive = Archive(fake.archive.path, read_only=True)
    light = archive.evaluations(fake.run, metrics=("val_bpb",))
    full = archive.evaluations(fake.run)
    assert [e.eval_id for e in light] == [e.eval_id for e in full]
    for a, b in zip(light, full, strict=True):
        assert a.log_tail is None and set(a.metrics) <= {"val_bpb"}
        assert a.val_bpb == b.val_bpb and a.state == b.state and a.wall_s == b.wall_s
    assert all(e.genome_id == fake.crashed for e in archive.evaluations(fake.run, genome_id=fake.crashed))
    with pytest.raises(ValueError, match="no metric column"):
        archive.evaluations(fake.run, metrics=("log_tail",))


def _old_archive(path: Path) -> None:
    """An archive as an older evo wrote it: no trust-boundary columns, no LLM calls table."""
    old = SCHEMA.split("-- the trust boundary")[0]
    with duckdb.connect(str(path)) as con:
        con.execute(old)


def test_an_older_archive_is_upgraded_once_when_writable_and_refused_in_one_line_when_not(tmp_path, monkeypatch,
                                                                                         capsys):
    path = tmp_path / "archive" / "evo.duckdb"
    path.parent.mkdir()
    _old_archive(path)
    assert main(["runs", "--project", str(tmp_path)]) == 0  # upgraded, then read
    with duckdb.connect(str(path), read_only=True) as con:
        columns = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                             "WHERE table_name = 'evaluations'").fetchall()}
    assert {"reported_val_bpb", "sandbox"} <= columns
    other = tmp_path / "old2"
    (other / "archive").mkdir(parents=True)
    _old_archive(other / "archive" / "evo.duckdb")
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode == os.W_OK else True)
    capsys.readouterr()
    assert main(["runs", "--project", str(other)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "older evo" in err and "copy it" in err


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 3])
    elif how == "garbage header":
        path.write_bytes(os.urandom(4096) + data[4096:])
    elif how == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"this is not a database\n" * 100)


@pytest.mark.parametrize("how", ["truncated", "garbage header", "empty", "text"])
@pytest.mark.parametrize("verb", [["status"], ["runs"], ["lineage"], ["export", "--best", "-o", "{out}/t.py"],
                                  ["show", "g0000"], ["resume"]], ids=lambda v: v[0])
def test_a_damaged_archive_is_one_error_line_and_stays_untouched(fake, tmp_path, capsys, how, verb):
    project = tmp_path / "p"
    (project / "archive").mkdir(parents=True)
    path = project / "archive" / "evo.duckdb"
    shutil.copy(fake.archive.path, path)
    _damage(path, how)
    before = _snapshot(path.parent)
    mode = stat.S_IMODE(path.stat().st_mode)
    argv = [a.format(out=tmp_path) for a in verb] + ["--project", str(project)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert str(path) in lines[0] and "restore it from a copy" in lines[0].lower()
    assert "Traceback" not in captured.err + captured.out
    assert _snapshot(path.parent) == before and stat.S_IMODE(path.stat().st_mode) == mode
