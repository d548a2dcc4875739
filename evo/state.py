"""The run as the engine knows it, in memory: read from the archive once, then kept up to
date from what the engine itself records.

The archive stays the single source of truth (a resumed engine rebuilds this from it);
this is a cache that makes the engine's cost per evaluation independent of the archive's
size: no re-reading of every genome and evaluation per step, sources loaded one by one
when needed (by sha256, kept in a bounded LRU cache), derived values cached by hash.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from evo.archive import Archive
from evo.records import EvalState, EvaluationRecord, GenomeRecord
from evo.results import GenomeResult, genome_result

SOURCE_CACHE_SIZE = 2048  # sources kept in memory (~20 KB each for the seed: ~40 MB)
LOG_TAILS_LOADED = 200  # evaluations whose log tail is read on load (the LLM prompt shows recent failures)


class SourceCache:
    """sha256 -> source, loaded on demand, least recently used dropped past ``size``.

    Args:
        load: reads one source by sha256 (``Archive.source``).
        size: entries kept.
    """

    def __init__(self, load: Callable[[str], str], size: int = SOURCE_CACHE_SIZE) -> None:
        self._load = load
        self._size = size
        self._items: OrderedDict[str, str] = OrderedDict()

    def get(self, sha256: str) -> str:
        code = self._items.get(sha256)
        if code is None:
            code = self._load(sha256)
        self.put(sha256, code)
        return code

    def put(self, sha256: str, code: str) -> None:
        self._items[sha256] = code
        self._items.move_to_end(sha256)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


class RunState:
    """Every genome of one run with its evaluations and verdict, in creation order.

    Updated only through :meth:`add_genome` and :meth:`record` (the records the archive
    returned), so it never disagrees with the archive for longer than one call.

    Args:
        genomes: the run's genomes, in creation order.
        evaluations: their evaluations.
        sources: where sources come from.
    """

    def __init__(self, genomes: Iterable[GenomeRecord], evaluations: Iterable[EvaluationRecord], sources: SourceCache) -> None:
        self.sources = sources
        self._genomes: dict[str, GenomeRecord] = {}
        self._order: dict[str, int] = {}  # genome id -> birth index (0, 1, ...)
        self._evaluations: dict[str, dict[int, EvaluationRecord]] = {}
        self._results: dict[str, GenomeResult] = {}
        self._list: list[GenomeResult] | None = None
        self.normalized: set[str] = set()
        self.counted = 0  # evaluations that count (finished, not INTERRUPTED)
        for genome in genomes:
            self._add(genome)
        for evaluation in evaluations:
            self._evaluations.setdefault(evaluation.genome_id, {})[evaluation.eval_id] = evaluation
        for genome_id in self._genomes:
            self._refresh(genome_id)
        self.counted = sum(r.counted for r in self._results.values())

    @classmethod
    def load(cls, archive: Archive, run: str) -> RunState:
        """The run as recorded (one read of genomes and evaluations)."""
        return cls(
            archive.genomes(run), archive.evaluations(run, log_tails_of_last=LOG_TAILS_LOADED),
            SourceCache(archive.source),
        )

    # ------------------------------------------------------------------ updates

    def add_genome(self, genome: GenomeRecord, code: str | None = None) -> None:
        """A genome the engine just recorded (``code``: its source, cached)."""
        self._add(genome)
        if code is not None:
            self.sources.put(genome.source_sha256, code)
        self._refresh(genome.genome_id)

    def record(self, evaluation: EvaluationRecord) -> None:
        """An evaluation the engine just started or finished (replaces the older record)."""
        before = self._results[evaluation.genome_id].counted
        self._evaluations.setdefault(evaluation.genome_id, {})[evaluation.eval_id] = evaluation
        self._refresh(evaluation.genome_id)
        self.counted += self._results[evaluation.genome_id].counted - before

    def _add(self, genome: GenomeRecord) -> None:
        self._order[genome.genome_id] = len(self._genomes)
        self._genomes[genome.genome_id] = genome
        self.normalized.add(genome.normalized_sha256)

    def _refresh(self, genome_id: str) -> None:
        evaluations = self._evaluations.get(genome_id, {}).values()
        self._results[genome_id] = genome_result(self._genomes[genome_id], evaluations)
        self._list = None

    # ------------------------------------------------------------------ reads

    def results(self) -> list[GenomeResult]:
        """Every genome with its verdict, in creation order (a cached list: do not modify)."""
        if self._list is None:
            self._list = list(self._results.values())
        return self._list

    def result(self, genome_id: str) -> GenomeResult:
        return self._results[genome_id]

    def __len__(self) -> int:
        return len(self._genomes)

    def birth_index(self, genome_id: str) -> int:
        """The genome's place in the run's creation order (0 for the first)."""
        return self._order[genome_id]

    def source(self, genome: GenomeRecord) -> str:
        return self.sources.get(genome.source_sha256)

    def running(self) -> list[GenomeResult]:
        """Genomes with an evaluation RUNNING."""
        return [r for r in self.results() if r.state == EvalState.RUNNING.value]
