"""Mutation operators, one per module, and the registry the engine picks from."""

from __future__ import annotations

from collections.abc import Callable

from evo.operators.base import Context, MutationOperator, OperatorResult, Parent, Status
from evo.operators.hyperparam import HyperparamMutation

# name -> factory. The engine draws an operator per child by the run's weights.
REGISTRY: dict[str, Callable[[], MutationOperator]] = {
    HyperparamMutation.name: HyperparamMutation,
}

__all__ = ["REGISTRY", "Context", "HyperparamMutation", "MutationOperator", "OperatorResult", "Parent", "Status"]
