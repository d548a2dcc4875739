"""Progress output while a run works: the current genome, its budget, the best so far.

On a terminal a live line (rich) shows the genome being trained, the wall time against
its budget and the genome's own last progress line; each finished genome gets one
permanent line, which is also all that is printed when output goes to a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from evo.records import EvalState, EvaluationRecord, GenomeRecord
from evo.results import GenomeResult
from evo.runner import Tick


class Reporter(Protocol):
    """Receives the engine's progress events."""

    def generation_started(self, generation: int, population: int) -> None: ...

    def genome_started(self, genome: GenomeRecord, index: int, population: int, attempt: int) -> None: ...

    def tick(self, tick: Tick) -> None: ...

    def genome_finished(self, genome: GenomeRecord, evaluation: EvaluationRecord, best: GenomeResult | None) -> None: ...

    def generation_finished(self, generation: int, best: GenomeResult | None, results: Sequence[GenomeResult]) -> None: ...

    def message(self, text: str) -> None: ...


def _fmt_bpb(value: float | None) -> str:
    return f"{value:.6f}" if value is not None else "-"


class ConsoleReporter:
    """Reporter printing to a rich console (live bar on a terminal, plain lines otherwise).

    Args:
        time_budget_s: each genome's training budget, for the progress bar's scale.
        console: where to print (default: stdout).
    """

    def __init__(self, time_budget_s: float, console: Console | None = None) -> None:
        self.console = console or Console()
        self.time_budget_s = time_budget_s
        self.generation = 0
        self.best: GenomeResult | None = None
        self._progress: Progress | None = None
        self._task = None

    # a bar from 0 to the budget plus start-up; the text carries the genome's own last line
    def _start_bar(self, label: str, total_s: float) -> None:
        self._stop_bar()
        if not self.console.is_terminal:
            return
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.completed:>4.0f}/{task.total:.0f} s"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[last]}", style="dim"),
            console=self.console,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(label, total=total_s, last="")

    def _stop_bar(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._task = None

    def generation_started(self, generation: int, population: int) -> None:
        self.generation = generation
        self.console.rule(f"generation {generation} · {population} children")

    def genome_started(self, genome: GenomeRecord, index: int, population: int, attempt: int) -> None:
        again = f" (attempt {attempt})" if attempt > 1 else ""
        best = f"best {_fmt_bpb(self.best.val_bpb)} ({self.best.genome_id})" if self.best else "best -"
        label = f"[gen {genome.generation} {index}/{population}] {genome.genome_id}{again} {genome.description[:60]} | {best}"
        if not self.console.is_terminal:
            self.console.print(f"{label} ... training for {self.time_budget_s:.0f} s", highlight=False)
        self._start_bar(label, self.time_budget_s)

    def tick(self, tick: Tick) -> None:
        if self._progress is not None:
            total = max(self.time_budget_s, tick.elapsed_s)
            self._progress.update(self._task, completed=tick.elapsed_s, total=total, last=tick.last_line[-70:])

    def genome_finished(self, genome: GenomeRecord, evaluation: EvaluationRecord, best: GenomeResult | None) -> None:
        self._stop_bar()
        self.best = best
        wall = f"{evaluation.wall_s:.1f} s" if evaluation.wall_s is not None else "-"
        if evaluation.state is EvalState.COMPLETE:
            mark = " [bold green]new best[/]" if best and best.genome_id == genome.genome_id else ""
            verdict = f"val_bpb {evaluation.val_bpb:.6f}{mark}"
        else:
            verdict = f"[red]{evaluation.state.value}[/] {evaluation.failure_kind}: {(evaluation.error or '')[:80]}"
        self.console.print(f"  {genome.genome_id} {genome.description[:70]} -> {verdict} (wall {wall})")

    def generation_finished(self, generation: int, best: GenomeResult | None, results: Sequence[GenomeResult]) -> None:
        self._stop_bar()
        done = [r for r in results if r.genome.generation == generation]
        complete = sum(1 for r in done if r.is_complete)
        self.console.print(
            f"generation {generation} done: {complete}/{len(done)} complete; "
            f"best so far {_fmt_bpb(best.val_bpb if best else None)}" + (f" ({best.genome_id})" if best else "")
        )

    def message(self, text: str) -> None:
        self._stop_bar()
        self.console.print(text)
