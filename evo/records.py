"""Immutable records read from the archive, and the evaluation state machine.

Like optuna's FrozenTrial: a record is a snapshot; state changes only through
:class:`evo.archive.Archive`.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class EvalState(str, enum.Enum):
    """Lifecycle of one evaluation (one process training one genome).

    ``RUNNING`` is written before the process starts; it is finished exactly once, into
    ``COMPLETE`` (a summary with a finite val_bpb), ``FAIL`` (crash, out of memory, NaN,
    no summary), ``TIMEOUT`` (killed at the wall-clock limit) or ``INTERRUPTED`` (the
    engine stopped, by Ctrl-C or a kill, before the process finished; the genome is
    evaluated again on resume and the interrupted attempt is never counted).
    """

    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"
    FAIL = "FAIL"
    TIMEOUT = "TIMEOUT"
    INTERRUPTED = "INTERRUPTED"

    @property
    def is_finished(self) -> bool:
        return self is not EvalState.RUNNING


class FailureKind(str, enum.Enum):
    """Why an evaluation did not complete."""

    CRASH = "crash"
    OOM = "oom"
    NAN = "nan"
    TIMEOUT = "timeout"
    NO_SUMMARY = "no_summary"
    INTERRUPTED = "interrupted"
    UNVERIFIABLE = "unverifiable"  # the trusted evaluator could not score its exported model
    OVERTIME = "overtime"  # ran past the time budget plus the run's start-up allowance


def state_label(state: str, failure_kind: str | None) -> str:
    """A genome's state for people: ``FAIL (crash)``, or the state alone where the kind
    repeats it (``INTERRUPTED``, not ``INTERRUPTED (interrupted)``; ``TIMEOUT``)."""
    return f"{state} ({failure_kind})" if failure_kind and failure_kind != state.lower() else state


# The summary keys of the genome contract, in the order a genome prints them, and the
# printed val_bpb kept beside the trusted one.
SUMMARY_KEYS = (
    "val_bpb",
    "reported_val_bpb",
    "training_seconds",
    "total_seconds",
    "peak_vram_mb",
    "mfu_percent",
    "total_tokens_M",
    "num_steps",
    "num_params_M",
    "depth",
)


@dataclass(frozen=True)
class RunRecord:
    """One run: a name, its profile and its frozen configuration (JSON)."""

    run: str
    created_at: datetime
    profile: str
    dataset: str
    time_budget_s: float
    project_dir: str
    config_json: str
    harness_sha256: str | None = None
    evaluator_version: str | None = None


@dataclass(frozen=True)
class GenomeRecord:
    """One genome: a source file and how it came to be.

    Attributes:
        genome_id: ``g0000``-style id, unique within its run, in creation order.
        generation: 0 for the seed and its first mutants.
        operator: the mutation operator that made it (``seed`` for the seed genome).
        description: one human line, e.g. ``MATRIX_LR 0.04 -> 0.05``.
        source_sha256: key of the exact source in the sources table.
        normalized_sha256: hash of the source with comments and formatting removed, used
            to reject children that were already evaluated.
        parents: genome ids this one was made from (empty for the seed).
    """

    run: str
    genome_id: str
    generation: int
    operator: str
    description: str
    source_sha256: str
    normalized_sha256: str
    created_at: datetime
    parents: tuple[str, ...] = ()


@dataclass(frozen=True)
class EvaluationRecord:
    """One attempt at training and scoring a genome.

    Attributes:
        eval_id: archive-wide id, increasing.
        attempt: 1 for the first attempt at this genome, 2 after an interruption, ...
        metrics: every ``key: value`` line of the summary block (floats); in a trusted run
            ``val_bpb`` is the trusted evaluator's and the printed one is ``reported_val_bpb``.
        wall_s: wall-clock seconds of the whole process, measured by the engine.
        seed: the ``EVO_SEED`` the genome process was given.
        sandbox: what confined the genome (``bwrap`` or ``none``).
        held_out: a held-out evaluation of the declared best, taken after the search ended
            and never used to choose (:mod:`evo.held_out`).
        fidelity: the share of the run's time budget it trained for: 1.0 for a full
            evaluation, less for a screen (:mod:`evo.screening`), which is compared only
            with other screens.
    """

    eval_id: int
    run: str
    genome_id: str
    attempt: int
    state: EvalState
    started_at: datetime
    finished_at: datetime | None
    seed: int
    device: str
    log_path: str
    wall_s: float | None = None
    returncode: int | None = None
    failure_kind: str | None = None
    error: str | None = None
    log_tail: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    sandbox: str | None = None
    held_out: bool = False
    fidelity: float = 1.0

    @property
    def is_screen(self) -> bool:
        """A screening evaluation at a fraction of the budget (:mod:`evo.screening`)."""
        return self.fidelity < 1.0

    @property
    def val_bpb(self) -> float | None:
        """The fitness: the trusted evaluator's val_bpb (the printed one in a ``reported`` run)."""
        value = self.metrics.get("val_bpb")
        return value if value is not None and math.isfinite(value) else None

    @property
    def reported_val_bpb(self) -> float | None:
        """What the genome printed as its val_bpb, when a trusted evaluator scored it."""
        value = self.metrics.get("reported_val_bpb")
        return value if value is not None and math.isfinite(value) else None

    @property
    def overhead_s(self) -> float | None:
        """Wall seconds not spent training: start-up, compilation, evaluation, engine."""
        training = self.metrics.get("training_seconds")
        if self.wall_s is None or training is None:
            return None
        return self.wall_s - training


@dataclass(frozen=True)
class Outcome:
    """What running a genome produced; the archive turns it into a finished evaluation."""

    state: EvalState
    wall_s: float
    returncode: int | None
    metrics: dict[str, float]
    failure_kind: FailureKind | None
    error: str | None
    log_tail: str

    def as_row(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "wall_s": self.wall_s,
            "returncode": self.returncode,
            "failure_kind": self.failure_kind.value if self.failure_kind else None,
            "error": self.error,
            "log_tail": self.log_tail,
        }


@dataclass(frozen=True)
class LLMCallRecord:
    """One call to the LLM mutation operator's model, failed or not.

    Attributes:
        call_id: archive-wide id, increasing.
        parent_id: the genome the call proposed a change to.
        round: 1 for the first answer, 2 for the repair round.
        outcome: ``ok`` (a new, valid child), or why not: ``bad_answer``, ``apply_error``,
            ``invalid``, ``duplicate``, ``refusal``, ``truncated``, ``timeout``,
            ``rate_limited``, ``overloaded``, ``server_error``, ``connection_error``, ``api_error``.
        cost_usd: from the token counts and the model's price.
        child_sha256: source hash of the child the answer produced (``ok`` only).
        child_id: the genome recorded from that child, if the engine recorded it (derived
            from ``child_sha256`` and the lineage, never stored twice).
    """

    call_id: int
    run: str
    parent_id: str
    model: str
    round: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_s: float
    outcome: str
    error: str | None
    child_sha256: str | None
    created_at: datetime
    child_id: str | None = None


@dataclass(frozen=True)
class TimeSplit:
    """Medians, in seconds, over ``evaluations`` COMPLETE evaluations (``Archive.time_split``)."""

    evaluations: int
    wall_s: float | None
    training_s: float | None
    startup_s: float | None
    eval_s: float | None
    trusted_eval_s: float | None
