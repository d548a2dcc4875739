"""Genome sources: hashing, normalisation, validation and files on disk.

A genome is one Python file, a variant of ``seed_train.py`` (see DESIGN.md, the genome
contract). Two genomes are the same experiment when their *normalized* sources match:
the source parsed and unparsed by :mod:`ast`, which drops comments and formatting.
"""

from __future__ import annotations

import ast
import hashlib
import os
import tempfile
from pathlib import Path

import libcst as cst


class InvalidGenomeError(ValueError):
    """A source that cannot be a genome: it does not parse or does not compile."""


def source_sha256(code: str) -> str:
    """Hex sha256 of the exact source text (UTF-8)."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def normalize(code: str) -> str:
    """The source with comments, blank lines and formatting removed.

    Raises:
        InvalidGenomeError: the source does not parse.
    """
    try:
        return ast.unparse(ast.parse(code))
    except SyntaxError as exc:
        raise InvalidGenomeError(f"genome does not parse: line {exc.lineno}: {exc.msg}") from exc


def normalized_sha256(code: str) -> str:
    """Hex sha256 of :func:`normalize` (code that does not parse hashes as-is)."""
    try:
        return source_sha256(normalize(code))
    except InvalidGenomeError:
        return source_sha256(code)


def validate(code: str, filename: str = "<genome>") -> None:
    """Check a candidate genome parses with libcst and compiles with CPython.

    Raises:
        InvalidGenomeError: with the parser's or compiler's message.
    """
    try:
        cst.parse_module(code)
    except cst.ParserSyntaxError as exc:
        raise InvalidGenomeError(f"libcst cannot parse the genome: {exc.message} (line {exc.raw_line})") from exc
    try:
        compile(code, filename, "exec")
    except SyntaxError as exc:
        raise InvalidGenomeError(f"genome does not compile: line {exc.lineno}: {exc.msg}") from exc


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def genome_path(genome_dir: Path, genome_id: str) -> Path:
    """Where a genome's source lives: ``genomes/<run>/<genome_id>.py``."""
    return genome_dir / f"{genome_id}.py"


def log_path(genome_dir: Path, genome_id: str, attempt: int) -> Path:
    """Where an evaluation's log lives: ``<genome_id>.log`` for the first evaluation of a
    genome, ``<genome_id>.attempt2.log`` ... for the next (a replicate or a re-run)."""
    suffix = ".log" if attempt == 1 else f".attempt{attempt}.log"
    return genome_dir / f"{genome_id}{suffix}"


def workspace_path(genome_dir: Path, genome_id: str) -> Path:
    """The genome's sandbox workspace during an evaluation: ``<genome_id>.work`` (removed after)."""
    return genome_dir / f"{genome_id}.work"


def remove_workspaces(genome_dir: Path) -> None:
    """Remove evaluation workspaces a killed engine left behind (symlinks are not followed)."""
    import shutil

    if genome_dir.is_dir():
        for path in [*genome_dir.glob("*.work"), *genome_dir.glob(".*.work.harness")]:
            shutil.rmtree(path, ignore_errors=True)
