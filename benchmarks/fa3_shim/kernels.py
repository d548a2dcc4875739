"""A stand-in for Hugging Face's ``kernels`` package, so that karpathy/autoresearch's
``train.py`` runs where the kernel hub cannot be reached (a GPU machine without network).

autoresearch loads FlashAttention-3 with ``get_kernel(repo).flash_attn_interface`` and
calls ``flash_attn_func(q, k, v, causal=True, window_size=(left, right))``. Here every
repository name gives the same object, whose ``flash_attn_func`` computes the same
attention with PyTorch alone: ``scaled_dot_product_attention`` (its flash backend on CUDA)
for full causal attention, FlexAttention with a block mask built once per (length, window,
device) for sliding windows, so masked blocks are skipped. Slower than FA3 on a Hopper GPU
(so autoresearch measured this way is a lower bound on its speed), the same numbers.

Used by ``benchmarks/gpu_side_by_side.py``, which puts this folder first on PYTHONPATH.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

_BLOCK_MASKS: dict[tuple[int, int, str], object] = {}


def _window_block_mask(seq_len: int, left: int, device: torch.device) -> object:
    from torch.nn.attention.flex_attention import create_block_mask

    key = (seq_len, left, str(device))
    if key not in _BLOCK_MASKS:
        def allowed(b, h, q_idx, kv_idx):  # noqa: ANN001 -- flex_attention's mask_mod signature
            return (q_idx >= kv_idx) & (q_idx - kv_idx <= left)

        _BLOCK_MASKS[key] = create_block_mask(allowed, None, None, seq_len, seq_len, device=device)
    return _BLOCK_MASKS[key]


def flash_attn_func(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
    window_size: tuple[int, int] = (-1, -1), softmax_scale: float | None = None, **_: object,
) -> torch.Tensor:
    """FlashAttention's ``flash_attn_func`` on PyTorch: q (B, T, H, D), k and v (B, T, Hkv, D),
    H a multiple of Hkv; returns (B, T, H, D). ``window_size = (left, right)``: query i sees
    keys i - left .. i + right (-1: unbounded), as FlashAttention defines it; only causal
    attention (right 0) is supported, which is what autoresearch uses.

    Raises:
        NotImplementedError: non-causal attention.
    """
    if not causal:
        raise NotImplementedError("this stand-in computes causal attention only")
    left = window_size[0] if window_size is not None else -1
    seq_len = q.size(1)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
    gqa = k.size(1) != q.size(1)
    if left < 0 or left >= seq_len - 1:
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=softmax_scale, enable_gqa=gqa)
    else:
        from torch.nn.attention.flex_attention import flex_attention

        mask = _window_block_mask(seq_len, int(left), q.device)
        y = flex_attention(q, k, v, block_mask=mask, scale=softmax_scale, enable_gqa=gqa)
    return y.transpose(1, 2)


def get_kernel(repo_id: str, *args: object, **kwargs: object) -> types.SimpleNamespace:
    """The same PyTorch attention whatever FlashAttention build ``repo_id`` names."""
    interface = types.SimpleNamespace(flash_attn_func=flash_attn_func)
    return types.SimpleNamespace(flash_attn_interface=interface, flash_attn_func=flash_attn_func)
