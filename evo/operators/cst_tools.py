"""Reading and writing a genome's ALL_CAPS hyperparameter block with libcst.

A hyperparameter is a module-level ``NAME = <literal>`` where NAME is ALL_CAPS and the
literal is an int, a float, a string, a bool, a ``base**exponent`` of ints, or a tuple
of numbers. Edits replace only the value node, so comments and layout survive.

Some such constants are facts, not choices: a GPU's peak FLOPS, a memory size. They are
*fixed*: read like the others (so a profile can still set them) but never changed by an
operator. A constant is fixed when its line ends with the comment ``# evo: fixed`` (the
genome contract's explicit marker), or when its name says it describes hardware
(:data:`HARDWARE_NAME`, e.g. ``H100_BF16_PEAK_FLOPS``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import libcst as cst
import libcst.matchers as m

_CONSTANT_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
FIXED_MARKER = re.compile(r"#\s*evo:\s*fixed\b")
# Names of hardware facts: peak FLOPS, bandwidth, memory or core counts of a device.
HARDWARE_NAME = re.compile(r"(^|_)(PEAK|T?FLOPS|BANDWIDTH|VRAM|HBM|NUM_SMS|SM_COUNT)(_|$)")


class ConstantError(ValueError):
    """An edit names a constant the genome does not have, or a value it cannot hold."""


@dataclass(frozen=True)
class Constant:
    """One hyperparameter of a genome.

    Attributes:
        name: the ALL_CAPS name.
        value: its Python value (int, float, str, bool or tuple).
        power_of: for ``2**19``-style values, the base (2); else ``None``.
        line: 1-based line of the assignment.
        fixed: never changed by an operator (module docstring).
    """

    name: str
    value: Any
    power_of: int | None = None
    line: int = 0
    fixed: bool = False


def _literal(node: cst.BaseExpression) -> tuple[Any, int | None]:
    """The value of a literal node and, for ``b**e``, the base; raises ValueError otherwise."""
    if isinstance(node, cst.Integer | cst.Float):
        return node.evaluated_value, None
    if isinstance(node, cst.SimpleString):
        return node.evaluated_value, None
    if m.matches(node, m.Name("True") | m.Name("False")):
        return node.value == "True", None
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        value, _ = _literal(node.expression)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value, None
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Power):
        if isinstance(node.left, cst.Integer) and isinstance(node.right, cst.Integer):
            base, exponent = node.left.evaluated_value, node.right.evaluated_value
            return base**exponent, base
    if isinstance(node, cst.Tuple):
        values = []
        for element in node.elements:
            value, _ = _literal(element.value)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError("tuple of non-numbers")
            values.append(value)
        return tuple(values), None
    raise ValueError("not a literal")


def _assignment(statement: cst.CSTNode) -> tuple[str, cst.Assign] | None:
    if not isinstance(statement, cst.SimpleStatementLine) or len(statement.body) != 1:
        return None
    assign = statement.body[0]
    if not isinstance(assign, cst.Assign) or len(assign.targets) != 1:
        return None
    target = assign.targets[0].target
    if not isinstance(target, cst.Name) or not _CONSTANT_NAME.match(target.value):
        return None
    return target.value, assign


def read_constants(code: str) -> dict[str, Constant]:
    """The genome's hyperparameters, in source order.

    Raises:
        libcst.ParserSyntaxError: the source does not parse.
    """
    module = cst.parse_module(code)
    wrapper = cst.MetadataWrapper(module, unsafe_skip_copy=True)
    positions = wrapper.resolve(cst.metadata.PositionProvider)
    constants: dict[str, Constant] = {}
    for statement in wrapper.module.body:
        found = _assignment(statement)
        if found is None:
            continue
        name, assign = found
        try:
            value, power_of = _literal(assign.value)
        except ValueError:
            continue
        comment = statement.trailing_whitespace.comment
        fixed = bool(comment and FIXED_MARKER.search(comment.value)) or bool(HARDWARE_NAME.search(name))
        constants[name] = Constant(name, value, power_of, positions[statement].start.line, fixed)
    return constants


def free_constants(constants: dict[str, Constant], frozen: frozenset[str] = frozenset()) -> dict[str, Constant]:
    """The constants an operator may change: all but the fixed ones and ``frozen`` names."""
    return {name: c for name, c in constants.items() if not c.fixed and name not in frozen}


def format_value(value: Any) -> str:
    """Python source for a constant's value (floats with up to 4 significant digits)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConstantError(f"cannot write non-finite value {value!r}")
        text = f"{value:.4g}"
        if "e" not in text and "." not in text:
            text += ".0"
        return text
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        inner = ", ".join(format_value(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    raise ConstantError(f"cannot write a value of type {type(value).__name__}")


def _value_node(value: Any, power_of: int | None) -> cst.BaseExpression:
    if power_of is not None and isinstance(value, int) and not isinstance(value, bool) and value > 0:
        exponent = round(math.log(value, power_of))
        if power_of**exponent == value:
            return cst.parse_expression(f"{power_of}**{exponent}")
    return cst.parse_expression(format_value(value))


class _SetConstants(cst.CSTTransformer):
    def __init__(self, values: Mapping[str, Any], constants: Mapping[str, Constant]) -> None:
        self.values = values
        self.constants = constants
        self.done: set[str] = set()

    def leave_SimpleStatementLine(self, original: cst.SimpleStatementLine, updated: cst.SimpleStatementLine):
        found = _assignment(updated)
        if found is None or found[0] not in self.values or found[0] in self.done:
            return updated
        name, assign = found
        self.done.add(name)
        node = _value_node(self.values[name], self.constants[name].power_of)
        return updated.with_changes(body=[assign.with_changes(value=node)])

    def visit_FunctionDef(self, node: cst.FunctionDef) -> bool:
        return False  # only module-level assignments are hyperparameters

    def visit_ClassDef(self, node: cst.ClassDef) -> bool:
        return False


def set_constants(code: str, values: Mapping[str, Any]) -> str:
    """Write new values into the genome's hyperparameter block.

    Args:
        code: the genome's source.
        values: name -> new value; every name must be a hyperparameter of ``code``.

    Returns:
        The edited source; everything but the edited values is unchanged.

    Raises:
        ConstantError: a name is not a hyperparameter of the genome, or a value cannot
            be written as a literal.
    """
    constants = read_constants(code)
    missing = sorted(set(values) - set(constants))
    if missing:
        raise ConstantError(f"genome has no hyperparameter(s) {', '.join(missing)}")
    module = cst.parse_module(code)
    return module.visit(_SetConstants(values, constants)).code


def describe_change(name: str, old: Any, new: Any) -> str:
    """A human description of one edit, e.g. ``MATRIX_LR 0.04 -> 0.05``."""
    return f"{name} {format_value(old)} -> {format_value(new)}"
