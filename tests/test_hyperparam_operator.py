"""Before/after fixtures for the libcst hyperparameter tools and the mutation operator."""

from __future__ import annotations

import random
import textwrap

import pytest

from evo.operators import Context, HyperparamMutation, Parent, Status
from evo.operators.cst_tools import ConstantError, read_constants, set_constants
from evo.operators.hyperparam import perturb

BEFORE = textwrap.dedent(
    '''\
    """doc"""
    from prepare import MAX_SEQ_LEN

    # ---- hyperparameters
    DEPTH = 8  # number of layers
    TOTAL_BATCH_SIZE = 2**19  # tokens per optimizer step
    DEVICE_BATCH_SIZE = 128  # rows per forward pass
    MATRIX_LR = 0.04  # Muon learning rate
    MUON_MOMENTUM = 0.95  # Nesterov momentum
    ADAM_BETAS = (0.8, 0.95)  # AdamW betas
    WARMDOWN_RATIO = 0.5  # fraction of the budget spent decaying
    WARMUP_RATIO = 0.0  # fraction of the budget spent warming up
    WINDOW_PATTERN = "SSSL"  # S: half window, L: full window
    USE_COMPILE = True  # torch.compile on CUDA
    FINAL_EVAL_BATCH_SIZE = 32  # rows per eval step

    def helper():
        DEPTH = 99
        return DEPTH
    '''
)

AFTER = textwrap.dedent(
    '''\
    """doc"""
    from prepare import MAX_SEQ_LEN

    # ---- hyperparameters
    DEPTH = 4  # number of layers
    TOTAL_BATCH_SIZE = 2**18  # tokens per optimizer step
    DEVICE_BATCH_SIZE = 128  # rows per forward pass
    MATRIX_LR = 0.05  # Muon learning rate
    MUON_MOMENTUM = 0.95  # Nesterov momentum
    ADAM_BETAS = (0.9, 0.99)  # AdamW betas
    WARMDOWN_RATIO = 0.5  # fraction of the budget spent decaying
    WARMUP_RATIO = 0.0  # fraction of the budget spent warming up
    WINDOW_PATTERN = "L"  # S: half window, L: full window
    USE_COMPILE = False  # torch.compile on CUDA
    FINAL_EVAL_BATCH_SIZE = 32  # rows per eval step

    def helper():
        DEPTH = 99
        return DEPTH
    '''
)


def test_read_constants_finds_the_module_level_block_only():
    constants = read_constants(BEFORE)
    assert list(constants) == [
        "DEPTH", "TOTAL_BATCH_SIZE", "DEVICE_BATCH_SIZE", "MATRIX_LR", "MUON_MOMENTUM", "ADAM_BETAS", "WARMDOWN_RATIO",
        "WARMUP_RATIO", "WINDOW_PATTERN", "USE_COMPILE", "FINAL_EVAL_BATCH_SIZE",
    ]
    assert constants["TOTAL_BATCH_SIZE"].value == 2**19 and constants["TOTAL_BATCH_SIZE"].power_of == 2
    assert constants["DEPTH"].value == 8 and constants["DEPTH"].line == 5
    assert constants["ADAM_BETAS"].value == (0.8, 0.95)


def test_set_constants_before_after():
    changes = {"DEPTH": 4, "TOTAL_BATCH_SIZE": 2**18, "MATRIX_LR": 0.05, "ADAM_BETAS": (0.9, 0.99),
               "WINDOW_PATTERN": "L", "USE_COMPILE": False}
    assert set_constants(BEFORE, changes) == AFTER


def test_set_constants_rejects_unknown_names():
    with pytest.raises(ConstantError, match="NOPE"):
        set_constants(BEFORE, {"NOPE": 1})


@pytest.mark.parametrize("seed", range(40))
def test_perturb_keeps_types_and_invariants(seed):
    rng = random.Random(seed)
    constants = read_constants(BEFORE)
    depth = perturb(constants["DEPTH"], rng)
    assert isinstance(depth, int) and depth >= 1 and depth != 8
    batch = perturb(constants["TOTAL_BATCH_SIZE"], rng)
    assert batch in (2**18, 2**20)
    device_batch = perturb(constants["DEVICE_BATCH_SIZE"], rng)
    assert device_batch in (64, 256)
    lr = perturb(constants["MATRIX_LR"], rng)
    assert isinstance(lr, float) and lr > 0 and lr != 0.04
    momentum = perturb(constants["MUON_MOMENTUM"], rng)
    assert 0 < momentum < 1 and momentum != 0.95  # a momentum stays a momentum
    betas = perturb(constants["ADAM_BETAS"], rng)
    assert len(betas) == 2 and all(0 < b < 1 for b in betas) and betas != (0.8, 0.95)
    warmdown = perturb(constants["WARMDOWN_RATIO"], rng)
    assert 0 < warmdown <= 1.0
    assert perturb(constants["WARMUP_RATIO"], rng) is None  # zero has no log scale
    pattern = perturb(constants["WINDOW_PATTERN"], rng)
    assert pattern != "SSSL" and set(pattern) <= {"S", "L"}
    assert perturb(constants["USE_COMPILE"], rng) is False


def test_float_steps_are_log_symmetric():
    rng = random.Random(0)
    constant = read_constants(BEFORE)["MATRIX_LR"]
    values = [perturb(constant, rng) for _ in range(2000)]
    up = sum(v > 0.04 for v in values)
    assert 850 < up < 1150  # as many steps up as down: the step is symmetric in log space
    assert min(values) > 0.04 / 10 and max(values) < 0.04 * 10


@pytest.mark.parametrize("seed", range(20))
def test_operator_child_differs_in_named_constants_only(seed):
    result = HyperparamMutation().propose([Parent("g0000", BEFORE, 1.0)], random.Random(seed), Context())
    assert result.status is Status.OK
    before, after = read_constants(BEFORE), read_constants(result.code)
    changed = {n for n in before if before[n].value != after[n].value}
    assert 1 <= len(changed) <= 2
    assert "FINAL_EVAL_BATCH_SIZE" not in changed  # measured, not learned: frozen
    for name in changed:
        assert name in result.description and "->" in result.description
    assert result.code.count("\n") == BEFORE.count("\n")  # comments and layout kept


@pytest.mark.parametrize("two_changes_p", [0.0, 1.0])
def test_the_share_of_two_constant_edits_follows_the_module_setting(monkeypatch, two_changes_p):
    """``TWO_CHANGES_P`` is read when the operator is built (search_sim's ``--set`` changes it)."""
    from evo.operators import hyperparam

    monkeypatch.setattr(hyperparam, "TWO_CHANGES_P", two_changes_p)
    counts = set()
    for seed in range(10):
        result = HyperparamMutation().propose([Parent("g0000", BEFORE, 1.0)], random.Random(seed), Context())
        before, after = read_constants(BEFORE), read_constants(result.code)
        counts.add(sum(before[n].value != after[n].value for n in before))
    assert counts == {1 + int(two_changes_p)}


def test_operator_skips_a_genome_without_hyperparameters():
    result = HyperparamMutation().propose([Parent("g0000", "print('hi')\n", None)], random.Random(0), Context())
    assert result.status is Status.SKIP


FIXED = textwrap.dedent(
    '''\
    H100_BF16_PEAK_FLOPS = 989.5e12  # a fact about the GPU, not a choice
    VOCAB_PAD = 64  # evo: fixed -- the tokenizer's padding
    MATRIX_LR = 0.04
    DEPTH = 8
    '''
)


def test_fixed_constants_are_read_but_never_changed_by_an_operator():
    from evo.operators.crossover import UniformCrossover
    from evo.operators.optuna_sampler import search_space

    constants = read_constants(FIXED)
    assert constants["H100_BF16_PEAK_FLOPS"].fixed and constants["VOCAB_PAD"].fixed
    assert not constants["MATRIX_LR"].fixed and not constants["DEPTH"].fixed
    changed: set[str] = set()
    for seed in range(60):
        result = HyperparamMutation().propose([Parent("g0", FIXED, 1.0)], random.Random(seed), Context())
        assert result.status is Status.OK
        after = read_constants(result.code)
        changed |= {n for n in constants if after[n].value != constants[n].value}
    assert changed == {"MATRIX_LR", "DEPTH"}
    assert {p.split(":")[0].split("[")[0] for p in search_space(constants)} == {"MATRIX_LR", "DEPTH"}
    # a crossover never carries a fixed constant over, even where the parents differ
    other = set_constants(FIXED, {"H100_BF16_PEAK_FLOPS": 1.0e15, "VOCAB_PAD": 128, "MATRIX_LR": 0.05, "DEPTH": 4})
    for seed in range(20):
        result = UniformCrossover().propose([Parent("a", FIXED, 1.0), Parent("b", other, 1.0)], random.Random(seed),
                                             Context())
        after = read_constants(result.code)
        assert after["H100_BF16_PEAK_FLOPS"].value == 989.5e12 and after["VOCAB_PAD"].value == 64
