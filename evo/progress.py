"""Progress output while a run works: one line per busy evaluation slot, the best so far.

On a terminal a live display (rich) shows the generation and the declared best on its
first line, then one row per slot: its device, the genome, its generation and place in
its cohort (``gen 2 3/8``), the operator's description cut to fit the width, a bar of
wall time against the training budget, and the seconds of budget left (``+Ns`` once the
wall time is past the budget: start-up and the final evaluation). Every line fits the
terminal's width. Finished genomes, new declared bests and messages are printed as
permanent lines above it, which is also all that is printed when output goes to a file.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.text import Text

from evo.records import EvalState, EvaluationRecord, GenomeRecord
from evo.results import GenomeResult
from evo.runner import Tick

BAR_WIDTH = 10
TIME_WIDTH = 10  # " 123s left"


class Reporter(Protocol):
    """Receives the engine's progress events (the engine's thread, except ``tick``)."""

    def generation_started(self, generation: int, population: int) -> None: ...

    def genome_started(
        self, genome: GenomeRecord, index: int, population: int, attempt: int, device: str,
        budget_s: float | None = None,
    ) -> None:
        """An evaluation started; ``budget_s``: a screen's shorter time budget (:mod:`evo.screening`)."""
        ...

    def tick(self, device: str, tick: Tick) -> None:
        """Progress of the genome running on ``device``; called from worker threads."""
        ...

    def genome_finished(self, genome: GenomeRecord, evaluation: EvaluationRecord, best: GenomeResult | None) -> None: ...

    def generation_finished(self, generation: int, best: GenomeResult | None, results: Sequence[GenomeResult]) -> None: ...

    def message(self, text: str) -> None: ...


def _fmt_bpb(value: float | None) -> str:
    return f"{value:.6f}" if value is not None else "-"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def clock(elapsed_s: float, time_budget_s: float) -> str:
    """The seconds of training budget left (``"  12s left"``), or ``"+Ns"`` past it."""
    if elapsed_s <= time_budget_s:
        return f"{min(time_budget_s - elapsed_s, 99999):4.0f}s left"
    return f"+{min(elapsed_s - time_budget_s, 99999):.0f}s".rjust(TIME_WIDTH - 1)


class _LiveRows(Progress):
    """rich's Progress with a first line above the rows (the generation and the declared best)."""

    header = ""

    def get_renderables(self) -> Iterable[RenderableType]:
        if self.header:
            yield Text(self.header, no_wrap=True, overflow="ellipsis")
        yield self.make_tasks_table(self.tasks)


class ConsoleReporter:
    """Reporter printing to a rich console (a live row per slot on a terminal, plain lines otherwise).

    Args:
        time_budget_s: each genome's training budget, for the bars' scale.
        console: where to print (default: stdout).
    """

    def __init__(self, time_budget_s: float, console: Console | None = None) -> None:
        self.console = console or Console()
        self.time_budget_s = time_budget_s
        self.best: GenomeResult | None = None
        self.generation: int | None = None
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._rows: dict[str, TaskID] = {}  # slot -> its live row
        self._slot_of: dict[str, str] = {}  # genome id -> the slot running it
        self._budget_of: dict[str, float] = {}  # slot -> the time budget of what it runs (a screen's is shorter)

    # ------------------------------------------------------------------ the live rows

    def _live(self) -> Progress | None:
        if not self.console.is_terminal:
            return None
        if self._progress is None:
            self._progress = _LiveRows(
                TextColumn("{task.description}", markup=False),
                BarColumn(bar_width=BAR_WIDTH),
                TextColumn("{task.fields[clock]}", markup=False),
                console=self.console, transient=True,
            )
            self._progress.header = self._header()
            self._progress.start()
        return self._progress

    def _header(self) -> str:
        parts = [f"generation {self.generation}"] if self.generation is not None else []
        best = self.best
        if best is not None and best.val_bpb is not None:
            parts.append(f"declared best {best.genome_id} val_bpb {best.val_bpb:.6f} (n={best.n})")
        return " · ".join(parts)

    def _refresh_header(self) -> None:
        with self._lock:
            if self._progress is not None:
                self._progress.header = self._header()

    def _label(self, device: str, genome: GenomeRecord, index: int, population: int, attempt: int) -> str:
        again = f" a{attempt}" if attempt > 1 else ""
        head = f"{device} {genome.genome_id} gen {genome.generation} {index}/{population}{again} "
        room = self.console.width - BAR_WIDTH - TIME_WIDTH - 3 - len(head)
        return head + _cut(genome.description, max(8, room))

    def _stop_row(self, device: str) -> None:
        with self._lock:
            task = self._rows.pop(device, None)
            if task is not None and self._progress is not None:
                self._progress.remove_task(task)
                if not self._rows:
                    self._progress.stop()
                    self._progress = None

    # ------------------------------------------------------------------ events

    def generation_started(self, generation: int, population: int) -> None:
        self.generation = generation
        self._refresh_header()
        self.message(f"[bold]generation {generation}[/] · {population} children")

    def genome_started(
        self, genome: GenomeRecord, index: int, population: int, attempt: int, device: str,
        budget_s: float | None = None,
    ) -> None:
        label = self._label(device, genome, index, population, attempt)
        budget = self.time_budget_s if budget_s is None else budget_s
        self._slot_of[genome.genome_id] = device
        with self._lock:
            self._budget_of[device] = budget
            live = self._live()
            if live is None:
                what = "training" if budget_s is None else "screening: training"
                self.console.print(f"{label} ... {what} for {budget:.0f} s", highlight=False, markup=False)
                return
            old = self._rows.pop(device, None)
            if old is not None:
                live.remove_task(old)
            self._rows[device] = live.add_task(label, total=budget, clock="")

    def tick(self, device: str, tick: Tick) -> None:
        with self._lock:
            task = self._rows.get(device)
            if task is None or self._progress is None:
                return
            budget = self._budget_of.get(device, self.time_budget_s)
            self._progress.update(task, completed=min(tick.elapsed_s, budget), clock=clock(tick.elapsed_s, budget))

    def genome_finished(self, genome: GenomeRecord, evaluation: EvaluationRecord, best: GenomeResult | None) -> None:
        self._stop_row(self._slot_of.pop(genome.genome_id, evaluation.device or ""))
        # a held-out reading takes part in no decision (evo.held_out): it is never news
        new_best = (best is not None and not evaluation.held_out
                    and (self.best is None or best.genome_id != self.best.genome_id))
        self.best = best
        self._refresh_header()
        wall = f"{evaluation.wall_s:.0f}s" if evaluation.wall_s is not None else "-"
        if evaluation.state is EvalState.COMPLETE and evaluation.is_screen:
            verdict = f"screen val_bpb {evaluation.val_bpb:.6f} at {evaluation.fidelity:.0%} of the budget"
        elif evaluation.state is EvalState.COMPLETE:
            mark = ""
            if new_best and best.genome_id == genome.genome_id:  # the declared best is a mean, not this reading
                mark = " new best" if best.n < 2 else f" new best (mean {best.val_bpb:.6f}, n={best.n})"
            verdict = f"val_bpb {evaluation.val_bpb:.6f}{mark}"
        else:
            verdict = f"{evaluation.state.value} {evaluation.failure_kind or ''}".rstrip()
        tail = f" -> {verdict} ({wall})"
        room = self.console.width - len(f"  {genome.genome_id} ") - len(tail)
        line = Text(f"  {genome.genome_id} {_cut(genome.description, max(10, room))}{tail}")
        if evaluation.state is EvalState.COMPLETE:
            line.highlight_words([" new best"], "bold green")
        else:
            line.highlight_words([evaluation.state.value], "red")
        self.console.print(line, highlight=False)
        if evaluation.state is not EvalState.COMPLETE and evaluation.error:
            self.console.print(f"    {escape(_cut(evaluation.error, self.console.width - 4))}", highlight=False,
                               style="dim")

    def generation_finished(self, generation: int, best: GenomeResult | None, results: Sequence[GenomeResult]) -> None:
        complete = sum(1 for r in results if r.is_complete)
        self.console.print(
            f"generation {generation} done: {complete}/{len(results)} complete; "
            f"best {_fmt_bpb(best.val_bpb if best else None)}" + (f" ({best.genome_id})" if best else ""),
            highlight=False,
        )

    def message(self, text: str) -> None:
        self.console.print(text)

    def close(self) -> None:
        """Take the live rows off the screen (a stopped run leaves no bar of a genome that
        no longer trains)."""
        with self._lock:
            if self._progress is not None:
                self._progress.stop()
                self._progress = None
            self._rows.clear()
