"""benchmarks/gpu_side_by_side.py, checked without a GPU: the FlashAttention stand-in equals
masked attention, and the script runs evo's seed and an autoresearch-style train.py (which
imports `kernels`) on the smoke profile and reports both summaries."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
# the stand-in for Hugging Face's `kernels`, loaded under another name so it shadows nothing
_spec = importlib.util.spec_from_file_location("fa3_shim_kernels", BENCHMARKS / "fa3_shim" / "kernels.py")
kernels = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kernels)


def _reference(q, k, v, left: int) -> torch.Tensor:
    """Masked softmax attention, (B, T, H, D) in and out; query i sees keys i - left .. i."""
    B, T, H, D = q.shape
    k = k.repeat_interleave(H // k.size(2), dim=2)
    v = v.repeat_interleave(H // v.size(2), dim=2)
    scores = torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(D)
    i = torch.arange(T)
    dist = i[:, None] - i[None, :]
    allowed = (dist >= 0) & ((dist <= left) if left >= 0 else True)
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v)


@pytest.mark.parametrize("left", [-1, 15, 0, 200])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_the_stand_in_computes_flash_attention_with_its_window_semantics(left, kv_heads):
    torch.manual_seed(0)
    q = torch.randn(2, 160, 4, 16)
    k, v = torch.randn(2, 160, kv_heads, 16), torch.randn(2, 160, kv_heads, 16)
    fa3 = kernels.get_kernel("varunneal/flash-attention-3").flash_attn_interface
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex attention without torch.compile: the reference kernel
        y = fa3.flash_attn_func(q, k, v, causal=True, window_size=(left, 0))
    assert y.shape == q.shape
    torch.testing.assert_close(y, _reference(q, k, v, left), atol=1e-4, rtol=1e-4)
    with pytest.raises(NotImplementedError):
        fa3.flash_attn_func(q, k, v, causal=False)


FAKE_AUTORESEARCH = textwrap.dedent("""\
    import torch
    from kernels import get_kernel
    from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, evaluate_bpb, make_dataloader

    fa3 = get_kernel("kernels-community/flash-attn3").flash_attn_interface
    q = torch.randn(1, 32, 2, 8)
    y = fa3.flash_attn_func(q, q, q, causal=True, window_size=(MAX_SEQ_LEN // 2, 0))
    assert y.shape == q.shape and torch.isfinite(y).all()
    print("---")
    print("val_bpb: 2.500000")
    print(f"training_seconds: {TIME_BUDGET:.1f}")
    print("total_tokens_M: 0.600")
    print("num_steps: 3")
    """)


def test_side_by_side_runs_both_scripts_and_reports_their_summaries(tmp_path, monkeypatch, capsys):
    import gpu_side_by_side

    ar = tmp_path / "elsewhere" / "train.py"
    ar.parent.mkdir()
    ar.write_text(FAKE_AUTORESEARCH)
    monkeypatch.setenv("EVO_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "out"
    status = gpu_side_by_side.main(["--autoresearch", str(ar), "--profile", "smoke", "--budget", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert status == 0, printed[-3000:]
    report = json.loads((out / "side_by_side.json").read_text())
    seed, other = report["results"]["evo_seed"], report["results"]["autoresearch"]
    assert report["profile"] == "smoke" and report["budget_s"] == 2.0
    assert seed["exit_status"] == 0 and 0 < seed["val_bpb"] < math.log2(512) and seed["training_seconds"] >= 2.0
    assert seed["tokens_per_s"] == pytest.approx(seed["total_tokens_M"] * 1e6 / seed["training_seconds"])
    assert other["val_bpb"] == 2.5 and other["tokens_per_s"] == pytest.approx(0.6e6 / 2.0)
    assert other["train_py_sha256"] == hashlib.sha256(FAKE_AUTORESEARCH.encode()).hexdigest()
    assert f"autoresearch train.py sha256 {other['train_py_sha256']}" in printed
    assert (out / "autoresearch" / "kernels.py").is_file() and (out / "evo_seed.log").is_file()
    table = printed[printed.index("smoke profile, sotu"):]
    assert "evo_seed" in table and "autoresearch" in table and "tokens_per_s" in table
