"""The runs of an archive at a glance: counts per run, the default run, a run's state.

Every verb that takes ``--run NAME`` defaults to the same run, :func:`default_run`:
the most recently created run in which a genome other than the seed has a COMPLETE
evaluation (the run got past its seed: at least one child was scored). A run whose seed
failed, or a start that was stopped before a child finished, never becomes the default
over a run that produced results; when no run qualifies, the most recent run is the
default (so a first run can be watched from its very start).

A run's state (:func:`run_state`), as ``evo runs`` shows it:

* ``running``: an engine holds the run's lock (:mod:`evo.locking`) now;
* ``failed-seed``: the seed genome has no COMPLETE evaluation and a failed one (FAIL or
  TIMEOUT): the search never started;
* ``finished``: the run reached its end: ``--max-evaluations`` evaluations counted (a
  screen as its fidelity, :mod:`evo.screening`; less than one full evaluation left), or
  all ``population x generations`` genomes born and every one evaluated (with the seed's
  noise replicates), and the declared best's held-out evaluations (:mod:`evo.held_out`)
  done after the search's last one; a resume may still add a replicate the noise-aware
  rule asks for;
* ``stopped``: anything else: stopped by Ctrl-C or a crash, or never limited
  (``--generations`` unset); ``evo resume`` continues it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from evo.config import RunConfig
from evo.records import RunRecord

RUN_STATES = ("running", "stopped", "finished", "failed-seed")
_COUNTED = "('COMPLETE', 'FAIL', 'TIMEOUT')"


@dataclass(frozen=True)
class RunSummary:
    """One run at a glance, aggregated in SQL by :meth:`evo.archive.Archive.run_summaries`.

    Attributes:
        record: the run.
        genomes: genomes recorded.
        evaluations: evaluations that count (COMPLETE, FAIL, TIMEOUT; replicates included).
        running: evaluations recorded RUNNING (an engine is at work, or died before it
            could mark them; the run's lock tells the two apart).
        unfinished: genomes without an evaluation that counts.
        seed_complete, seed_failed: COMPLETE and FAIL/TIMEOUT evaluations of the seed genome.
        child_complete: COMPLETE evaluations of genomes other than the seed.
        spent: ``evaluations`` in full-budget evaluations (a screen counts its fidelity,
            :mod:`evo.screening`): what ``--max-evaluations`` limits.
        held_out_tail: held-out evaluations that count, recorded after the last search
            evaluation that counts (those of the search's final declared best).
    """

    record: RunRecord
    genomes: int
    evaluations: int
    running: int
    unfinished: int
    seed_complete: int
    seed_failed: int
    child_complete: int
    spent: float = 0.0
    held_out_tail: int = 0

    @property
    def run(self) -> str:
        return self.record.run


def summary_sql(run_columns: Sequence[str]) -> str:
    """The query of :meth:`~evo.archive.Archive.run_summaries`: per run, ``run_columns`` of
    the ``runs`` table, then the counts in :class:`RunSummary`'s field order; oldest first."""
    return f"""
WITH
g AS (SELECT run, COUNT(*) AS genomes FROM genomes GROUP BY run),
e AS (
    SELECT e.run,
        COUNT(*) FILTER (WHERE e.state IN {_COUNTED}) AS evaluations,
        COUNT(*) FILTER (WHERE e.state = 'RUNNING') AS running,
        COUNT(*) FILTER (WHERE e.state = 'COMPLETE' AND g.operator = 'seed') AS seed_complete,
        COUNT(*) FILTER (WHERE e.state IN ('FAIL', 'TIMEOUT') AND g.operator = 'seed') AS seed_failed,
        COUNT(*) FILTER (WHERE e.state = 'COMPLETE' AND g.operator <> 'seed') AS child_complete,
        SUM(coalesce(e.fidelity, 1.0)) FILTER (WHERE e.state IN {_COUNTED}) AS spent
    FROM evaluations e JOIN genomes g ON g.run = e.run AND g.genome_id = e.genome_id
    GROUP BY e.run
),
counted AS (SELECT DISTINCT run, genome_id FROM evaluations WHERE state IN {_COUNTED}),
u AS (
    SELECT g.run, COUNT(*) AS unfinished FROM genomes g
    ANTI JOIN counted c ON c.run = g.run AND c.genome_id = g.genome_id
    GROUP BY g.run
),
last_search AS (
    SELECT run, MAX(eval_id) AS eval_id FROM evaluations
    WHERE state IN {_COUNTED} AND NOT coalesce(held_out, false) GROUP BY run
),
h AS (
    SELECT e.run, COUNT(*) AS held_out_tail FROM evaluations e LEFT JOIN last_search l ON l.run = e.run
    WHERE e.state IN {_COUNTED} AND coalesce(e.held_out, false) AND e.eval_id > coalesce(l.eval_id, -1)
    GROUP BY e.run
)
SELECT {", ".join(f"r.{c}" for c in run_columns)},
    COALESCE(g.genomes, 0), COALESCE(e.evaluations, 0), COALESCE(e.running, 0), COALESCE(u.unfinished, 0),
    COALESCE(e.seed_complete, 0), COALESCE(e.seed_failed, 0), COALESCE(e.child_complete, 0), COALESCE(e.spent, 0),
    COALESCE(h.held_out_tail, 0)
FROM runs r
LEFT JOIN g ON g.run = r.run LEFT JOIN e ON e.run = r.run LEFT JOIN u ON u.run = r.run LEFT JOIN h ON h.run = r.run
ORDER BY r.created_at, r.run
"""


def default_run(summaries: Sequence[RunSummary]) -> RunSummary | None:
    """The run a verb uses without ``--run`` (module docstring), ``None`` when there is none.

    Args:
        summaries: every run, oldest first.
    """
    scored = [s for s in summaries if s.child_complete > 0]
    if scored:
        return scored[-1]
    return summaries[-1] if summaries else None


def run_state(summary: RunSummary, engine_running: bool) -> str:
    """One of :data:`RUN_STATES` (module docstring).

    Args:
        summary: the run's counts.
        engine_running: whether an engine holds the run's lock now.
    """
    if engine_running:
        return "running"
    if summary.seed_complete == 0 and summary.seed_failed > 0:
        return "failed-seed"
    config = RunConfig.from_json(summary.record.config_json)
    if summary.running == 0:
        # the scheduler's rule (Scheduler.out_of_evaluations): less than one full evaluation left
        if config.max_evaluations is not None and config.max_evaluations - summary.spent < 1.0 - 1e-9:
            return "finished"
        replicates = summary.seed_complete + summary.seed_failed
        seed_done = summary.seed_complete == 0 or replicates >= config.noise_replicates
        held_out_done = summary.seed_complete == 0 or summary.held_out_tail >= config.held_out_replicates
        if (config.generations is not None and summary.genomes >= config.population * config.generations
                and summary.unfinished == 0 and seed_done and held_out_done):
            return "finished"
    return "stopped"
