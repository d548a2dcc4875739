"""Tables fitted to a terminal: whole values on one line per row, whatever the width.

Rich wraps or shrinks every column of a table that is too wide for the terminal, which
cuts numbers and puts one word of a description per line. Here the widths are decided
up front instead: every column is as wide as its widest value, the least important
columns (highest ``priority``) are dropped while the one flexible column (a description,
a name) would get fewer than ``min_flexible`` cells, and the flexible column takes the
rest of the line, its values cut with an ellipsis. ``wide`` keeps every column and whole
values, however long the lines get.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text

GAP = 2  # cells between two columns


@dataclass
class Column:
    """One column: its header, its cells (plain text, one per row) and how it is fitted.

    Attributes:
        priority: 0 for a column always shown; on a narrow terminal the highest go first.
        right: right-justified (numbers).
        flexible: takes the rest of the line, its values cut with an ellipsis.
    """

    name: str
    cells: list[str]
    priority: int = 0
    right: bool = False
    flexible: bool = False

    @property
    def width(self) -> int:
        """Cells needed by the header and the widest value."""
        return max([len(self.name), *(len(c) for c in self.cells)])


def fit(columns: Sequence[Column], width: int, min_flexible: int = 20) -> tuple[list[Column], int]:
    """The columns shown in ``width`` cells and the flexible column's width (0 without one):
    the least important columns are dropped while the rest, with the flexible one at
    ``min_flexible`` cells (or its widest value, if narrower), would not fit."""
    shown = list(columns)
    flexible = next((c for c in shown if c.flexible), None)
    while True:
        fixed = sum(c.width for c in shown if c is not flexible) + GAP * (len(shown) - 1)
        needed = fixed + (min(min_flexible, flexible.width) if flexible is not None else 0)
        droppable = [c for c in shown if c.priority > 0]
        if needed <= width or not droppable:
            break
        shown.remove(max(droppable, key=lambda c: c.priority))
    if flexible is None:
        return shown, 0
    return shown, max(min(width - fixed, flexible.width), len(flexible.name))


def fitted_table(columns: Sequence[Column], width: int, wide: bool = False, min_flexible: int = 20,
                 styles: Sequence[str] | None = None) -> tuple[Table, int]:
    """A rich table of ``columns`` fitted to ``width`` (every column and whole values if ``wide``).

    Args:
        styles: one style per row ("" for none).

    Returns:
        The table and the number of cells its lines take.
    """
    if wide:
        shown, sizes = list(columns), [c.width for c in columns]
    else:
        shown, flexible_width = fit(columns, width, min_flexible)
        sizes = [flexible_width if c.flexible else c.width for c in shown]
    table = Table(box=None, padding=(0, GAP // 2), pad_edge=False, show_edge=False, header_style="bold",
                  collapse_padding=False)
    for c, size in zip(shown, sizes, strict=True):
        table.add_column(c.name, justify="right" if c.right else "left", width=size, min_width=size, max_width=size,
                         no_wrap=True, overflow="ellipsis")
    rows = len(shown[0].cells) if shown else 0
    for i in range(rows):
        table.add_row(*(Text(c.cells[i], no_wrap=True, overflow="ellipsis") for c in shown),
                      style=styles[i] if styles else "")
    return table, sum(sizes) + GAP * (len(shown) - 1)
