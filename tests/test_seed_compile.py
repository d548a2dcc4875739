"""What can be checked of the seed's GPU path without a GPU: sliding windows through
FlexAttention equal the dense masked reference, the model compiles as one graph with no
recompilation across steps, and a failed compile on CUDA is an error."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import seed_train as seed  # noqa: E402

CPU = torch.device("cpu")


@pytest.mark.parametrize("seq_len, window", [(256, 64), (200, 100), (128, 1)])
def test_flex_attention_block_mask_equals_the_dense_masked_reference(seq_len, window):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, seq_len, 16) for _ in range(3))  # (B, H, T, D)
    dense = seed.windowed_attention(q, k, v, seed.sliding_window_mask(seq_len, window, CPU))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "called without torch.compile": the unfused reference kernel on CPU
        flex = seed.windowed_attention(q, k, v, seed.sliding_window_block_mask(seq_len, window, CPU))
    torch.testing.assert_close(flex, dense, atol=1e-5, rtol=1e-5)


def _model() -> seed.GPT:
    config = seed.GPTConfig(sequence_len=128, vocab_size=512, n_layer=3, n_head=2, n_embd=64, window_pattern="SSL")
    torch.manual_seed(0)
    model = seed.GPT(config)
    model.init_weights()
    assert model.windows == [64, 64, 128]  # two sliding-window layers
    return model


def test_the_model_with_flex_windows_gives_the_dense_models_logits():
    model = _model()
    idx = torch.randint(0, 512, (2, 128))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = model(idx)
        model.use_flex = True
        flex = model(idx)
    assert isinstance(next(iter(model.window_masks(128, CPU).values())), torch.nn.attention.flex_attention.BlockMask)
    torch.testing.assert_close(flex, dense, atol=1e-5, rtol=1e-5)


def _three_steps_as_one_graph(model: seed.GPT, device: torch.device, **compile_kwargs) -> None:
    """Compile with fullgraph=True (fails on any graph break) under error_on_recompile (fails
    on any recompilation) and take three training steps; each loss must be finite."""
    import torch._dynamo

    torch._dynamo.reset()
    # config.patch, not monkeypatch: monkeypatch's undo deletes the option from dynamo's
    # config module, and every later dynamo call in this process fails on it
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = torch.compile(model, fullgraph=True, **compile_kwargs)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        for step in range(3):
            idx, targets = (torch.randint(0, 512, (2, 128), device=device) for _ in range(2))
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = compiled(idx, targets)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            assert torch.isfinite(loss), step
    torch._dynamo.reset()


def test_the_model_compiles_as_one_graph_without_recompiling_across_steps():
    """aot_eager: the graph capture and autograd of Inductor without its code generation,
    which on CPU would take minutes of the suite."""
    _three_steps_as_one_graph(_model(), CPU, backend="aot_eager")


def test_a_failed_compile_on_cuda_is_an_error_not_a_silent_fallback():
    source = (REPO / "seed_train.py").read_text()
    block = source[source.index('    if device.type == "cuda":\n        # torch.compile'):source.index("    return Run(")]
    assert "sys.exit(1)" in block and "running eager" not in block
    # the block masks are built (flex on) before compilation, not lazily inside the traced graph
    assert block.index("model.use_flex = any(") < block.index("model.window_masks(MAX_SEQ_LEN, device)")
    assert 'print(f"compiled: {int(run.train_model is not run.model)}")' in source  # the summary says so


# ---------------------------------------------------------------------------- on a GPU
# Skipped without CUDA (CI, this project's machines); benchmarks/gpu_lease.sh runs them on a
# lent GPU: the compiled FlexAttention kernel, not the CPU reference, against the dense mask.

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@CUDA
@pytest.mark.parametrize("seq_len, window", [(2048, 1024), (1000, 333)])
def test_compiled_flex_attention_on_cuda_equals_the_dense_masked_reference(seq_len, window):
    from torch.nn.attention.flex_attention import flex_attention

    gpu = torch.device("cuda")
    gen = torch.Generator(device=gpu).manual_seed(0)
    q, k, v = (torch.randn(2, 4, seq_len, 64, device=gpu, dtype=torch.bfloat16, generator=gen) for _ in range(3))
    dense = seed.windowed_attention(q.float(), k.float(), v.float(), seed.sliding_window_mask(seq_len, window, gpu))
    flex = torch.compile(flex_attention, fullgraph=True)(q, k, v, block_mask=seed.sliding_window_block_mask(seq_len, window, gpu))
    rel = (flex.float() - dense).norm() / dense.norm()
    assert torch.isfinite(flex).all() and rel < 1e-2, float(rel)  # bf16 operands: 1e-3..1e-2


@pytest.mark.gpu
@CUDA
def test_the_model_compiles_with_inductor_on_cuda_as_one_graph_without_recompiling():
    gpu = torch.device("cuda")
    model = _model().to(gpu)
    model.use_flex = True
    model.window_masks(128, gpu)  # built before compilation, as the seed does
    _three_steps_as_one_graph(model, gpu)
