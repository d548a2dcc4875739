"""Genome sources: hashing, normalisation, validation and files on disk.

A genome is one Python file, a variant of ``seed_train.py`` (see DESIGN.md, the genome
contract). Two genomes are the same experiment when their *normalized* sources match:
the source parsed and unparsed by :mod:`ast`, which drops comments and formatting.
"""

from __future__ import annotations

import ast
import hashlib
import os
import shutil
import stat
import tempfile
import threading
from pathlib import Path

import libcst as cst

# CPython 3.11 keeps ast.parse's recursion counter per interpreter, not per thread: two
# threads parsing at once (a proposal thread and the engine) can fail with "SystemError: AST
# constructor recursion depth mismatch" (python/cpython#106905). Every ast.parse in evo holds this.
_AST_LOCK = threading.Lock()


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
        with _AST_LOCK:
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
    """Check a candidate genome compiles with CPython and parses with libcst.

    CPython's compiler goes first: it refuses pathological nesting (100,000 unary minus
    signs, say) with an error, where libcst's native parser would crash the process.

    Raises:
        InvalidGenomeError: with the compiler's or parser's message.
    """
    try:
        compile(code, filename, "exec")
    except SyntaxError as exc:
        raise InvalidGenomeError(f"genome does not compile: line {exc.lineno}: {exc.msg}") from exc
    except (MemoryError, RecursionError, ValueError) as exc:
        raise InvalidGenomeError(f"genome does not compile: {type(exc).__name__} (nesting too deep?)") from exc
    try:
        cst.parse_module(code)
    except cst.ParserSyntaxError as exc:
        raise InvalidGenomeError(f"libcst cannot parse the genome: {exc.message} (line {exc.raw_line})") from exc


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (threads may be creating files)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write ``text`` (UTF-8) or bytes to ``path`` through a temporary file and a rename
    (never half-written), with the mode a plain ``open`` would give (0o666 less the umask).

    Raises:
        OSError: of the failure's own type (a full disk, a read-only folder, ``path`` a
            folder), its message naming ``path`` rather than the temporary file.
    """
    try:
        _write_atomic(path, text)
    except OSError as exc:
        raise type(exc)(exc.errno, f"cannot write {path}: {exc.strerror or exc}") from exc


def _write_atomic(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
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


WARM_PREFIX = "_warm"  # a slot's warm start (evo.warm_start): <genome_dir>/_warm<pid>-<n>.work and .log


def workspace_path(genome_dir: Path, genome_id: str) -> Path:
    """The genome's sandbox workspace during an evaluation: ``<genome_id>.work`` (removed after)."""
    return genome_dir / f"{genome_id}.work"


def remove_workspaces(genome_dir: Path) -> None:
    """Remove evaluation workspaces, their model snapshots, and warm starts' logs, a killed
    engine left behind (symlinks are not followed)."""
    from evo import compile_cache

    if genome_dir.is_dir():
        partial = genome_dir.glob(compile_cache.PARTIAL)  # half-written shared compile caches
        snapshots = genome_dir.glob(".*.work.model")  # evo.model_snapshot's copies of exported models
        for path in [*genome_dir.glob("*.work"), *genome_dir.glob(".*.work.harness"), *snapshots, *partial]:
            remove_tree(path)
        for path in genome_dir.glob(f"{WARM_PREFIX}*.log"):
            path.unlink(missing_ok=True)


def unlock(path: Path) -> None:
    """Give a folder the genome may have locked (``chmod 500``) back its owner's rwx: opened
    without following a link (a link is left alone), so a swap cannot redirect the chmod.
    A folder of the engine's uid, which is what a genome's files are under bubblewrap.

    Raises:
        OSError: not a folder, or it cannot be opened.
    """
    fd = os.open(path, getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW)  # O_PATH: even mode 000
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode) | stat.S_IRWXU
        if hasattr(os, "O_PATH"):
            os.chmod(f"/proc/self/fd/{fd}", mode)  # the inode opened, not whatever the path names now
        else:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)


def remove_tree(path: Path) -> None:
    """Remove a folder a genome wrote, whatever modes it left on its subfolders (links in it
    are removed, never followed; a link given as ``path`` is left); what still cannot be
    removed is left."""
    try:
        unlock(path)
    except OSError:  # gone, or a link: nothing to walk (rmtree leaves a link, never follows it)
        shutil.rmtree(path, ignore_errors=True)
        return
    for root, dirs, _files in os.walk(path):
        for name in dirs:
            try:
                unlock(Path(root) / name)
            except OSError:
                pass  # a link, or gone
    shutil.rmtree(path, ignore_errors=True)
