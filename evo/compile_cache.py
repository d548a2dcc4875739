"""A run's compile cache: what the seed genome's ``torch.compile`` left, given to every genome.

On a GPU a genome spends tens of seconds compiling its model (TorchInductor: graph capture,
code generation, Triton kernels, autotuning) before its first timed step, and the GPU waits
meanwhile. Most children differ from the seed in constants that never reach the compiled
graph (learning rates, schedules), so the seed's compiled artifacts serve them as they are:
Inductor's FX-graph and AOTAutograd caches are keyed by the graph, the inputs' shapes and
the compiler's configuration, and stay valid when the folder moves.

Genomes are hostile, and Inductor's cache holds Python code that a later process loads and
runs: a genome that could write the shared cache could plant code in its competitors'
training. So the shared cache is written by one genome only, the run's seed (code evo wrote
from the project's ``seed_train.py``, which no operator touched), and only when it ran in
the sandbox (where nothing else could write its workspace) and completed. Every genome gets
its own copy in its workspace (``TORCHINDUCTOR_CACHE_DIR``; Triton's cache lives inside it)
and whatever it writes there is removed with the workspace. A copy, not links: a hard link
would let a genome rewrite the shared files in place.

Without a sandbox every genome compiles cold: an unconfined genome could write the shared
folder directly. On a Ray cluster each node keeps its own cache, filled by a seed evaluation
that ran on that node (the seed's replicates spread over the slots).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

FOLDER = ".compile-cache"  # in a genome's workspace, and the run's shared copy beside the workspaces
PARTIAL = f"{FOLDER}.*.partial"  # a shared copy being written (glob beside it; a killed engine's are removed)
ENV = "TORCHINDUCTOR_CACHE_DIR"
GIVEN = ".evo-given"  # in a genome's own copy: the shared cache was copied in
MAX_BYTES = 1024**3  # a larger seed cache is not kept: a copy per genome would cost what it saves


def shared_path(genome_dir: Path) -> Path:
    """The run's shared cache: ``<genome_dir>/.compile-cache`` (hidden from genomes)."""
    return genome_dir / FOLDER


def give(shared: Path | None, workspace: Path) -> dict[str, str]:
    """Copy the run's shared cache (if any) into ``workspace`` for one genome, unless it was
    copied there already (a warm start's workspace is given one at its spawn and again at
    its release: the seed's cache may have been kept in between; :data:`GIVEN` marks a
    copy, since the warm start's imports may write to the folder).

    Returns:
        The genome's environment variable naming its own cache folder (always set, so a
        genome never writes Inductor's default ``/tmp`` cache outside its workspace).
    """
    own = workspace / FOLDER
    given = own.is_dir() and not own.is_symlink() and (own / GIVEN).is_file()
    if shared is not None and shared.is_dir() and not shared.is_symlink() and not given:
        try:
            shutil.copytree(shared, own, symlinks=True, dirs_exist_ok=True)
            (own / GIVEN).touch()
        except OSError:  # a full disk: the genome compiles cold, the run goes on
            shutil.rmtree(own, ignore_errors=True)
    own.mkdir(exist_ok=True)
    return {ENV: str(own)}


def keep(workspace: Path, shared: Path | None) -> bool:
    """Make the seed genome's cache in ``workspace`` the run's shared one, unless there is one.

    Call only for the run's seed genome, run in the sandbox, that completed. Atomic: the copy
    is made beside ``shared`` and renamed into place, so a reader sees all or nothing.

    Returns:
        Whether the shared cache was written.
    """
    own = workspace / FOLDER
    if shared is None or shared.exists() or not own.is_dir() or own.is_symlink():
        return False
    if not any(own.iterdir()) or _size(own) > MAX_BYTES:
        return False
    partial = shared.with_name(PARTIAL.replace("*", uuid.uuid4().hex))
    try:
        shutil.copytree(own, partial, symlinks=True)
        os.rename(partial, shared)
    except OSError:  # lost a race with another seed replicate, or a full disk
        shutil.rmtree(partial, ignore_errors=True)
        return False
    return True


def _size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total
