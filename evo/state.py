"""The run as the engine knows it, in memory: read from the archive once, then kept up to
date from what the engine itself records.

The archive stays the single source of truth (a resumed engine rebuilds this from it);
this is a cache that makes the engine's cost per evaluation independent of the archive's
size: no re-reading of every genome and evaluation per step, sources loaded one by one
when needed (by sha256, kept in a bounded LRU cache), derived values cached by hash.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator

from evo.archive import Archive
from evo.belief_index import BeliefIndex
from evo.noise import NoiseEstimate, pooled_estimate, pooled_term
from evo.racing import Verdict, judge_ranked
from evo.records import EvaluationRecord, GenomeRecord
from evo.results import GenomeResult, genome_result
from evo.screening import promotion, rung_key, screen_cost

SOURCE_CACHE_SIZE = 2048  # sources kept in memory (~20 KB each for the seed: ~40 MB)
LOG_TAILS_LOADED = 200  # evaluations whose log tail is read on load (the LLM prompt shows recent failures)


class SourceCache:
    """sha256 -> source, loaded on demand, least recently used dropped past ``size``.

    Args:
        load: reads one source by sha256 (``Archive.source``).
        size: entries kept.
    """

    def __init__(
        self, load: Callable[[str], str], size: int = SOURCE_CACHE_SIZE,
        load_many: Callable[[list[str]], dict[str, str]] | None = None,
    ) -> None:
        self._load = load
        self._load_many = load_many
        self._size = size
        self._items: OrderedDict[str, str] = OrderedDict()

    def get(self, sha256: str) -> str:
        code = self._items.get(sha256)
        if code is None:
            code = self._load(sha256)
        self.put(sha256, code)
        return code

    def get_many(self, shas: Iterable[str]) -> dict[str, str]:
        """sha256 -> source for each of ``shas``; the misses are read together (one query)."""
        wanted = list(dict.fromkeys(shas))
        missing = [sha for sha in wanted if sha not in self._items]
        if missing and self._load_many is not None:
            for sha, code in self._load_many(missing).items():
                self.put(sha, code)
        return {sha: self.get(sha) for sha in wanted}

    def put(self, sha256: str, code: str) -> None:
        self._items[sha256] = code
        self._items.move_to_end(sha256)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


class RunState:
    """Every genome of one run with its evaluations and verdict, in creation order.

    Updated only through :meth:`add_genome` and :meth:`record` (the records the archive
    returned), so it never disagrees with the archive for longer than one call. Besides
    the verdicts it keeps what the scheduler asks at every step, so that no step scans
    the whole run: the genomes not evaluated to an end, the COMPLETE genomes ranked by
    (val_bpb, birth), and the declared best (updated from the genomes that changed).

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
        self._ids: list[str] = []  # birth order
        self._unfinished: dict[str, None] = {}  # genomes not evaluated to an end (ordered set)
        self._ranked: list[tuple[float, int, str]] = []  # COMPLETE genomes: (val_bpb, birth, id), sorted
        self._rank_key: dict[str, tuple[float, int, str]] = {}
        self._version = 0  # counts changes of any genome's fitness
        self._beliefs = BeliefIndex()
        self._verdict: tuple[tuple[int, int], Verdict] | None = None  # ((version, best_replicates), verdict)
        self.seed_id: str | None = None
        self._pooled: dict[str, tuple[float, int]] = {}  # genome id -> its term of the pooled noise floor
        self.normalized: set[str] = set()
        self.counted = 0  # evaluations that count (finished, not INTERRUPTED), held-out ones apart
        self.held_out_counted = 0  # held-out evaluations that count (evo.held_out)
        self.evaluated = 0  # genomes with at least one evaluation that counts
        self.screen_cost = 0.0  # full-budget evaluations the screens that count cost (evo.screening)
        self._rung_births: list[tuple[int, str]] = []  # genomes with a finished screen, in birth order
        self._rung_key: dict[str, tuple[float, int, str]] = {}  # their (screen reading, birth, id)
        for genome in genomes:
            self._add(genome)
        for evaluation in evaluations:
            self._evaluations.setdefault(evaluation.genome_id, {})[evaluation.eval_id] = evaluation
        for genome_id in self._genomes:
            self._refresh(genome_id, bulk=True)
        self._ranked.sort()
        self._rung_births.sort()
        self.screen_cost = sum(screen_cost(r) for r in self._results.values())
        self.counted = sum(r.counted for r in self._results.values())
        self.held_out_counted = sum(r.held_out_counted for r in self._results.values())
        self.evaluated = sum(1 for r in self._results.values() if r.counted)

    @classmethod
    def load(cls, archive: Archive, run: str) -> RunState:
        """The run as recorded (one read of genomes and evaluations)."""
        return cls(
            archive.genomes(run), archive.evaluations(run, log_tails_of_last=LOG_TAILS_LOADED),
            SourceCache(archive.source, load_many=archive.sources_by_sha256),
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
        old = self._results[evaluation.genome_id]
        before = old.counted
        self._evaluations.setdefault(evaluation.genome_id, {})[evaluation.eval_id] = evaluation
        self._refresh(evaluation.genome_id)
        new = self._results[evaluation.genome_id]
        after = new.counted
        self.held_out_counted += new.held_out_counted - old.held_out_counted
        if old.screens or new.screens:
            self.screen_cost += screen_cost(new) - screen_cost(old)
        self.counted += after - before
        self.evaluated += (after > 0) - (before > 0)

    def _add(self, genome: GenomeRecord) -> None:
        self._order[genome.genome_id] = len(self._genomes)
        self._ids.append(genome.genome_id)
        self._genomes[genome.genome_id] = genome
        self.normalized.add(genome.normalized_sha256)
        if self.seed_id is None and genome.operator == "seed":
            self.seed_id = genome.genome_id

    def _refresh(self, genome_id: str, bulk: bool = False) -> None:
        """Recompute one genome's verdict and its place in the indexes (``bulk``: the
        ranking is sorted once by the caller)."""
        old = self._results.get(genome_id)
        new = self._results[genome_id] = genome_result(
            self._genomes[genome_id], self._evaluations.get(genome_id, {}).values()
        )
        self._list = None
        if new.is_finished:
            self._unfinished.pop(genome_id, None)
        else:
            self._unfinished[genome_id] = None
        if new.screens:
            self._place_in_rung(genome_id, new, bulk)
        if old is not None and (old.val_bpb, old.n) == (new.val_bpb, new.n):
            return
        term = pooled_term(new)
        if term is None:
            self._pooled.pop(genome_id, None)
        else:
            self._pooled[genome_id] = term
        self._version += 1
        self._beliefs.mark(genome_id)
        key = self._rank_key.pop(genome_id, None)
        if key is not None:
            del self._ranked[bisect_left(self._ranked, key)]
        if new.is_complete:
            key = self._rank_key[genome_id] = (new.val_bpb, self._order[genome_id], genome_id)
            if bulk:
                self._ranked.append(key)
            else:
                insort(self._ranked, key)

    def _place_in_rung(self, genome_id: str, result: GenomeResult, bulk: bool) -> None:
        key = rung_key(result, self._order[genome_id])
        old = self._rung_key.get(genome_id)
        if key == old:
            return
        entry = (self._order[genome_id], genome_id)
        if old is not None:
            del self._rung_births[bisect_left(self._rung_births, entry)]
            del self._rung_key[genome_id]
        if key is not None:
            self._rung_key[genome_id] = key
            if bulk:
                self._rung_births.append(entry)
            else:
                insort(self._rung_births, entry)

    # ------------------------------------------------------------------ reads

    def promotion(self, eta: int, window: int) -> GenomeResult | None:
        """The screened genome to promote to a full evaluation now, if any: ASHA's rule, each
        genome ranked among the ``window`` screened up to itself (:func:`evo.screening.promotion`;
        costs ``O(window^2)``, whatever the run's size)."""
        births = self._rung_births[-(2 * window - 1):]
        latest = [self._rung_key[genome_id] for _, genome_id in births]
        return promotion(latest, window, eta, self._results.__getitem__, len(self._rung_births) - len(births))

    @property
    def screened(self) -> int:
        """Genomes with a finished screen (:mod:`evo.screening`)."""
        return len(self._rung_key)

    def spent(self) -> float:
        """Evaluations spent, in full-budget evaluations: those that count, held-out ones
        included, and the screens at their fidelity."""
        return self.counted + self.held_out_counted + self.screen_cost

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

    def unfinished(self) -> list[GenomeResult]:
        """Genomes not evaluated to an end (PENDING, RUNNING, INTERRUPTED), in birth order."""
        return [self._results[i] for i in sorted(self._unfinished, key=self._order.__getitem__)]

    def cohort(self, start: int, size: int) -> list[GenomeResult]:
        """The genomes of birth indexes ``start`` .. ``start + size - 1`` that exist."""
        return [self._results[i] for i in self._ids[start:start + size]]

    def seed(self) -> GenomeResult | None:
        """The run's seed genome (operator ``seed``), if recorded."""
        return None if self.seed_id is None else self._results[self.seed_id]

    def noise(self) -> NoiseEstimate | None:
        """The pooled noise floor (:func:`evo.noise.noise_estimate`), from the genomes with replicates."""
        return pooled_estimate(self._pooled[i] for i in sorted(self._pooled, key=self._order.__getitem__))

    def sigma(self) -> float | None:
        """The pooled sigma (bits/byte), ``None`` before any genome has 2 COMPLETE evaluations."""
        estimate = self.noise()
        return None if estimate is None else estimate.sigma

    def ranked(self, born_before: int | None = None) -> Iterator[GenomeResult]:
        """COMPLETE genomes, best val_bpb first (ties: older first); only those born before
        birth index ``born_before`` when given. A generator: take what you need."""
        for _, birth, genome_id in self._ranked:
            if born_before is None or birth < born_before:
                yield self._results[genome_id]

    def best(self, n: int, born_before: int | None = None) -> list[GenomeResult]:
        """The ``n`` COMPLETE genomes of lowest mean val_bpb (see :meth:`ranked`): what the
        operators' context shows. Survivors are ranked by posterior mean: :meth:`believed`."""
        chosen: list[GenomeResult] = []
        for r in self.ranked(born_before):
            if len(chosen) >= n:
                break
            chosen.append(r)
        return chosen

    def latest_complete(self, n: int) -> list[GenomeResult]:
        """The ``n`` most recently born COMPLETE genomes, oldest first."""
        chosen: list[GenomeResult] = []
        for genome_id in reversed(self._ids):
            if len(chosen) >= n:
                break
            if genome_id in self._rank_key:
                chosen.append(self._results[genome_id])
        return chosen[::-1]

    def latest_failed(self, n: int, scan: int = 1024) -> list[GenomeResult]:
        """Up to ``n`` of the most recently born genomes that FAILED or TIMED OUT, among the
        latest ``scan`` births (bounded), oldest first."""
        chosen: list[GenomeResult] = []
        for genome_id in reversed(self._ids[-scan:]):
            if len(chosen) >= n:
                break
            if self._results[genome_id].state in ("FAIL", "TIMEOUT"):
                chosen.append(self._results[genome_id])
        return chosen[::-1]

    @property
    def replicates(self) -> int:
        """Evaluations that count beyond each genome's first."""
        return self.counted - self.evaluated

    def verdict(self, best_replicates: int) -> Verdict:
        """What the readings say (:func:`evo.racing.judge` over :meth:`results` with the
        pooled sigma): the declared best, its probability, every genome's belief.

        Recomputed only after some genome's fitness changed, from beliefs kept ranked by
        :class:`evo.belief_index.BeliefIndex` (a cost per change that does not grow with
        the run).
        """
        key = (self._version, best_replicates)
        if self._verdict is None or self._verdict[0] != key:
            sigma = self.sigma()
            self._beliefs.refresh(self.results, self._results.__getitem__, self._order.__getitem__, sigma)
            first = next((i for i in self._ids if i in self._rank_key), None)
            verdict = judge_ranked(self._beliefs.beliefs, self._beliefs.ranked(), sigma, best_replicates, first)
            self._verdict = (key, verdict)
        return self._verdict[1]

    def incumbent(self, best_replicates: int) -> GenomeResult | None:
        """The declared best (:attr:`Verdict.best`), ``None`` before anything completed."""
        return self._result_or_none(self.verdict(best_replicates).best)

    def believed(self, n: int, best_replicates: int, born_before: int | None = None) -> list[GenomeResult]:
        """The ``n`` COMPLETE genomes of lowest posterior mean (ties: older first), only those
        born before birth index ``born_before`` when given: the survivors."""
        self.verdict(best_replicates)
        chosen: list[GenomeResult] = []
        for _, birth, genome_id in self._beliefs.ranked_keys():
            if len(chosen) >= n:
                break
            if born_before is None or birth < born_before:
                chosen.append(self._results[genome_id])
        return chosen

    def _result_or_none(self, genome_id: str | None) -> GenomeResult | None:
        return None if genome_id is None else self._results[genome_id]
