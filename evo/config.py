"""Plain-value configuration: profiles' seed overrides, run settings, project paths.

Nothing here holds a live object (no clients, no connections): a :class:`RunConfig`
is frozen, serialisable to JSON and stored in the archive with its run.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROFILES = ("gpu", "cpu", "smoke")
FITNESS_MODES = ("trusted", "reported")  # see evo.evaluation
SANDBOX_MODES = ("auto", "bwrap", "none")  # see evo.sandbox
SELECTIONS = ("tournament", "rank")
DATASETS = ("sotu", "climbmix", "tinystories")


def default_dataset(profile: str) -> str:
    """The corpus a run uses unless ``--dataset`` says otherwise: climbmix (autoresearch's
    pretraining shards, downloaded on first use) on the gpu profile, where the 2.3 M-token
    sotu corpus would be passed over hundreds of times in one 5-minute budget; sotu
    (embedded, offline) on the cpu and smoke profiles."""
    return "climbmix" if profile == "gpu" else "sotu"

# Hyperparameter values that make the generation-0 genome fit a profile. The seed genome
# is sized for an H100 (the gpu profile); these are written into its ALL_CAPS block with
# libcst (evo.operators.cst_tools.set_constants) before anything runs. Chosen by
# measurement on a 2-core CPU (fp32: bf16 autocast was 10x slower there): the cpu
# overrides give a 2-layer, 64-wide model (0.49 M parameters with its value embeddings)
# that reaches about 1.48-1.49 bits/byte in 30 s on sotu on an idle machine (2026-12-01);
# smoke keeps "SSSL" so tests cover sliding windows.
SEED_OVERRIDES: dict[str, dict[str, Any]] = {
    "gpu": {},
    "cpu": {
        "DEPTH": 2, "ASPECT_RATIO": 32, "HEAD_DIM": 32, "WINDOW_PATTERN": "L",
        "TOTAL_BATCH_SIZE": 2**11, "DEVICE_BATCH_SIZE": 16, "FINAL_EVAL_BATCH_SIZE": 128,
    },
    "smoke": {
        "DEPTH": 2, "ASPECT_RATIO": 32, "HEAD_DIM": 32,
        "TOTAL_BATCH_SIZE": 2**10, "DEVICE_BATCH_SIZE": 16, "FINAL_EVAL_BATCH_SIZE": 128,
    },
}

# The default mix of mutation operators (name -> weight); see evo.operators.REGISTRY.
DEFAULT_OPERATORS = {"optuna": 0.6, "hyperparam": 0.25, "crossover": 0.15}
# what `evo resume` may change of a run, stored with it (Archive.update_run_config)
RESUME_FIELDS = frozenset({"generations", "max_evaluations", "max_llm_cost_usd", "llm_model", "llm_price", "llm_base_url",
                           "sandbox"})

# The LLM operator's default model: the current Sonnet (a model id of the anthropic SDK).
DEFAULT_LLM_MODEL = "claude-sonnet-5-5"

# Constants no operator perturbs: they change how a genome is measured, not what it learns.
FROZEN_CONSTANTS = frozenset({"FINAL_EVAL_BATCH_SIZE"})

# Valid values for string constants: an operator only ever picks among these.
STRING_CHOICES: dict[str, tuple[str, ...]] = {
    "WINDOW_PATTERN": ("L", "SL", "SSL", "SLL", "SSSL", "SSLL", "SLSL", "LLLL"),
}


@dataclass(frozen=True)
class Paths:
    """Where a project's files live.

    Attributes:
        project_dir: folder holding ``prepare.py``, ``seed_train.py``, ``program.md``.
        archive_path: the DuckDB file (default ``<project>/archive/evo.duckdb``).
    """

    project_dir: Path
    archive_path: Path

    @classmethod
    def for_project(cls, project_dir: str | Path, archive: str | Path | None = None) -> Paths:
        project = Path(project_dir).resolve()
        archive_path = Path(archive).resolve() if archive else project / "archive" / "evo.duckdb"
        return cls(project_dir=project, archive_path=archive_path)

    @property
    def prepare_py(self) -> Path:
        return self.project_dir / "prepare.py"

    @property
    def seed_genome(self) -> Path:
        return self.project_dir / "seed_train.py"

    @property
    def program_md(self) -> Path:
        return self.project_dir / "program.md"

    def genome_dir(self, run: str) -> Path:
        return self.project_dir / "genomes" / run


@dataclass(frozen=True)
class RunConfig:
    """Settings of one run, fixed when it starts and stored with it in the archive.

    Attributes:
        run: the run's name (unique in an archive).
        profile: ``gpu``, ``cpu`` or ``smoke``; val_bpb is compared only within one.
        dataset: the harness's corpus (``sotu`` offline default, ``climbmix``, ``tinystories``).
        population: mu, the number of survivors, and lambda, the children per generation.
        generations: stop after this many generations (``None``: until interrupted).
        time_budget_s: training seconds each genome gets (``None``: the profile's).
        wall_limit_s: hard wall-clock limit per genome process, seconds (``None``: derived).
        seed: random seed of the engine (selection and mutation), and base of genome seeds.
        tournament_size: contestants per tournament when selecting a parent.
        mutation_attempts: tries to produce a child whose source was never evaluated.
        operators: mutation operator name -> weight.
        seed_genome: path of the seed genome file, read while generation 0 has no genome.
        max_evaluations: stop once this many evaluations were counted (``None``: no limit).
        noise_replicates: evaluations of the seed genome, with different EVO_SEEDs, that
            measure the noise floor sigma (1 turns noise awareness off).
        best_replicates: evaluations a genome needs before it is declared the run's best.
        held_out_replicates: held-out evaluations of the declared best when the search ends
            (:mod:`evo.held_out`; 0: none).
        screen_fraction: screening (:mod:`evo.screening`): a new child first trains for this
            share of the time budget, in (0, 1), and only the best ``1 / screen_eta`` of the
            screened children are promoted to a full evaluation; 0: off (every child is
            evaluated in full).
        screen_eta: ASHA's reduction factor (>= 2).
        selection: parent selection, ``tournament`` or ``rank``.
        max_children_per_parent: children one parent may get per generation (``None``:
            ``max(2, population // 2)``).
        sampler: the optuna operator's sampler, ``gp`` (default), ``tpe`` or ``cmaes``.
        llm_model: the LLM operator's Claude model.
        llm_base_url: the Messages API's address (``None``: ``ANTHROPIC_BASE_URL`` or the public API).
        llm_price: ``(input, output)`` USD per million tokens, for a model evo has no price for.
        max_llm_cost_usd: hard cap on the run's LLM spend (``None``: no cap).
        llm_rewrite: the LLM answers with the whole file instead of SEARCH/REPLACE edits.
        llm_timeout_s: limit of one LLM HTTP attempt, seconds; a child waits at most twice
            that for the LLM, retries and the repair round included.
        llm_max_retries: retries of LLM timeouts, 429, 529 and 5xx (with backoff).
        llm_max_tokens: the longest LLM answer, tokens.
        proposal_workers: children proposed ahead in threads while genomes train (0: none).
        fitness: ``trusted`` (evo's evaluator scores the model a genome exports) or
            ``reported`` (the val_bpb a genome prints is its fitness: synthetic benchmarks
            and tests only).
        sandbox: ``auto`` (bubblewrap where it works, else none with a warning), ``bwrap``
            (required) or ``none``.
        max_memory_mb: memory limit of one genome's processes, MiB (``None``: 80% of RAM).
        max_processes: processes one genome may have at once.
        max_file_size_mb: the largest file a genome may write, MiB.
    """

    run: str
    profile: str
    seed_genome: str = "seed_train.py"
    dataset: str = "sotu"
    population: int = 8
    generations: int | None = None
    time_budget_s: float | None = None
    wall_limit_s: float | None = None
    seed: int = 0
    tournament_size: int = 3
    mutation_attempts: int = 20
    operators: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_OPERATORS))
    max_evaluations: int | None = None
    noise_replicates: int = 2
    best_replicates: int = 2
    held_out_replicates: int = 2
    screen_fraction: float = 0.0
    screen_eta: int = 3
    selection: str = "tournament"
    max_children_per_parent: int | None = None
    sampler: str = "gp"
    llm_model: str = DEFAULT_LLM_MODEL
    llm_base_url: str | None = None
    llm_price: tuple[float, float] | None = None
    max_llm_cost_usd: float | None = None
    llm_rewrite: bool = False
    llm_timeout_s: float = 120.0
    llm_max_retries: int = 3
    llm_max_tokens: int = 16384
    proposal_workers: int = 4
    fitness: str = "trusted"
    sandbox: str = "auto"
    max_memory_mb: int | None = None
    max_processes: int = 1024
    max_file_size_mb: int = 16384

    def __post_init__(self) -> None:
        if self.fitness not in FITNESS_MODES:
            raise ValueError(f"unknown fitness {self.fitness!r}; choose one of {', '.join(FITNESS_MODES)}")
        if self.sandbox not in SANDBOX_MODES:
            raise ValueError(f"unknown sandbox {self.sandbox!r}; choose one of {', '.join(SANDBOX_MODES)}")
        if self.max_processes < 8 or self.max_file_size_mb < 1 or (self.max_memory_mb is not None and self.max_memory_mb < 64):
            raise ValueError("genome limits too small: max_processes >= 8, max_file_size_mb >= 1, max_memory_mb >= 64")
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; choose one of {', '.join(PROFILES)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.population < 1:
            raise ValueError(f"population must be >= 1, got {self.population}")
        if self.generations is not None and self.generations < 1:
            raise ValueError(f"generations must be >= 1, got {self.generations}")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise ValueError(f"time budget must be > 0 seconds, got {self.time_budget_s}")
        if self.noise_replicates < 1 or self.best_replicates < 1:
            raise ValueError(f"--noise-replicates and --best-replicates must be >= 1, got {self.noise_replicates} and "
                             f"{self.best_replicates}")
        if self.held_out_replicates < 0:
            raise ValueError(f"--held-out must be >= 0, got {self.held_out_replicates}")
        if not 0.0 <= self.screen_fraction < 1.0:
            raise ValueError(f"screen fraction must be in [0, 1) (0: no screening), got {self.screen_fraction:g}")
        if self.screen_eta < 2:
            raise ValueError(f"screen eta must be >= 2, got {self.screen_eta}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown selection {self.selection!r}; choose one of {', '.join(SELECTIONS)}")
        if not self.operators or any(w < 0 for w in self.operators.values()) or sum(self.operators.values()) <= 0:
            raise ValueError(f"operator weights must be >= 0 with a positive sum, got {self.operators}")
        if self.llm_timeout_s <= 0:
            raise ValueError(f"--llm-timeout must be > 0 seconds, got {self.llm_timeout_s:g}")

    @property
    def children_cap(self) -> int:
        """Children one parent may get in one generation."""
        if self.max_children_per_parent is not None:
            return self.max_children_per_parent
        return max(2, self.population // 2)

    def held_out_reserve(self) -> int:
        """Evaluations of ``max_evaluations`` kept for the held-out ones: ``held_out_replicates``,
        or none when they would take more than a quarter of the run (or without a limit)."""
        if self.max_evaluations is None or 4 * self.held_out_replicates > self.max_evaluations:
            return 0
        return self.held_out_replicates

    @property
    def screen_window(self) -> int:
        """The screened genomes a promotion is ranked among: the latest ``screen_eta x
        population`` (:mod:`evo.screening`)."""
        return self.screen_eta * self.population

    @property
    def screening(self) -> bool:
        """Whether new children are screened at ``screen_fraction`` of the budget first."""
        return self.screen_fraction > 0.0

    def effective_wall_limit_s(self, time_budget_s: float) -> float:
        """Hard wall-clock limit for one genome process, in seconds.

        Twice the training budget plus two minutes for start-up, compilation and the final
        evaluation, unless ``wall_limit_s`` was given (autoresearch kills at 10 min for 5).
        """
        if self.wall_limit_s is not None:
            return self.wall_limit_s
        return 2.0 * time_budget_s + 120.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
