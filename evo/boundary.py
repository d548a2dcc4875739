"""A run's trust boundary, set up once per engine: the pinned harness, the sandbox, the
limits of each genome, and what of the harness's data a genome may read."""

from __future__ import annotations

from collections.abc import Callable

from evo import compile_cache
from evo.archive import Archive
from evo.config import Paths, RunConfig
from evo.evaluation import EvaluationSetup, sha256_file
from evo.evaluator import EVALUATOR_VERSION
from evo.harness import genome_view
from evo.limits import Confinement, ProcessLimits, default_memory_mb
from evo.sandbox import detect


def evaluation_setup(
    paths: Paths, archive: Archive, config: RunConfig, gpu: bool, slots: int, say: Callable[[str], None],
    warm_start: bool = False,
) -> EvaluationSetup:
    """The run's :class:`EvaluationSetup`; what it chose is told through ``say``.

    A run recorded before pinning existed is pinned to the harness as it is now. Without
    ``max_memory_mb``, each of ``slots`` genomes running at once on this machine may use
    80% of its RAM divided by ``slots``.

    Raises:
        SandboxUnavailableError: ``--sandbox bwrap`` and bubblewrap does not work here.
        HarnessError: the harness's data is not prepared.
    """
    record = archive.get_run(config.run)
    pinned = record.harness_sha256
    if pinned is None:
        pinned = sha256_file(paths.prepare_py)
        archive.pin_harness(config.run, pinned, EVALUATOR_VERSION)
    elif record.evaluator_version and record.evaluator_version != EVALUATOR_VERSION:
        say(f"[yellow]note:[/] the trusted evaluator changed since this run started "
            f"({record.evaluator_version} -> {EVALUATOR_VERSION})")
    sandbox = detect(config.sandbox)
    view = genome_view(paths.prepare_py, config.profile, config.dataset)
    limits = ProcessLimits(
        max_file_size_mb=config.max_file_size_mb, max_processes=config.max_processes,
        max_memory_mb=config.max_memory_mb or max(64, default_memory_mb() // max(1, slots)), address_space_ok=not gpu,
    )
    hidden = (*view.hidden, paths.archive_path.parent, paths.project_dir / "genomes")
    # the seed's compile cache is shared only where the sandbox keeps genomes from writing it
    shared = compile_cache.shared_path(paths.genome_dir(config.run)) if sandbox.isolated else None
    if warm_start and not sandbox.isolated:  # unconfined, a genome could write the next one's held workspace
        say("[yellow]warm start off[/]: it needs the sandbox")
        warm_start = False
    setup = EvaluationSetup(
        paths.project_dir, pinned, config.profile, config.dataset, view.cache_dir, config.fitness, sandbox, limits,
        view.data_files, hidden, gpu, compile_cache=shared, warm_start=warm_start,
    )
    with Confinement(limits) as probe:
        limited = probe.describe()
    if sandbox.isolated:
        say(f"sandbox: bubblewrap ({sandbox.binary}); limits: {limited}")
    else:
        say(f"[yellow]no sandbox[/] ({sandbox.reason}): genomes run unconfined and could read validation data "
            f"or write your files; trusted scoring, limits ({limited}) and the pinned harness still apply")
    if config.fitness == "reported":
        say("[yellow]fitness is self-reported[/] (--fitness reported): genomes' printed val_bpb is trusted")
    return setup
