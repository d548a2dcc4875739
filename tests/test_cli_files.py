"""Output files: 0644 under the usual umask (the umask respected), written atomically; .gitignore."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest
from fake_run import build_fake_run

from evo.cli import main
from evo.gitignore import ignore_outputs

OUTPUTS = {
    "train.py": ["export", "--best", "-o", "{out}"],
    "results.tsv": ["export", "--results-tsv", "{out}"],
    "progress.png": ["plot", "-o", "{out}"],
    "lineage.html": ["lineage", "--html", "{out}"],
}


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return build_fake_run(tmp_path_factory.mktemp("project"))


@pytest.fixture
def umask():
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("name", list(OUTPUTS))
@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_outputs_get_the_mode_of_the_umask_and_no_temporary_file_is_left(fake, tmp_path, umask, name, mask, mode):
    umask(mask)
    out = tmp_path / "out" / name
    argv = [a.format(out=out) for a in OUTPUTS[name]] + ["--project", str(fake.project)]
    assert main(argv) == 0
    assert stat.S_IMODE(out.stat().st_mode) == mode
    assert sorted(p.name for p in out.parent.iterdir()) == [name]  # renamed into place, no .tmp left


def _git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@needs_git
def test_outputs_are_added_to_gitignore_once_in_a_git_work_tree(tmp_path):
    assert _git("init", "-q", cwd=tmp_path).returncode == 0
    (tmp_path / ".gitignore").write_text("*.pyc")  # no final newline
    archive = tmp_path / "archive" / "evo.duckdb"
    assert ignore_outputs(tmp_path, archive) == ["/genomes/", "/archive/"]
    text = (tmp_path / ".gitignore").read_text()
    assert text.startswith("*.pyc\n") and text.endswith("/genomes/\n/archive/\n")
    for path in ("archive/evo.duckdb", "archive/evo.duckdb.wal", "genomes/r/g0000.py"):
        assert _git("check-ignore", "-q", "--no-index", path, cwd=tmp_path).returncode == 0, path
    assert _git("check-ignore", "-q", "--no-index", "train.py", cwd=tmp_path).returncode == 1  # exports stay
    assert ignore_outputs(tmp_path, archive) == []
    assert (tmp_path / ".gitignore").read_text() == text


@needs_git
def test_nothing_is_added_outside_git_or_when_already_ignored(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    assert ignore_outputs(plain, plain / "archive" / "evo.duckdb") == []
    assert not (plain / ".gitignore").exists()
    repo = tmp_path / "repo"
    repo.mkdir()
    _git("init", "-q", cwd=repo)
    (repo / ".gitignore").write_text("genomes/*\narchive/*\n")  # evo's own repository ignores them this way
    assert ignore_outputs(repo, repo / "archive" / "evo.duckdb") == []
    elsewhere = tmp_path / "archives" / "evo.duckdb"  # an archive outside the project: only genomes/
    repo2 = tmp_path / "repo2"
    repo2.mkdir()
    _git("init", "-q", cwd=repo2)
    assert ignore_outputs(repo2, elsewhere) == ["/genomes/"]


@needs_git
def test_evo_start_adds_the_outputs_to_gitignore(tmp_path, capsys, monkeypatch, fake_genome):
    from conftest import add_harness

    from evo.harness import HarnessError

    _git("init", "-q", cwd=tmp_path)
    add_harness(tmp_path)
    (tmp_path / "seed_train.py").write_text(fake_genome)

    def no_data(*args):
        raise HarnessError("no data here")

    # the start stops with one error line when it prepares data, after the .gitignore step
    monkeypatch.setattr("evo.cli_run.prepare_data", no_data)
    assert main(["start", "--project", str(tmp_path), "--run", "r1", "--profile", "smoke"]) == 2
    captured = capsys.readouterr()
    assert "added /genomes/ and /archive/ to" in captured.out and captured.err.startswith("error:")
    assert (tmp_path / ".gitignore").read_text().endswith("/genomes/\n/archive/\n")
