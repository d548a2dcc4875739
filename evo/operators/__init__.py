"""Mutation operators, one per module, and the registry the engine picks from."""

from __future__ import annotations

from collections.abc import Callable

from evo.config import RunConfig
from evo.operators.base import Context, MutationOperator, OperatorResult, Parent, Status
from evo.operators.crossover import UniformCrossover
from evo.operators.hyperparam import HyperparamMutation
from evo.operators.llm import LLMMutation
from evo.operators.optuna_sampler import OptunaProposal

# name -> factory taking the run's configuration. The engine draws an operator per child
# by the run's weights (RunConfig.operators).
REGISTRY: dict[str, Callable[[RunConfig], MutationOperator]] = {
    HyperparamMutation.name: lambda config: HyperparamMutation(),
    OptunaProposal.name: lambda config: OptunaProposal(config.sampler),
    UniformCrossover.name: lambda config: UniformCrossover(),
    LLMMutation.name: LLMMutation.from_config,
}

__all__ = [
    "REGISTRY", "Context", "HyperparamMutation", "LLMMutation", "MutationOperator", "OperatorResult", "OptunaProposal", "Parent",
    "Status", "UniformCrossover",
]
