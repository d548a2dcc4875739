"""Synthetic fitness landscapes over the seed genome's ALL_CAPS constants block.

A landscape is a known function of the constants evo's operators can move (the smoke
profile's seed block), plus Gaussian noise, so a search method's chosen genome can be
scored by its *true* fitness instead of a noisy reading. Each landscape is also a genome
(:func:`landscape_genome`): a standard-library Python file with the seed's constants block
that prints evo's summary block (``---``, ``val_bpb: ...``) or ``FAIL`` on a cliff, so it
can be searched through the real ``evo start --fitness reported``.

Coordinates (the transformed space): powers of two and ``DEPTH`` by their log2, positive
floats by their natural log, betas and momenta (``ADAM_BETAS[i]``, ``MUON_MOMENTUM``) by
log(1 - beta), ``WARMDOWN_RATIO`` by log(max(x, 0.01)), ``WINDOW_PATTERN`` categorical.
A landscape is

    f(u) = f_opt + (1 - f_opt) * q(u) / q(u_seed),     q(u) >= 0, q(u_opt) = 0,

so the seed scores exactly 1.000 and the optimum exactly ``f_opt`` (0.94 to 0.96), where
``q`` is a sum of per-constant quadratics, pairwise interactions (correlated pairs),
curved valleys (Rosenbrock-like: ``(d_b - k d_a^2)^2``), a categorical penalty for the
window pattern and a linear penalty for ``FINAL_LR_FRAC`` (which only optuna can move;
its optimum is the seed's 0). Cliffs are linear constraints in ``u``: beyond them the
genome prints ``FAIL`` and exits 1 (a diverged run) and :func:`true_fitness` is ``None``.

Constants a landscape does not use have no effect; ``FINAL_EVAL_BATCH_SIZE`` (frozen),
``WARMUP_RATIO`` (zero, which the hyperparam operator cannot move) and the fixed ones
never matter. Every optimum lies within one optuna range of the seed (/4 .. x4 for
floats, +-2 for exponents), so every method can reach it.

Families (instance seed -> optimum location, weights, noise level):

=========  ====  ===============================================  ================
family     dims  structure                                        sigma (bits/byte)
=========  ====  ===============================================  ================
sphere        3  separable quadratic in three learning-rate-ish    0.002 - 0.004
coupled       8  correlated pairs (lr x batch, emb x unemb, ...)  0.001 - 0.003
cliff         5  optimum next to a divergence cliff (lr, depth)   0.004 - 0.006
integer       7  powers of two, depth, window pattern dominate    0.001 - 0.002
wide         17  every searchable constant, many near-zero        0.007 - 0.010
ridge         5  curved valleys (held out from tuning)            0.001 - 0.004
=========  ====  ===============================================  ================

Noise: ``sigma * N(0, 1)`` drawn from a generator seeded by the instance, ``EVO_SEED`` and
the genome's constant values (sha256), so two genomes with one ``EVO_SEED`` get
independent noise, and one genome with one seed always reads the same value.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SEED_PATH = ROOT / "seed_train.py"
PROFILE = "smoke"
FAMILIES = ("sphere", "coupled", "cliff", "integer", "wide", "ridge")
HELD_OUT = ("ridge",)  # never used while tuning evo: report separately

# The landscape itself: one source, exec'd here and written into every genome, so the
# genome and true_fitness compute the same function.
LANDSCAPE_CODE = r'''
def _coords(values):
    """The transformed coordinates of a genome's constant values (name -> value)."""
    import math
    u = {}
    for name in ("ASPECT_RATIO", "HEAD_DIM", "TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "DEPTH"):
        u[name] = math.log2(max(values[name], 1e-9))
    for name in ("LOGIT_SOFTCAP", "EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR", "WEIGHT_DECAY"):
        u[name] = math.log(max(values[name], 1e-12))
    b1, b2 = values["ADAM_BETAS"]
    u["ADAM_BETAS[0]"] = math.log(max(1.0 - b1, 1e-6))
    u["ADAM_BETAS[1]"] = math.log(max(1.0 - b2, 1e-6))
    u["MUON_MOMENTUM"] = math.log(max(1.0 - values["MUON_MOMENTUM"], 1e-6))
    u["WARMDOWN_RATIO"] = math.log(max(values["WARMDOWN_RATIO"], 0.01))
    return u


def _q(values, p):
    """The landscape's raw loss excess (>= 0, 0 at the optimum), or None past a cliff."""
    u = _coords(values)
    d = {k: u[k] - p["opt"][k] for k in p["opt"]}
    for weights, bound in p["cliffs"]:
        if sum(w * (u[k] - p["seed_u"][k]) for k, w in weights.items()) > bound:
            return None
    q = sum(c * d[k] ** 2 for k, c in p["curv"].items())
    for a, b, rho in p["pairs"]:
        q += 2.0 * rho * (p["curv"][a] * p["curv"][b]) ** 0.5 * d[a] * d[b]
    for a, b, k, c in p["valleys"]:
        q += c * (d[b] - k * d[a] ** 2) ** 2
    q += p["window"].get(values["WINDOW_PATTERN"], p["window_other"])
    q += p["final_lr_frac"] * values["FINAL_LR_FRAC"]
    return q


def landscape_value(values, p):
    """True fitness (val_bpb without noise) of constant values, or None past a cliff."""
    q = _q(values, p)
    if q is None:
        return None
    return p["f_opt"] + (1.0 - p["f_opt"]) * q / p["q_seed"]


def landscape_fidelity_bias(values, p, fidelity):
    """What a run of ``fidelity`` (a share of the full budget, in (0, 1]) adds to the value:
    shorter runs read worse overall and favour higher learning rates, smaller models and
    smaller batches (a linear bias in the coordinates, scaled by 1 - fidelity; 0 at 1)."""
    if fidelity >= 1.0:
        return 0.0
    u = _coords(values)
    tilt = sum(b * (u[k] - p["seed_u"][k]) for k, b in p.get("fidelity_bias", {}).items())
    return (1.0 - fidelity) * (0.1 + tilt)


def landscape_noise(values, p, seed):
    """The noise of one reading: sigma * N(0, 1), seeded by instance, EVO_SEED and values."""
    import hashlib
    import random
    key = repr((p["instance"], int(seed), sorted(values.items())))
    rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    return p["sigma"] * rng.gauss(0.0, 1.0)
'''

_ns: dict[str, Any] = {}
exec(compile(LANDSCAPE_CODE, "<landscape>", "exec"), _ns)  # noqa: S102 -- our own code
landscape_value = _ns["landscape_value"]
landscape_noise = _ns["landscape_noise"]
landscape_fidelity_bias = _ns["landscape_fidelity_bias"]
_coords = _ns["_coords"]

GENOME_MAIN = r'''

def _main():
    import os
    import sys
    import time
    t0 = time.time()
    values = {name: globals()[name] for name in landscape_params["names"]}
    seed = int(os.environ.get("EVO_SEED", "0"))
    true = landscape_value(values, landscape_params)
    if true is None:
        print("step 00001 | loss: nan")
        print("FAIL")
        sys.exit(1)
    fidelity = 1.0
    if os.environ.get("EVO_TIME_BUDGET") and landscape_full_budget_s:
        fidelity = min(1.0, float(os.environ["EVO_TIME_BUDGET"]) / landscape_full_budget_s)
    val_bpb = true + landscape_fidelity_bias(values, landscape_params, fidelity) + landscape_noise(values, landscape_params, seed)
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    print("training_seconds: 1.0")
    print(f"total_seconds:    {time.time() - t0 + 1.0:.1f}")
    print("peak_vram_mb:     0.0")
    print("mfu_percent:      0.00")
    print("total_tokens_M:   0.1")
    print("num_steps:        10")
    print("num_params_M:     0.1")
    print(f"depth:            {values['DEPTH']}")


if __name__ == "__main__":
    _main()
'''


@functools.lru_cache(maxsize=1)
def seed_code() -> str:
    """The seed genome's source with the smoke profile's overrides applied."""
    from evo.scheduler import seed_child

    return seed_child(SEED_PATH.read_text(), PROFILE, SEED_PATH.name).code


def _block_lines(code: str) -> list[str]:
    """The seed's hyperparameter block: its constants' lines and the comments between,
    with the ``# ---`` rules around it."""
    from evo.operators.cst_tools import read_constants

    constants = read_constants(code)
    lines = code.splitlines()
    first = min(c.line for c in constants.values()) - 1
    last = max(c.line for c in constants.values()) - 1
    while first > 0 and (lines[first - 1].startswith("#") or not lines[first - 1].strip()):
        first -= 1
    while first < len(lines) and not lines[first].strip():
        first += 1
    end = last + 1
    if end < len(lines) and not lines[end].strip():
        end += 1
    if end < len(lines) and lines[end].startswith("# ---"):
        end += 1
    return lines[first:end]


def block_code() -> str:
    """The seed's constants block alone, as a source (what operators edit, cheap to parse)."""
    return "\n".join(_block_lines(seed_code())) + "\n"


def seed_values() -> dict[str, Any]:
    return dict(_seed_values())


@functools.lru_cache(maxsize=1)
def _seed_values() -> dict[str, Any]:
    from evo.operators.cst_tools import read_constants

    return {n: c.value for n, c in read_constants(seed_code()).items()}


@dataclass(frozen=True)
class Landscape:
    """One landscape instance: ``family:seed`` with its parameters (JSON-serializable)."""

    family: str
    instance_seed: int
    params: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.family}:{self.instance_seed}"

    @property
    def sigma(self) -> float:
        return self.params["sigma"]

    @property
    def f_opt(self) -> float:
        return self.params["f_opt"]

    @property
    def held_out(self) -> bool:
        return self.family in HELD_OUT

    @property
    def optimum_values(self) -> dict[str, Any]:
        return dict(self.params["opt_values"])


# --- instance generation -------------------------------------------------------------

_POW2 = ("ASPECT_RATIO", "HEAD_DIM", "TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE")
_LOGF = ("LOGIT_SOFTCAP", "EMBEDDING_LR", "UNEMBEDDING_LR", "MATRIX_LR", "SCALAR_LR", "WEIGHT_DECAY")
_BETA = ("ADAM_BETAS[0]", "ADAM_BETAS[1]", "MUON_MOMENTUM")
ALL_COORDS = (*_POW2, "DEPTH", *_LOGF, *_BETA, "WARMDOWN_RATIO")
WINDOWS = ("L", "SL", "SSL", "SLL", "SSSL", "SSLL", "SLSL", "LLLL")


def _draw_offset(name: str, rng: random.Random, integer_heavy: bool = False) -> float:
    """Optimum minus seed, in transformed units, within one optuna range of the seed."""
    if name in _POW2:
        return float(rng.choice((-1, 1, 1, -1, 0) if not integer_heavy else (-1, 1, 2, -1, 1)))
    if name == "DEPTH":  # seed 2: optimum 3 or 4 (1 when shrinking helps)
        return math.log2(rng.choice((3, 4, 3, 1))) - 1.0
    if name == "WARMDOWN_RATIO":  # seed 0.5; optimum in [0.15, 0.9]
        return rng.uniform(-1.2, 0.58)
    sign = rng.choice((-1.0, 1.0))
    return sign * rng.uniform(0.3, 1.0)


def _from_coord(name: str, u: float, seed: Mapping[str, Any]) -> Any:
    if name in _POW2 or name == "DEPTH":
        return int(round(2 ** u))
    if name in _LOGF:
        return float(f"{math.exp(u):.3g}")
    if name == "WARMDOWN_RATIO":
        return float(f"{math.exp(u):.3g}")
    return round(1.0 - math.exp(u), 4)  # a beta


def _values_with(seed: Mapping[str, Any], coords: Mapping[str, float]) -> dict[str, Any]:
    values = dict(seed)
    betas = list(values["ADAM_BETAS"])
    for name, u in coords.items():
        v = _from_coord(name, u, seed)
        if name.startswith("ADAM_BETAS["):
            betas[int(name[11])] = v
        else:
            values[name] = v
    values["ADAM_BETAS"] = tuple(betas)
    return values


def make_landscape(family: str, instance_seed: int) -> Landscape:
    """The instance ``family:instance_seed`` (deterministic)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    rng = random.Random(f"{family}:{instance_seed}")
    seed = seed_values()
    seed_u = _coords(seed)
    sigma_range = {"sphere": (0.002, 0.004), "coupled": (0.001, 0.003), "cliff": (0.004, 0.006),
                   "integer": (0.001, 0.002), "wide": (0.007, 0.010), "ridge": (0.001, 0.004)}[family]
    dims = {
        "sphere": ["MATRIX_LR", "EMBEDDING_LR", "WARMDOWN_RATIO"],
        "coupled": ["MATRIX_LR", "TOTAL_BATCH_SIZE", "EMBEDDING_LR", "UNEMBEDDING_LR", "SCALAR_LR",
                    "WEIGHT_DECAY", "MUON_MOMENTUM", "ADAM_BETAS[1]"],
        "cliff": ["MATRIX_LR", "EMBEDDING_LR", "SCALAR_LR", "WARMDOWN_RATIO", "DEPTH"],
        "integer": ["DEPTH", "ASPECT_RATIO", "HEAD_DIM", "TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "MATRIX_LR"],
        "wide": list(ALL_COORDS),
        "ridge": ["MATRIX_LR", "WEIGHT_DECAY", "EMBEDDING_LR", "TOTAL_BATCH_SIZE", "ADAM_BETAS[0]"],
    }[family]
    offsets = {k: _draw_offset(k, rng, integer_heavy=family == "integer") for k in dims}
    if family == "cliff":  # the best learning rates are higher than the seed's
        offsets["MATRIX_LR"] = rng.uniform(0.5, 1.0)
        offsets["EMBEDDING_LR"] = rng.uniform(0.3, 0.8)
    # Shares of the seed's excess loss: Dirichlet-like, and in `wide` many near zero.
    raw = {k: rng.gammavariate(1.0 if family != "wide" else 0.4, 1.0) for k in dims}
    if family == "integer":
        raw["MATRIX_LR"] *= 0.2
    total = sum(raw.values())
    shares = {k: v / total for k, v in raw.items()}
    opt = {k: seed_u[k] + offsets[k] for k in dims}
    # Round the optimum to values a genome can hold (ints, 3 significant digits, ...).
    opt_values = _values_with(seed, opt)
    opt = {k: _coords(opt_values)[k] for k in dims}
    curv = {k: shares[k] / max(abs(opt[k] - seed_u[k]), 0.5) ** 2 for k in dims}
    pairs: list[list[Any]] = []
    valleys: list[list[Any]] = []
    window: dict[str, float] = {}
    window_other = 0.0
    final_lr_frac = 0.0
    cliffs: list[list[Any]] = []
    if family == "coupled":
        pairs = [["MATRIX_LR", "TOTAL_BATCH_SIZE", rng.choice((-1, 1)) * rng.uniform(0.6, 0.85)],
                 ["EMBEDDING_LR", "UNEMBEDDING_LR", rng.uniform(0.5, 0.8)],
                 ["WEIGHT_DECAY", "MUON_MOMENTUM", rng.choice((-1, 1)) * rng.uniform(0.4, 0.7)],
                 ["SCALAR_LR", "ADAM_BETAS[1]", rng.uniform(-0.6, 0.6)]]
    if family == "ridge":  # curved valleys; their floors pass through the optimum
        for a, b in (("MATRIX_LR", "WEIGHT_DECAY"), ("TOTAL_BATCH_SIZE", "EMBEDDING_LR")):
            c = 4.0 * (curv[a] + curv[b])
            valleys.append([a, b, rng.choice((-1, 1)) * rng.uniform(0.8, 1.5), c])
            curv[b] *= 0.1
    if family in ("integer", "wide"):
        best = rng.choice([w for w in WINDOWS if w != seed["WINDOW_PATTERN"]])
        share = 0.25 if family == "integer" else 0.08
        window = {w: rng.uniform(0.3, 1.0) * share for w in WINDOWS}
        window[best] = 0.0
        window[seed["WINDOW_PATTERN"]] = share
        window_other = share
        opt_values["WINDOW_PATTERN"] = best
    if family == "wide":
        final_lr_frac = 0.3  # any FINAL_LR_FRAC > 0 hurts; the seed's 0 is optimal
    if family == "cliff":
        # Divergence: learning rates a little above their optimum, or a model too large.
        cliffs = [[{"MATRIX_LR": 1.0}, offsets["MATRIX_LR"] + rng.uniform(0.25, 0.45)],
                  [{"EMBEDDING_LR": 1.0, "MATRIX_LR": 0.5}, offsets["EMBEDDING_LR"] + 0.5 * offsets["MATRIX_LR"] + 0.5],
                  [{"DEPTH": 1.0, "ASPECT_RATIO": 1.0}, 2.5]]
    if family == "integer":  # a head wider than the model: the run crashes
        weights = {"HEAD_DIM": 1.0, "DEPTH": -1.0, "ASPECT_RATIO": -1.0}
        at_opt = sum(w * (opt[k] - seed_u[k]) for k, w in weights.items())
        cliffs = [[weights, max(1.0, at_opt + 1.0)]]
    # Short runs (screens, evo.screening) favour higher learning rates, smaller models and
    # smaller batches: bits/byte per coordinate unit at fidelity 0 (scaled by 1 - fidelity).
    # Drawn from a generator of their own: the instances' other parameters stay as they were.
    frng, scale = random.Random(f"{family}:{instance_seed}:fidelity"), 1.0 - 0.95
    fidelity_bias = {k: -frng.uniform(0.1, 0.3) * scale for k in ("MATRIX_LR", "EMBEDDING_LR", "UNEMBEDDING_LR")}
    fidelity_bias.update({k: frng.uniform(0.1, 0.3) * scale for k in ("DEPTH", "ASPECT_RATIO", "TOTAL_BATCH_SIZE")})
    names = list(seed)
    params: dict[str, Any] = {
        "instance": f"{family}:{instance_seed}",
        "names": names,
        "seed_u": seed_u,
        "opt": opt,
        "opt_values": {k: list(v) if isinstance(v, tuple) else v for k, v in opt_values.items()},
        "curv": curv,
        "pairs": pairs,
        "valleys": valleys,
        "window": window,
        "window_other": window_other,
        "final_lr_frac": final_lr_frac,
        "cliffs": cliffs,
        "sigma": round(rng.uniform(*sigma_range), 4),
        "f_opt": round(rng.uniform(0.94, 0.96), 4),
        "q_seed": 1.0,
        "fidelity_bias": fidelity_bias,
    }
    q_seed = _ns["_q"](seed, params)
    params["q_seed"] = q_seed
    land = Landscape(family, instance_seed, params)
    assert q_seed and q_seed > 0, land.name
    assert abs(landscape_value(seed, params) - 1.0) < 1e-9
    assert landscape_value(_opt_values(land), params) is not None, f"{land.name}: optimum past a cliff"
    return land


def _opt_values(land: Landscape) -> dict[str, Any]:
    values = dict(land.params["opt_values"])
    values["ADAM_BETAS"] = tuple(values["ADAM_BETAS"])
    return values


def parse_name(name: str) -> Landscape:
    """``family`` or ``family:seed`` (default seed 0) -> its instance."""
    family, _, seed = name.partition(":")
    return make_landscape(family, int(seed or 0))


# --- evaluating ----------------------------------------------------------------------


def _values(constants_or_source: Any) -> dict[str, Any]:
    """Constant values from a source, a ``read_constants`` mapping or a name -> value dict."""
    if isinstance(constants_or_source, str):
        from evo.operators.cst_tools import read_constants

        constants_or_source = read_constants(constants_or_source)
    values = {}
    for name, v in constants_or_source.items():
        values[name] = getattr(v, "value", v) if type(v).__name__ == "Constant" else v
    return values


def true_fitness(land: Landscape, constants_or_source: Any) -> float | None:
    """The noise-free val_bpb of a genome (source or constants), ``None`` past a cliff."""
    return landscape_value(_values(constants_or_source), land.params)


def noise(land: Landscape, constants_or_source: Any, evo_seed: int) -> float:
    """The noise the genome adds to its reading when run with ``EVO_SEED=evo_seed``."""
    return landscape_noise(_values(constants_or_source), land.params, evo_seed)


def reading(land: Landscape, values: Mapping[str, Any], evo_seed: int, fidelity: float = 1.0) -> float | None:
    """One noisy reading (what the genome would print), ``None`` past a cliff; ``fidelity``:
    the share of the full budget it trained for (a screen's reading carries the fidelity bias)."""
    true = landscape_value(values, land.params)
    if true is None:
        return None
    return true + landscape_fidelity_bias(values, land.params, fidelity) + landscape_noise(values, land.params, evo_seed)


def optimum(land: Landscape) -> tuple[dict[str, Any], float]:
    """The optimum's constant values and its true fitness."""
    values = _opt_values(land)
    return values, landscape_value(values, land.params)


def landscape_genome(land: Landscape, full_budget_s: float | None = None) -> str:
    """A self-contained genome: the seed's constants block (smoke overrides applied) and,
    below it, the landscape. Standard library only; reads ``EVO_SEED``, and with
    ``full_budget_s`` (the run's time budget) ``EVO_TIME_BUDGET``: a shorter budget is a
    screen of fidelity ``EVO_TIME_BUDGET / full_budget_s``, read with the fidelity bias."""
    block = "\n".join(_block_lines(seed_code()))
    params = json.dumps(land.params, sort_keys=True)
    return (
        f'"""Synthetic landscape {land.name} (evo benchmark): prints f(constants) + noise, no training."""\n\n'
        f"{block}\n\n"
        "# Landscape (generated by benchmarks/landscapes.py; not a hyperparameter)\n"
        f"landscape_params = __import__('json').loads({params!r})\n"
        f"landscape_full_budget_s = {full_budget_s!r}\n"
        f"{LANDSCAPE_CODE}{GENOME_MAIN}"
    )


def instance_digest(land: Landscape) -> str:
    return hashlib.sha256(json.dumps(land.params, sort_keys=True).encode()).hexdigest()[:12]
