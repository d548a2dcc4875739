"""
evo seed genome: single-file, single-device GPT pretraining.

Trains a small GPT for TIME_BUDGET seconds of training time on the data of the
fixed harness (prepare.py), scores it with the harness's evaluate_bpb and prints
a `---` summary block. The architecture and optimizer follow karpathy/nanochat
and karpathy/autoresearch, which follow Keller Jordan's modded-nanogpt.

Usage: python seed_train.py   (the profile comes from EVO_PROFILE, read by prepare.py)
"""

from __future__ import annotations

import contextlib
import gc
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, evaluate_bpb, make_dataloader

# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


@dataclass
class GPTConfig:
    sequence_len: int = 2048
    vocab_size: int = 8192
    n_layer: int = 8
    n_head: int = 4
    n_embd: int = 512
    window_pattern: str = "SSSL"
    logit_softcap: float = 15.0


def norm(x: torch.Tensor) -> torch.Tensor:
    # RMSNorm (Zhang & Sennrich 2019) with no learnable gain, as in modded-nanogpt:
    # cheaper than LayerNorm and the gain is redundant before a linear layer.
    return F.rms_norm(x, (x.size(-1),)).type_as(x)


def rotary_tables(seq_len: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    # RoPE (Su et al. 2021, RoFormer): rotating channel pairs by a position-dependent
    # angle makes q.k depend only on the relative position. Returns (1, T, 1, D/2) each.
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, T, H, D); the two halves of the head are the pair coordinates
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


def window_sizes(config: GPTConfig) -> list[int]:
    # Sliding-window attention per layer (the S/L pattern of nanochat): S = half the
    # context, L = full; the pattern cycles over layers and the last layer is always L
    # so the output sees everything. Characters other than S count as L.
    pattern = str(config.window_pattern).upper() or "L"
    long_w, short_w = config.sequence_len, max(1, config.sequence_len // 2)
    sizes = [short_w if pattern[i % len(pattern)] == "S" else long_w for i in range(config.n_layer)]
    sizes[-1] = long_w
    return sizes


def has_value_embedding(layer: int, n_layer: int) -> bool:
    # Value embeddings (modded-nanogpt, nanochat, autoresearch): every other layer, counted
    # back from the last (which always has one), adds a second embedding of the input tokens
    # to its attention values; cheap parameters (a lookup) that re-inject the token identity.
    return layer % 2 == (n_layer - 1) % 2


def sliding_window_mask(seq_len: int, window: int, device: torch.device) -> torch.Tensor:
    # (T, T) bool, True = may attend: causal and at most `window` tokens back (self included)
    i = torch.arange(seq_len, device=device)
    dist = i[:, None] - i[None, :]
    return (dist >= 0) & (dist < window)


def sliding_window_block_mask(seq_len: int, window: int, device: torch.device) -> object:
    # The same mask for FlexAttention (PyTorch's torch.nn.attention.flex_attention, Dong et
    # al. 2024): a BlockMask lists which (128 x 128) blocks hold any allowed pair, so the
    # kernel skips the blocks a dense boolean mask would compute and throw away (a dense
    # attn_mask also rules out SDPA's flash backend). Built once per (length, window).
    from torch.nn.attention.flex_attention import create_block_mask

    def allowed(b, h, q_idx, kv_idx):  # noqa: ANN001 -- flex_attention's mask_mod signature
        return (q_idx >= kv_idx) & (q_idx - kv_idx < window)

    return create_block_mask(allowed, None, None, seq_len, seq_len, device=device)


def windowed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: object) -> torch.Tensor:
    # q, k, v: (B, H, T, D); mask: a dense (T, T) bool mask or a flex BlockMask of the same pairs
    if isinstance(mask, torch.Tensor):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    from torch.nn.attention.flex_attention import flex_attention

    return flex_attention(q, k, v, block_mask=mask)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, window: int, value_embedding: bool) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.window = window
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)
        # per-head gate of the value embedding, read from the first channels of the input:
        # 2 * sigmoid(.), zero-initialized, so every gate starts at 1
        self.gate_channels = min(32, config.n_embd)
        self.ve_gate = nn.Linear(self.gate_channels, config.n_head, bias=False) if value_embedding else None

    def forward(
        self, x: torch.Tensor, ve: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor, masks: dict
    ) -> torch.Tensor:
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if ve is not None and self.ve_gate is not None:  # ve: (B, T, C)
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., : self.gate_channels]))  # (B, T, H)
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_head, self.head_dim)
        # QK-norm (Henry et al. 2020; Dehghani et al. 2023, ViT-22B): normalizing q and k
        # bounds the attention logits, which keeps high learning rates stable.
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        if self.window >= T:  # full causal: SDPA's flash backend on CUDA
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = windowed_attention(q, k, v, masks[self.window])
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ReLU^2 (So et al. 2021, Primer): as cheap as ReLU and trains faster than GELU
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config: GPTConfig, window: int, value_embedding: bool) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(config, window, value_embedding)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, ve: torch.Tensor | None, cos: torch.Tensor, sin: torch.Tensor, masks: dict
    ) -> torch.Tensor:
        x = x + self.attn(norm(x), ve, cos, sin, masks)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.windows = window_sizes(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        n = config.n_layer
        self.blocks = nn.ModuleList(Block(config, w, has_value_embedding(i, n)) for i, w in enumerate(self.windows))
        self.value_embeds = nn.ModuleDict(
            {str(i): nn.Embedding(config.vocab_size, config.n_embd) for i in range(n) if has_value_embedding(i, n)}
        )
        # untied unembedding: input and output embeddings want different geometry (modded-nanogpt)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # learnable per-layer mix of the residual stream and the first-layer input x0
        # (modded-nanogpt / nanochat "x0 skip"): lets deep layers re-read the token identity
        self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
        self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))
        cos, sin = rotary_tables(config.sequence_len, config.n_embd // config.n_head)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        # sliding windows through FlexAttention block masks (CUDA training), else dense masks
        # (CPU, MPS, and the exported model the trusted evaluator scores: only aten ops)
        self.use_flex = False
        self._block_masks: dict[tuple[int, int, str], object] = {}

    def window_masks(self, seq_len: int, device: torch.device) -> dict:
        # window -> mask for the layers whose window is shorter than the sequence
        short = sorted(w for w in set(self.windows) if w < seq_len)
        if not self.use_flex:
            return {w: sliding_window_mask(seq_len, w, device) for w in short}
        for w in short:  # built once, outside the compiled graph
            key = (seq_len, w, str(device))
            if key not in self._block_masks:
                self._block_masks[key] = sliding_window_block_mask(seq_len, w, device)
        return {w: self._block_masks[(seq_len, w, str(device))] for w in short}

    @torch.no_grad()
    def init_weights(self) -> None:
        # nanochat's init: uniform with std 1/sqrt(width) for input projections, zero for
        # output projections (each block starts as the identity), tiny lm_head
        bound = 3**0.5 * self.config.n_embd**-0.5
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -bound, bound)
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)
        for embedding in self.value_embeds.values():
            nn.init.uniform_(embedding.weight, -bound, bound)
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, reduction: str = "mean"
    ) -> torch.Tensor:
        B, T = idx.size()
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        masks = self.window_masks(T, idx.device)
        x = norm(self.wte(idx))  # (B, T, C)
        x0 = x
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
            x = block(x, ve, cos, sin, masks)
        # logit soft-capping (Gemma 2, Gemma Team 2024): cap * tanh(logits / cap) bounds the
        # logits smoothly. The 1/cap is folded into the (C, V) weight rather than applied to
        # the (B, T, V) logits: one less pass over the largest tensor of the step.
        cap = self.config.logit_softcap
        logits = cap * torch.tanh(F.linear(norm(x), self.lm_head.weight / cap).float())  # (B, T, V)
        if targets is None:
            return logits
        # reduction='none' gives per-token CE in nats, flat (B*T,), as evaluate_bpb expects
        return F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1, reduction=reduction
        )


# ---------------------------------------------------------------------------
# Optimizer
# ---------------------------------------------------------------------------


# Polar Express (Amsel, Persson, Musco & Gower 2025, arXiv:2505.16932): one odd quintic
# per iteration, each the minimax-optimal polynomial for the singular-value interval the
# previous ones leave, so 5 iterations bring singular values from ~1e-3 up to ~1 much more
# evenly than Newton-Schulz with one fixed quintic. These are the paper's published
# coefficients for 5 iterations with its 2% safety factor (as modded-nanogpt uses them).
POLAR_EXPRESS = (
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
)


@torch.no_grad()
def orthogonalize(G: torch.Tensor) -> torch.Tensor:
    # Approximate U V^T of the SVD of G (stacked: (N, rows, cols)) with Polar Express.
    X = G.bfloat16() if G.is_cuda else G.float()  # bf16 is native on GPUs, emulated on many CPUs
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)  # spectral norm < 1, with margin
    for a, b, c in POLAR_EXPRESS:
        A = X @ X.mT
        X = a * X + (b * A + c * (A @ A)) @ X
    if tall:
        X = X.mT
    return X.to(G.dtype)


@torch.no_grad()
def normalize_neurons(update: torch.Tensor, second_moment: torch.Tensor, beta2: float) -> torch.Tensor:
    # NorMuon (Li et al. 2025, arXiv:2510.05491): an orthogonalized update moves every
    # direction at one rate, but its rows (neurons) can still differ widely in size. Keep an
    # EMA of each neuron's mean squared update (second_moment: (N, rows, 1) for tall or
    # square matrices, (N, 1, cols) for wide ones, updated in place), divide by its root,
    # and rescale so the update keeps its Frobenius norm. update: (N, rows, cols).
    dim = -1 if update.size(-2) >= update.size(-1) else -2
    u = update.float()
    mean_sq = u.square().mean(dim=dim, keepdim=True)
    second_moment.lerp_(mean_sq, 1 - beta2)
    scaled = u * second_moment.clamp_min(1e-10).rsqrt()
    norm_before = u.norm(dim=(-2, -1), keepdim=True)
    norm_after = scaled.norm(dim=(-2, -1), keepdim=True).clamp_min(1e-10)
    return (scaled * (norm_before / norm_after)).to(update.dtype)


class MuonAdamW:
    """One optimizer, two update rules chosen per param group by group["kind"].

    "muon": Muon (Keller Jordan, https://kellerjordan.github.io/posts/muon/, as used in
    modded-nanogpt and nanochat) for the 2-D matrices inside blocks: Nesterov momentum,
    then orthogonalized (Polar Express), so every direction of the update moves at the
    same rate, then normalized per neuron (NorMuon). A group holds same-shape matrices,
    orthogonalized as one batch.
    "adamw": AdamW (Loshchilov & Hutter 2019) for embeddings, lm_head and scalars,
    where orthogonalization makes no sense. Written out rather than torch.optim.AdamW
    so a non-finite learning rate becomes a NaN loss (a FAIL) rather than a ValueError.
    A plain class, not a torch.optim.Optimizer: that base class imports torch._dynamo,
    measured at 1-3 s of startup on a small CPU, a large share of a short run.
    """

    def __init__(self, groups: list[dict]) -> None:
        self.param_groups = groups
        self.state: dict[torch.Tensor, dict] = defaultdict(dict)

    @torch.no_grad()
    def step(self) -> None:
        for group in self.param_groups:
            if group["kind"] == "muon":
                self._muon(group)
            else:
                self._adamw(group)

    def _adamw(self, group: dict) -> None:
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:
                state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
            state["t"] += 1
            state["m"].lerp_(p.grad, 1 - beta1)
            state["v"].lerp_(p.grad.square(), 1 - beta2)
            denom = (state["v"] / (1 - beta2 ** state["t"])).sqrt_().add_(eps)
            p.mul_(1 - lr * wd)
            p.addcdiv_(state["m"], denom, value=-lr / (1 - beta1 ** state["t"]))

    def _muon(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
        grads = torch.stack([p.grad for p in params])  # (N, rows, cols)
        state = self.state[params[0]]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(grads)
            wide = grads.size(-2) < grads.size(-1)
            shape = (grads.size(0), 1, grads.size(-1)) if wide else (grads.size(0), grads.size(-2), 1)
            state["second_moment"] = torch.zeros(shape, dtype=torch.float32, device=grads.device)
        buf = state["momentum_buffer"]
        buf.lerp_(grads, 1 - mom)
        update = orthogonalize(grads.lerp_(buf, mom))  # Nesterov
        update = normalize_neurons(update, state["second_moment"], group["beta2"])
        # tall matrices get a larger step so the RMS update is shape-independent (modded-nanogpt)
        scale = max(1.0, params[0].size(-2) / params[0].size(-1)) ** 0.5
        for p, u in zip(params, update, strict=True):
            p.mul_(1 - lr * wd)  # decoupled weight decay, shrinking with the lr schedule
            p.add_(u, alpha=-lr * scale)


# ---------------------------------------------------------------------------
# Hyperparameters (edit directly; the evo engine rewrites this block with libcst)
# ---------------------------------------------------------------------------

# Model shape
ASPECT_RATIO = 64  # width per layer: model_dim = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM
HEAD_DIM = 128  # channels per attention head (rounded to an even number for RoPE)
WINDOW_PATTERN = "SSSL"  # attention window per layer, cycled: S = half context, L = full; last layer always L
LOGIT_SOFTCAP = 15.0  # logits are squashed to (-cap, cap) by cap * tanh(logits / cap)

# Optimization
TOTAL_BATCH_SIZE = 2**19  # tokens per optimizer step (gradient accumulation makes up the rest)
EMBEDDING_LR = 0.6  # AdamW lr for the token embedding, times (model_dim / 768) ** -0.5
UNEMBEDDING_LR = 0.004  # AdamW lr for lm_head, times (model_dim / 768) ** -0.5
MATRIX_LR = 0.04  # Muon lr for the 2-D matrices inside the blocks
SCALAR_LR = 0.5  # AdamW lr for the per-layer x0 mixing scalars (residual scalars get 1/100 of it)
WEIGHT_DECAY = 0.2  # decoupled weight decay of the Muon matrices (per step: lr * WEIGHT_DECAY)
ADAM_BETAS = (0.8, 0.95)  # AdamW (beta1, beta2), clamped to [0, 0.9999]
MUON_MOMENTUM = 0.95  # Muon Nesterov momentum, clamped to [0, 0.9999]
WARMUP_RATIO = 0.0  # fraction of the time budget spent ramping the lr up from 0
WARMDOWN_RATIO = 0.5  # fraction of the time budget, at the end, spent decaying the lr
FINAL_LR_FRAC = 0.0  # lr multiplier reached at the end of the warmdown

# Model size and batching
DEPTH = 8  # number of transformer blocks
DEVICE_BATCH_SIZE = 128  # sequences per forward/backward pass (micro-batch)
FINAL_EVAL_BATCH_SIZE = 64  # sequences per forward pass in the final evaluation

# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------


def clamp(x: float, lo: float, hi: float) -> float:
    return min(hi, max(lo, float(x)))


def pick_device() -> torch.device:
    # the one place the device is chosen: CUDA, then MPS, then CPU (as prepare.py does)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_fast_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private oneDNN query: absent in some builds
        return False


def pick_compute_dtype(device: torch.device) -> tuple[torch.dtype | None, str]:
    """Autocast dtype (None = plain fp32) and the reason; weights stay fp32 either way."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, "bf16 autocast: the GPU supports bf16 (fp32 master weights)"
        return None, "fp32: this GPU lacks bf16, and fp16 would need loss scaling"
    if device.type == "cpu":
        # bf16 pays off only where the CPU has native bf16 matmuls (AVX512-BF16/AMX, as oneDNN
        # reports); on a plain AVX2 CPU they are emulated, measured ~10x slower than fp32
        if cpu_has_fast_bf16():
            return torch.bfloat16, "bf16 autocast: this CPU has native bf16 matmuls (oneDNN)"
        return None, "fp32: this CPU lacks native bf16, where bf16 autocast measured ~10x slower"
    return None, "fp32 on MPS: bf16 autocast support on MPS varies by macOS/torch version"


def lr_multiplier(progress: float) -> float:
    # schedule driven by the fraction of the time budget used, not by step count,
    # so it is right whatever the step rate of a genome (autoresearch)
    warmup = clamp(WARMUP_RATIO, 0.0, 1.0)
    warmdown = clamp(WARMDOWN_RATIO, 0.0, 1.0)
    final = clamp(FINAL_LR_FRAC, 0.0, 1.0)
    mult = 1.0
    if warmdown > 0 and progress > 1.0 - warmdown:
        mult = final + (1.0 - final) * max(0.0, (1.0 - progress) / warmdown)
    if warmup > 0 and progress < warmup:
        mult = min(mult, progress / warmup)
    return mult


def build_optimizer(model: GPT) -> MuonAdamW:
    width_scale = (model.config.n_embd / 768) ** -0.5  # AdamW lrs were tuned at width 768 (nanochat)
    betas = (clamp(ADAM_BETAS[0], 0.0, 0.9999), clamp(ADAM_BETAS[1], 0.0, 0.9999))
    adamw = dict(kind="adamw", betas=betas, eps=1e-10, weight_decay=0.0)
    embeddings = [model.wte.weight, *(e.weight for e in model.value_embeds.values())]
    groups = [
        dict(params=embeddings, lr=EMBEDDING_LR * width_scale, **adamw),
        dict(params=[model.lm_head.weight], lr=UNEMBEDDING_LR * width_scale, **adamw),
        dict(params=[model.resid_lambdas], lr=SCALAR_LR * 0.01, **adamw),
        # the x0 mix gets a long first-moment average (beta1 0.96), as in autoresearch
        dict(params=[model.x0_lambdas], lr=SCALAR_LR, **{**adamw, "betas": (0.96, 0.95)}),
    ]
    matrices = list(model.blocks.parameters())  # all 2-D: the linear layers of the blocks
    for shape in sorted({tuple(p.shape) for p in matrices}):
        same = [p for p in matrices if tuple(p.shape) == shape]
        groups.append(
            dict(
                kind="muon",
                params=same,
                lr=MATRIX_LR,
                momentum=clamp(MUON_MOMENTUM, 0.0, 0.9999),
                beta2=0.95,  # NorMuon's per-neuron second-moment EMA
                weight_decay=WEIGHT_DECAY,
            )
        )
    for group in groups:
        group["initial_lr"] = group["lr"]
        group["initial_weight_decay"] = group["weight_decay"]
        group["initial_momentum"] = group.get("momentum")
    return MuonAdamW(groups)


def set_schedules(optimizer: MuonAdamW, progress: float, step: int) -> float:
    """Set each group's lr, weight decay and momentum for this step; returns the lr multiplier.

    The lr follows lr_multiplier(progress); weight decay shrinks linearly to 0 over the
    budget (nanochat, autoresearch): late in training it would only pull weights back
    from where the loss wants them; Muon's momentum warms up from 0.85 over the first
    300 steps (modded-nanogpt), since a long average of early gradients points nowhere useful.
    """
    lr_mult = lr_multiplier(progress)
    warm = min(step / 300, 1.0)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * lr_mult
        group["weight_decay"] = group["initial_weight_decay"] * (1.0 - progress)
        if group["initial_momentum"] is not None:
            target = group["initial_momentum"]
            group["momentum"] = (1 - warm) * min(0.85, target) + warm * target
    return lr_mult


def flops_per_token(model: GPT, seq_len: int) -> float:
    # 6 FLOPs per parameter per token for the matmuls (forward + backward), embedding
    # lookups (token and value embeddings) excluded, plus attention scores/values over each
    # layer's window (nanochat)
    c = model.config
    lookups = model.wte.weight.numel() + sum(e.weight.numel() for e in model.value_embeds.values())
    matmul_params = sum(p.numel() for p in model.parameters()) - lookups
    attn = sum(12 * c.n_embd * min(w, seq_len) for w in model.windows)
    return 6 * matmul_params + attn


@dataclass
class Run:
    """Everything the training loop, evaluation and summary need."""

    t_start: float
    device: torch.device
    autocast: contextlib.AbstractContextManager
    tokenizer: Tokenizer
    model: GPT
    train_model: nn.Module  # model, or torch.compile(model) on CUDA
    optimizer: MuonAdamW
    loader: object
    grad_accum: int
    tokens_per_step: int
    excluded_steps: int  # first steps kept off the training clock (compilation, warmup)


def model_config(seq_len: int, vocab_size: int) -> GPTConfig:
    """The model the constants block describes, for sequences of ``seq_len`` tokens over ``vocab_size`` token ids."""
    depth = max(1, round(DEPTH))
    head_dim = max(2, 2 * round(HEAD_DIM / 2))
    model_dim = max(1, math.ceil(depth * ASPECT_RATIO / head_dim)) * head_dim
    return GPTConfig(
        sequence_len=seq_len,
        vocab_size=vocab_size,
        n_layer=depth,
        n_head=model_dim // head_dim,
        n_embd=model_dim,
        window_pattern=WINDOW_PATTERN,
        logit_softcap=float(LOGIT_SOFTCAP),
    )


def setup(t_start: float) -> Run:
    device = pick_device()
    dtype, reason = pick_compute_dtype(device)
    print(f"device: {device.type} | {reason}")
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.cuda.reset_peak_memory_stats()

    tokenizer = Tokenizer.from_directory()
    config = model_config(MAX_SEQ_LEN, tokenizer.get_vocab_size())
    model = GPT(config).to(device)
    model.init_weights()
    print(f"model: {config}")
    print(f"windows: {model.windows}")

    batch_size = max(1, round(DEVICE_BATCH_SIZE))
    grad_accum = max(1, round(TOTAL_BATCH_SIZE / (batch_size * MAX_SEQ_LEN)))
    tokens_per_step = grad_accum * batch_size * MAX_SEQ_LEN
    print(
        f"batch: {batch_size} x {MAX_SEQ_LEN} tokens x {grad_accum} accumulation = {tokens_per_step:,} tokens/step"
    )
    loader = make_dataloader(tokenizer, batch_size, MAX_SEQ_LEN, "train")
    optimizer = build_optimizer(model)

    train_model: nn.Module = model
    excluded_steps = 1
    if device.type == "cuda":
        # torch.compile only on CUDA (on CPU/MPS its compile time eats the short budgets).
        # Compilation is lazy: one forward/backward now. A failure is an error, not a silent
        # fall back to eager: an eager run at a third of the speed would be scored as if the
        # genome's ideas were worse. Sliding windows go through FlexAttention, which needs it.
        model.use_flex = any(w < MAX_SEQ_LEN for w in model.windows)
        model.window_masks(MAX_SEQ_LEN, device)  # block masks built before compilation
        try:
            compiled = torch.compile(model)
            x, y, _ = next(loader)
            with autocast:
                compiled(x, y).backward()
        except Exception as exc:  # any compiler/backend failure
            print(f"error: torch.compile failed on CUDA: {type(exc).__name__}: {str(exc)[:300]}")
            sys.exit(1)
        train_model, excluded_steps = compiled, 10
        print(f"torch.compile: ok (sliding windows: {'flex attention' if model.use_flex else 'none'})")
        model.zero_grad(set_to_none=True)
    return Run(
        t_start,
        device,
        autocast,
        tokenizer,
        model,
        train_model,
        optimizer,
        loader,
        grad_accum,
        tokens_per_step,
        excluded_steps,
    )


# ---------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def train(run: Run) -> tuple[float, int]:
    """Train for TIME_BUDGET seconds of training time. Returns (training_seconds, steps)."""
    model, optimizer = run.model, run.optimizer
    x, y, epoch = next(run.loader)
    training_time, step, smooth_loss = 0.0, 0, 0.0
    print_every_s = max(1.0, TIME_BUDGET / 30)
    last_print = -math.inf
    while True:
        sync(run.device)
        t0 = time.time()
        for _ in range(run.grad_accum):
            with run.autocast:
                loss = run.train_model(x, y)
            train_loss = loss.detach()
            (loss / run.grad_accum).backward()
            x, y, epoch = next(run.loader)  # fetch the next batch while the device works
        progress = min(training_time / TIME_BUDGET, 1.0)
        lr_mult = set_schedules(optimizer, progress, step)
        optimizer.step()
        model.zero_grad(set_to_none=True)

        loss_f = train_loss.item()
        if not math.isfinite(loss_f) or loss_f > 100:
            print(f"step {step:05d} | loss {loss_f}")
            print("FAIL")
            sys.exit(1)
        sync(run.device)
        dt = time.time() - t0
        if step >= run.excluded_steps:
            training_time += dt

        # debiased EMA of the training loss, for a readable progress line
        smooth_loss = 0.9 * smooth_loss + 0.1 * loss_f
        shown = smooth_loss / (1 - 0.9 ** (step + 1))
        if step == 0:
            # after the first step all long-lived objects exist: freeze them and stop the
            # cyclic GC, whose pauses cost hundreds of ms (autoresearch)
            gc.collect()
            gc.freeze()
            gc.disable()
        elif step % 5000 == 0:
            gc.collect()
        now = time.time()
        if now - last_print >= print_every_s:
            last_print = now
            remaining = max(0.0, TIME_BUDGET - training_time)
            print(
                f"step {step:05d} ({100 * progress:.1f}%) | loss {shown:.4f} | lr_mult {lr_mult:.2f} | "
                f"dt {1000 * dt:.0f}ms | tok/s {run.tokens_per_step / dt:,.0f} | epoch {epoch} | "
                f"remaining {remaining:.0f}s",
                flush=True,
            )
        step += 1
        if step > run.excluded_steps and training_time >= TIME_BUDGET:
            return training_time, step


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------


def evaluate(run: Run) -> float:
    # eager model: evaluation calls forward with reduction='none', a second graph for compile;
    # dense masks, so the exported model holds only aten ops the trusted evaluator accepts
    run.model.eval()
    run.model.use_flex = False
    with torch.no_grad(), run.autocast:
        return evaluate_bpb(run.model, run.tokenizer, max(1, round(FINAL_EVAL_BATCH_SIZE)))


# ---------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------


def main() -> None:
    t_start = time.time()
    run = setup(t_start)
    print(f"time budget: {TIME_BUDGET}s of training")
    training_time, steps = train(run)
    t_eval = time.time()
    val_bpb = evaluate(run)
    t_end = time.time()

    on_cuda = run.device.type == "cuda"
    peak_vram_mb = torch.cuda.max_memory_allocated() / 1024**2 if on_cuda else 0.0
    total_tokens = steps * run.tokens_per_step
    # MFU only on CUDA, against the H100's dense bf16 peak (989.5 TFLOPS), as autoresearch
    # reports it, over the timed steps only; elsewhere there is no honest reference peak: 0.0
    mfu = 0.0
    if on_cuda and training_time > 0:
        timed_tokens = (steps - run.excluded_steps) * run.tokens_per_step
        achieved = flops_per_token(run.model, MAX_SEQ_LEN) * timed_tokens / training_time
        mfu = 100 * achieved / 989.5e12
    num_params = sum(p.numel() for p in run.model.parameters())
    print("---")
    print(f"val_bpb: {val_bpb:.6f}")
    print(f"training_seconds: {training_time:.1f}")
    print(f"total_seconds: {t_end - t_start:.1f}")
    print(f"peak_vram_mb: {peak_vram_mb:.1f}")
    print(f"mfu_percent: {mfu:.2f}")
    print(f"total_tokens_M: {total_tokens / 1e6:.3f}")
    print(f"num_steps: {steps}")
    print(f"num_params_M: {num_params / 1e6:.3f}")
    print(f"depth: {run.model.config.n_layer}")
    print(f"compiled: {int(run.train_model is not run.model)}")
    # the rest of the wall time: before training (data, model, compilation, the untimed first
    # steps) and the final evaluation (with the export evo's trusted evaluator scores)
    print(f"startup_seconds: {t_eval - t_start - training_time:.1f}")
    print(f"eval_seconds: {t_end - t_eval:.1f}")


if __name__ == "__main__":
    main()
