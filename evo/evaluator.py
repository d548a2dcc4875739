"""The trusted evaluator: val_bpb of an exported model, computed by evo alone.

A genome never reports its own fitness. Under evo, the harness's ``evaluate_bpb`` exports
the trained model (``prepare.export_model``: ``model(idx) -> logits``, idx ``(B, T)``
int64, logits ``(B, T, V)``) into the evaluation's workspace; after the genome's
processes are gone, this module, in a process of its own that runs no genome code:

1. **loads the program without running genome code**: the graph is JSON in torch.export's
   schema, checked *before* it is deserialized (:func:`check_program`): static shapes
   only, no guard code, no symbolic expressions (both would be evaluated as Python), and
   every node an ATen or prims operator from an allowlist (no file access); tensors are
   read with ``torch.load(weights_only=True)``. A ``.pt2`` archive is not accepted: it
   may carry pickles.
2. **checks the interface**: one int64 input of shape ``(B, MAX_SEQ_LEN)``, one floating
   output ``(B, T, vocab)``, finite; no state that changes between calls.
3. **probes causality** on real validation text: row ``r`` of a batch keeps its tokens up
   to a random cut ``c_r`` and gets other text after it; the logits at positions
   ``<= c_r`` must not change. Replacing half of the rows must not change the other half
   (no batch-level statistics of the validation text), and scoring the first batch again
   at the end must give the same logits (nothing learned from the validation data).
4. **scores** ``EVAL_TOKENS // MAX_SEQ_LEN`` rows of the pinned validation split (the
   harness's own loader, always the same rows): cross-entropy from the logits, bits per
   byte with byte counts computed here from the tokenizer (special tokens excluded), as
   ``prepare.evaluate_bpb`` defines the metric.

Run as ``python -m evo.evaluator MODEL_DIR`` with the run's ``EVO_PROFILE``,
``EVO_DATASET`` and ``EVO_CACHE_DIR``, and the project's ``prepare.py`` importable; it
prints one line ``EVO_TRUSTED_RESULT {json}``. With ``--wait`` it first imports what it
needs (torch, the harness, torch.export's loader: most of its start-up), then waits for
a line ``go`` on its stdin before it reads ``MODEL_DIR``; at the end of its input without
``go`` it exits 0 and prints nothing (:mod:`evo.warm_evaluator` starts it while the genome
exports its model).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import random
import re
import stat
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULT_PREFIX = "EVO_TRUSTED_RESULT "
PROGRAM_FILES = ("program.json", "state_dict.pt", "constants.pt")  # = prepare.EXPORT_FILES
MAX_PROGRAM_BYTES = 256 * 2**20  # the graph's JSON
MAX_TENSOR_FILE_BYTES = 64 * 2**30
ALLOWED_TARGET = re.compile(r"^torch\.ops\.(aten|prims)\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")
ALLOWED_SPECIAL_TARGETS = frozenset({
    "_operator.getitem",
    "torch.ops.higher_order.wrap_with_autocast",
    "torch.ops.higher_order.wrap_with_set_grad_enabled",
})
DENIED_OPERATORS = frozenset({"from_file", "_nested_from_padded_tensor"})
# Logits at positions a probe must leave unchanged may differ by this much, relative to
# the largest logit (1 at least): honest models on the CPU measured exactly 0.
CAUSALITY_RTOL = 1e-4


def _version() -> str:
    from evo import __version__

    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    return f"{__version__}+{digest}"


EVALUATOR_VERSION = _version()


class UnverifiableError(Exception):
    """The exported model cannot be scored honestly (its message says why)."""


@dataclass(frozen=True)
class TrustedScore:
    """What the trusted evaluator measured.

    Attributes:
        val_bpb: bits per byte on the pinned validation rows.
        rows: validation rows of MAX_SEQ_LEN tokens scored; tokens: target tokens counted.
        batch_size: B of the exported program.
        causality_max_diff: the largest change a probe saw where none is allowed.
        seconds: wall time of loading, probing and scoring.
    """

    val_bpb: float
    rows: int
    tokens: int
    batch_size: int
    causality_max_diff: float
    seconds: float


# ---------------------------------------------------------------------------- loading


def check_program(program: dict[str, Any]) -> None:
    """Refuse a serialized program whose deserialization or execution could run Python.

    Raises:
        UnverifiableError: guard code, symbolic shapes or expressions, or an operator
            outside the allowlist.
    """
    if program.get("guards_code"):
        raise UnverifiableError("the exported program carries guard code (Python); export with static shapes")
    if program.get("range_constraints"):
        raise UnverifiableError("the exported program has dynamic shapes; export with static shapes")
    bad: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "expr_str" in node:
                raise UnverifiableError("the exported program holds a symbolic expression (evaluated as Python)")
            target = node.get("target")
            if isinstance(target, str) and "inputs" in node:
                op = target.split(".")[3] if target.startswith("torch.ops.") and target.count(".") >= 3 else ""
                if not (ALLOWED_TARGET.match(target) or target in ALLOWED_SPECIAL_TARGETS) or op in DENIED_OPERATORS:
                    bad.add(target)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(program)
    if bad:
        raise UnverifiableError(f"the exported program calls operators evo does not run: {', '.join(sorted(bad)[:5])}")


def _read_regular(path: Path, limit: int) -> bytes:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise UnverifiableError(f"no {path.name} in the exported model") from None
    if not stat.S_ISREG(info.st_mode):
        raise UnverifiableError(f"{path.name} is not a regular file")
    if info.st_size > limit:
        raise UnverifiableError(f"{path.name} is {info.st_size:,} bytes, more than the {limit:,} allowed")
    return path.read_bytes()


def load_program(model_dir: Path, device: Any):
    """The exported model as a callable module, loaded without running genome code.

    Returns:
        ``(module, (B, T))``: the program's module and its input shape.
    Raises:
        UnverifiableError: missing, malformed or refused files; not one int64 (B, T) input.
    """
    import torch
    from torch._export.serde.serialize import SerializedArtifact, deserialize

    model_dir = Path(model_dir)
    error = model_dir / "export_error.txt"
    if not (model_dir / PROGRAM_FILES[0]).exists() and error.is_file() and not error.is_symlink():
        raise UnverifiableError(f"the model could not be exported: {error.read_text(errors='replace')[:500]}")
    raw = _read_regular(model_dir / PROGRAM_FILES[0], MAX_PROGRAM_BYTES)
    try:
        program = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnverifiableError(f"program.json is not JSON: {exc}") from None
    if not isinstance(program, dict):
        raise UnverifiableError("program.json is not a serialized exported program")
    check_program(program)
    tensors = []
    for name in PROGRAM_FILES[1:]:
        data = _read_regular(model_dir / name, MAX_TENSOR_FILE_BYTES)
        try:
            loaded = torch.load(io.BytesIO(data), map_location=device, weights_only=True)
        except Exception as exc:
            raise UnverifiableError(f"{name} is not a plain tensor file: {type(exc).__name__}: {exc}"[:500]) from None
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise UnverifiableError(f"{name} must map names to tensors")
        tensors.append(loaded)
    try:
        ep = deserialize(SerializedArtifact(raw, tensors[0], tensors[1], b""))
    except Exception as exc:
        raise UnverifiableError(f"the exported program does not load: {type(exc).__name__}: {exc}"[:500]) from None
    signature = ep.graph_signature
    graphs = [m.graph for m in ep.graph_module.modules() if isinstance(m, torch.fx.GraphModule)]
    in_place = sorted({str(n.target) for g in graphs for n in g.nodes if n.op == "call_function"
                       and isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable})
    if in_place:  # (an export is functional: only an edited program writes in place, to keep hidden state)
        raise UnverifiableError(f"the exported model writes into tensors in place ({', '.join(in_place[:3])}); "
                                "it must be a pure function")
    if signature.buffers_to_mutate or signature.user_inputs_to_mutate:
        raise UnverifiableError("the exported model changes its own state when called; it must be a pure function")
    inputs = [n for n in ep.graph.nodes if n.op == "placeholder" and n.name in signature.user_inputs]
    if len(inputs) != 1:
        raise UnverifiableError(f"the exported model takes {len(inputs)} inputs; it must take idx (B, T) alone")
    meta = inputs[0].meta.get("val")
    if meta is None or meta.dtype != torch.int64 or meta.dim() != 2:
        raise UnverifiableError("the exported model's input must be int64 token ids of shape (B, T)")
    try:
        module = ep.module()
    except Exception as exc:
        raise UnverifiableError(f"the exported program does not load: {type(exc).__name__}: {exc}"[:500]) from None
    return module, (int(meta.shape[0]), int(meta.shape[1]))


# ---------------------------------------------------------------------------- probing and scoring


def _logits(module, idx, vocab_size: int):
    import torch

    try:
        out = module(idx)
    except Exception as exc:
        raise UnverifiableError(f"the exported model failed on validation text: {type(exc).__name__}: {exc}"[:500]) from None
    shape = (*idx.shape, vocab_size)
    if not isinstance(out, torch.Tensor):
        raise UnverifiableError(f"the exported model returns {type(out).__name__}, not a logits tensor {shape}")
    if tuple(out.shape) != shape or not out.is_floating_point():
        raise UnverifiableError(f"the exported model returns {out.dtype} {tuple(out.shape)}; logits must be float {shape}")
    out = out.float()
    low, high = torch.aminmax(out)  # NaN propagates: one pass, no (B, T, V) mask
    if not (torch.isfinite(low) and torch.isfinite(high)):
        raise UnverifiableError("the exported model returns non-finite logits")
    return out


def probe_causality(module, first, second, vocab_size: int, rng: random.Random, base=None) -> float:
    """The largest logit change the probes see where none is allowed (module docstring, step 3).

    Args:
        first, second: two validation batches, ``(B, T)`` int64.
        base: the module's logits for ``first`` when already computed, ``(B, T, V)``.

    Returns:
        The maximum change.
    Raises:
        UnverifiableError: a change beyond :data:`CAUSALITY_RTOL` (the message says which probe).
    """
    B, T = first.shape
    if base is None:
        base = _logits(module, first, vocab_size)
    tolerance = CAUSALITY_RTOL * max(1.0, float(base.abs().max()))
    cuts = [rng.randrange(0, T - 1) for _ in range(B)]
    spliced = first.clone()
    for r, cut in enumerate(cuts):
        spliced[r, cut + 1 :] = second[r, cut + 1 :]
    changed = _logits(module, spliced, vocab_size)
    worst = max(float((base[r, : cut + 1] - changed[r, : cut + 1]).abs().max()) for r, cut in enumerate(cuts))
    if worst > tolerance:
        raise UnverifiableError(
            f"the exported model is not causal: logits up to position t changed by {worst:.3g} when only later "
            "tokens changed"
        )
    if B > 1:
        half = B // 2
        mixed = first.clone()
        mixed[half:] = second[half:]
        diff = float((base[:half] - _logits(module, mixed, vocab_size)[:half]).abs().max())
        if diff > tolerance:
            raise UnverifiableError(
                f"the exported model's logits for one row depend on the other rows of the batch (changed by {diff:.3g})"
            )
        worst = max(worst, diff)
    return worst


def score(module, batch_size: int, harness) -> TrustedScore:
    """Probe and score an exported model on the harness's pinned validation split.

    Args:
        module: from :func:`load_program`.
        batch_size: B of its input.
        harness: the project's ``prepare`` module (imported with the run's profile).

    Raises:
        UnverifiableError: see :func:`probe_causality` and :func:`_logits`.
    """
    import torch
    import torch.nn.functional as F

    t0 = time.monotonic()
    T = harness.MAX_SEQ_LEN
    tokenizer = harness.Tokenizer.from_directory()
    vocab_size = tokenizer.get_vocab_size()
    device = _device()
    token_bytes = harness.token_byte_lengths(tokenizer.enc).to(device)  # our own counts, not the cached file
    rows_needed = max(1, harness.EVAL_TOKENS // T)
    loader = harness.make_dataloader(tokenizer, batch_size, T, "val", device=device)
    rng = random.Random(os.urandom(16))  # cuts the genome cannot predict
    with torch.no_grad():
        (first, _, _), (second, _, _) = next(loader), next(loader)
        reference = _logits(module, first, vocab_size)  # the first call: compared with the last one
        worst = probe_causality(module, first, second, vocab_size, rng, base=reference)
        loader = harness.make_dataloader(tokenizer, batch_size, T, "val", device=device)
        total_nats, total_bytes, rows, tokens = 0.0, 0, 0, 0
        while rows < rows_needed:
            x, y, _ = next(loader)
            keep = min(batch_size, rows_needed - rows)
            same = rows == 0 and torch.equal(x, first)  # the loader starts again where the probes did
            logits = (reference if same else _logits(module, x, vocab_size))[:keep]
            targets = y[:keep].reshape(-1)
            nats = F.cross_entropy(logits.reshape(-1, vocab_size), targets, reduction="none")
            nbytes = token_bytes[targets]
            counted = nbytes > 0
            total_nats += float(torch.where(counted, nats.double(), 0.0).sum())
            total_bytes += int(nbytes.sum())
            tokens += int(counted.sum())
            rows += keep
        again = float((reference - _logits(module, first, vocab_size)).abs().max())
        if again > CAUSALITY_RTOL * max(1.0, float(reference.abs().max())):
            raise UnverifiableError(f"the exported model gave different logits for the same input (by {again:.3g})")
    if total_bytes == 0:
        raise UnverifiableError("no validation bytes were scored")
    val_bpb = total_nats / (math.log(2) * total_bytes)
    return TrustedScore(val_bpb, rows, tokens, batch_size, max(worst, again), time.monotonic() - t0)


def _device():
    import torch

    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def evaluate(model_dir: Path) -> TrustedScore:
    """Load, check, probe and score the exported model in ``model_dir`` (this process's harness).

    Raises:
        UnverifiableError: the model cannot be scored honestly.
    """
    import prepare  # the project's pinned harness, with the run's profile from the environment

    module, (batch_size, seq_len) = load_program(model_dir, _device())
    if seq_len != prepare.MAX_SEQ_LEN:
        raise UnverifiableError(f"the exported model takes sequences of {seq_len} tokens; the profile's are {prepare.MAX_SEQ_LEN}")
    return score(module, batch_size, prepare)


def _warm_up() -> None:
    """Import what :func:`evaluate` needs, before its model exists."""
    import torch.nn.functional  # noqa: F401
    from torch._export.serde import serialize  # noqa: F401  (most of torch.export's import cost)

    import prepare  # noqa: F401  (torch and the harness)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evo.evaluator", description="Score an exported model (evo's trusted evaluator).")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--wait", action="store_true", help="warm up, then wait for a line 'go' on stdin before reading MODEL_DIR")
    args = parser.parse_args(argv)
    waited_s = None
    if args.wait:
        _warm_up()
        ready = time.monotonic()
        if sys.stdin.readline().strip() != "go":
            return 0  # not needed after all
        waited_s = time.monotonic() - ready
    try:
        result: dict[str, Any] = {"ok": True, **asdict(evaluate(args.model_dir))}
    except UnverifiableError as exc:
        result = {"ok": False, "reason": str(exc)}
    result["evaluator_version"] = EVALUATOR_VERSION
    if waited_s is not None:
        result["waited_s"] = round(waited_s, 3)  # ready this long before it was needed
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
