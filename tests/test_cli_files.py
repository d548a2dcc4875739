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


def test_an_output_that_cannot_be_written_is_named_and_nothing_is_left(fake, tmp_path, capsys):
    """-o a folder: the error names the file asked for, not a temporary file beside it."""
    folder = tmp_path / "a-folder"
    folder.mkdir()
    assert main(["export", "--best", "-o", str(folder), "--project", str(fake.project)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {folder}" in err and ".tmp" not in err
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["a-folder"]


@pytest.mark.parametrize("suffix, magic", [(".svg", b"<?xml"), (".pdf", b"%PDF"), (".png", b"\x89PNG")])
def test_plot_writes_the_format_its_suffix_names(fake, tmp_path, suffix, magic):
    out = tmp_path / f"p{suffix}"
    assert main(["plot", "-o", str(out), "--project", str(fake.project)]) == 0
    assert out.read_bytes().startswith(magic)


def test_plot_refuses_a_suffix_it_cannot_write(fake, tmp_path, capsys):
    assert main(["plot", "-o", str(tmp_path / "p.jpg"), "--project", str(fake.project)]) == 2
    assert "name a .png, .svg or .pdf file" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("extra", [["-o", "t.py"], ["--best"], ["--genome", "g0000"], ["g0000"]])
def test_results_tsv_with_a_genome_export_is_refused_not_half_done(fake, tmp_path, capsys, extra):
    tsv = tmp_path / "r.tsv"
    assert main(["export", "--results-tsv", str(tsv), *extra, "--project", str(fake.project)]) == 2
    assert "in a command of its own" in capsys.readouterr().err and not tsv.exists()


def test_show_of_a_failed_genome_says_why_it_ended_without_an_error_line(fake, capsys):
    """Everywhere else a line opening with 'error:' means evo failed (exit 2); `evo show` of
    a genome that failed succeeds and says why the genome's evaluation ended."""
    assert main(["show", fake.crashed, "--project", str(fake.project)]) == 0
    out = capsys.readouterr().out
    assert "why it ended: " in out and not any(line.startswith("error:") for line in out.splitlines())
