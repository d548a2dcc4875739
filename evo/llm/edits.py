"""Parse the model's answer and apply its edits to the parent, strictly.

An answer is a ``DESCRIPTION:`` line followed by SEARCH/REPLACE blocks (or, in rewrite
mode, one fenced ``python`` block holding the whole file). Application is all or
nothing: every SEARCH text must occur in the parent exactly once, starting at the
beginning of a line, and no two blocks may overlap. If any block fails, nothing is
applied and :class:`EditError` names the block and shows the parent's nearest lines, so
the model can repair its answer; a child is never silently equal to its parent.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

SEARCH_MARK = "<<<<<<< SEARCH"
DIVIDER_MARK = "======="
REPLACE_MARK = ">>>>>>> REPLACE"
MAX_DESCRIPTION_CHARS = 200

_DESCRIPTION = re.compile(r"^\W*DESCRIPTION\W*:\s*(.*?)\s*$", re.IGNORECASE)
_FENCE = re.compile(r"^```[\w+-]*\s*$")


class AnswerError(ValueError):
    """The answer is not in the requested format (no description, no edits, open block)."""


class EditError(ValueError):
    """An edit does not apply to the parent; the message says which and why."""


@dataclass(frozen=True)
class Edit:
    """One SEARCH/REPLACE block: ``search`` and ``replace`` are whole lines, ``\\n``-terminated."""

    search: str
    replace: str


@dataclass(frozen=True)
class Answer:
    """A parsed answer: the one-line description and either edits or a whole file."""

    description: str
    edits: tuple[Edit, ...] = ()
    code: str | None = None


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def parse_description(lines: list[str]) -> str:
    for line in lines:
        match = _DESCRIPTION.match(line)
        if match and match.group(1).strip("*` "):
            return match.group(1).strip("*` ")[:MAX_DESCRIPTION_CHARS]
    raise AnswerError("the answer has no `DESCRIPTION: <one line>` line")


def parse_edits(lines: list[str]) -> tuple[Edit, ...]:
    """The SEARCH/REPLACE blocks of an answer, in order.

    Raises:
        AnswerError: a block is not closed, or there is none.
    """
    edits: list[Edit] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != SEARCH_MARK:
            i += 1
            continue
        number = len(edits) + 1
        try:
            divider = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == DIVIDER_MARK)
        except StopIteration:
            raise AnswerError(f"edit {number} has `{SEARCH_MARK}` but no `{DIVIDER_MARK}` line") from None
        try:
            end = next(j for j in range(divider + 1, len(lines)) if lines[j].strip() == REPLACE_MARK)
        except StopIteration:
            raise AnswerError(f"edit {number} has no closing `{REPLACE_MARK}` line") from None
        search, replace = lines[i + 1 : divider], lines[divider + 1 : end]
        if SEARCH_MARK in (line.strip() for line in search + replace):
            raise AnswerError(f"edit {number} is not closed before the next `{SEARCH_MARK}`")
        edits.append(Edit("".join(f"{line}\n" for line in search), "".join(f"{line}\n" for line in replace)))
        i = end + 1
    if not edits:
        raise AnswerError(f"the answer has no `{SEARCH_MARK}` ... `{REPLACE_MARK}` edit")
    return tuple(edits)


def parse_whole_file(lines: list[str]) -> str:
    """The longest fenced code block of an answer (rewrite mode).

    Raises:
        AnswerError: no closed fenced block.
    """
    blocks: list[list[str]] = []
    current: list[str] | None = None
    for line in lines:
        if _FENCE.match(line.strip()):
            if current is None:
                current = []
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current.append(line)
    if not blocks:
        raise AnswerError("the answer has no fenced ```python block with the whole file")
    return "\n".join(max(blocks, key=len)) + "\n"


def parse_answer(text: str, rewrite: bool = False) -> Answer:
    """Split an answer into its description and its edits (or whole file).

    Raises:
        AnswerError: the answer does not follow the format.
    """
    lines = _lines(text)
    description = parse_description(lines)
    if rewrite:
        return Answer(description, code=parse_whole_file(lines))
    return Answer(description, edits=parse_edits(lines))


# ---------------------------------------------------------------------------- applying

def _line_starts(text: str) -> set[int]:
    return {0} | {m.end() for m in re.finditer("\n", text)}


def _occurrences(text: str, needle: str, starts: set[int]) -> list[int]:
    found, at = [], text.find(needle)
    while at != -1:
        if at in starts:
            found.append(at)
        at = text.find(needle, at + 1)
    return found


def nearest_lines(parent: str, search: str, context: int = 0) -> str:
    """The parent's lines most like ``search`` (same count), numbered, for an error message."""
    wanted = search.rstrip("\n").split("\n")
    have = parent.rstrip("\n").split("\n")
    n = max(1, len(wanted))
    best_ratio, best_at = -1.0, 0
    for at in range(max(1, len(have) - n + 1)):
        window = have[at : at + n]
        matcher = difflib.SequenceMatcher(None, "\n".join(wanted), "\n".join(window), autojunk=False)
        if matcher.real_quick_ratio() <= best_ratio or matcher.quick_ratio() <= best_ratio:
            continue
        ratio = matcher.ratio()
        if ratio > best_ratio:
            best_ratio, best_at = ratio, at
    lo, hi = max(0, best_at - context), min(len(have), best_at + n + context)
    shown = "\n".join(f"{k + 1:5d} | {have[k]}" for k in range(lo, hi))
    return f"the nearest lines of the parent ({best_ratio:.0%} similar, lines {best_at + 1}-{best_at + n}):\n{shown}"


def _not_found(number: int, parent: str, search: str) -> str:
    hint = ""
    squeeze = [line.strip() for line in search.split("\n") if line.strip()]
    parent_squeezed = [line.strip() for line in parent.split("\n") if line.strip()]
    if squeeze and any(parent_squeezed[k : k + len(squeeze)] == squeeze for k in range(len(parent_squeezed))):
        hint = " It matches if whitespace is ignored: copy the lines exactly, indentation and blank lines included."
    return f"edit {number}: its SEARCH text does not occur in the parent.{hint}\n{nearest_lines(parent, search)}"


def apply_edits(parent: str, edits: tuple[Edit, ...] | list[Edit]) -> str:
    """The child: ``parent`` with every edit applied, or nothing at all.

    Raises:
        EditError: an edit's SEARCH text is empty, missing, ambiguous or overlaps another
            edit, or the edits leave the parent unchanged.
    """
    text = parent if parent.endswith("\n") else parent + "\n"
    starts = _line_starts(text)
    spans: list[tuple[int, int, int]] = []  # (start, end, edit index)
    for index, edit in enumerate(edits):
        number = index + 1
        if not edit.search.strip():
            raise EditError(f"edit {number}: its SEARCH text is empty; copy the lines to replace from the parent")
        found = _occurrences(text, edit.search, starts)
        if not found:
            raise EditError(_not_found(number, text, edit.search))
        if len(found) > 1:
            lines = ", ".join(str(text.count("\n", 0, at) + 1) for at in found)
            raise EditError(
                f"edit {number}: its SEARCH text occurs {len(found)} times in the parent (at lines {lines}); "
                "include more surrounding lines so that it matches exactly one place"
            )
        spans.append((found[0], found[0] + len(edit.search), index))
    spans.sort()
    for (_, e1, i1), (s2, _, i2) in zip(spans, spans[1:], strict=False):
        if s2 < e1:
            raise EditError(f"edits {min(i1, i2) + 1} and {max(i1, i2) + 1} overlap in the parent; merge them into one")
    pieces, cursor = [], 0
    for start, end, index in spans:
        pieces += [text[cursor:start], edits[index].replace]
        cursor = end
    child = "".join(pieces) + text[cursor:]
    if not parent.endswith("\n"):
        child = child[:-1] if child.endswith("\n") else child
    if child == parent:
        raise EditError("the edits leave the parent unchanged (every REPLACE equals its SEARCH)")
    return child
