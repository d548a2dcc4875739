"""Keep a project's outputs out of git: ``evo start`` adds them to the project's .gitignore.

What evo writes in a project is large, binary or both: the archive (``archive/`` with
the DuckDB file, its write-ahead log and lock files) and ``genomes/`` (every genome's
source, logs and workspaces). When the project is inside a git work tree and git would
not ignore a new file there yet (``git check-ignore --no-index``), the missing patterns
are appended to ``<project>/.gitignore``. Nothing happens outside a git work tree, when
git is not installed, or when the patterns are ignored already (by any .gitignore,
``.git/info/exclude`` or the global excludes file). Exports (``train.py``,
``results.tsv``, ``lineage.html``, ``progress.png``) are left alone: they are written
where the user asks, often to be committed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

COMMENT = "# evo's outputs: the archive and genome files of runs (added by evo start)"


def _git(project_dir: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        return subprocess.run([git, "-C", str(project_dir), *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None


def missing_patterns(project_dir: Path, archive_path: Path) -> list[str]:
    """The .gitignore patterns (anchored at the project) that git does not apply yet.

    Returns:
        ``[]`` when the project is not in a git work tree or git is not installed.
    """
    inside = _git(project_dir, "rev-parse", "--is-inside-work-tree")
    if inside is None or inside.returncode != 0 or inside.stdout.strip() != "true":
        return []
    probes = {"/genomes/": "genomes/evo-run/g0000.py"}
    try:
        relative = archive_path.resolve().relative_to(project_dir.resolve())
    except ValueError:
        relative = None  # the archive lives outside the project
    if relative is not None:
        if relative.parent == Path("."):
            probes[f"/{relative.name}*"] = relative.name + ".wal"
        else:
            probes[f"/{relative.parent.as_posix()}/"] = relative.as_posix()
    missing = []
    for pattern, probe in probes.items():
        check = _git(project_dir, "check-ignore", "-q", "--no-index", probe)
        if check is not None and check.returncode == 1:  # 0: ignored; 128: git failed
            missing.append(pattern)
    return missing


def ignore_outputs(project_dir: Path, archive_path: Path) -> list[str]:
    """Append the missing patterns to ``<project>/.gitignore`` (module docstring).

    Returns:
        The patterns added (``[]``: nothing to do).

    Raises:
        OSError: .gitignore cannot be written.
    """
    patterns = missing_patterns(project_dir, archive_path)
    if not patterns:
        return []
    path = project_dir / ".gitignore"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    block = ("\n" if text and not text.endswith("\n") else "") + ("\n" if text else "")
    block += "\n".join([COMMENT, *patterns]) + "\n"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(block)
    return patterns
