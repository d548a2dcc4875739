"""The progress display at 80 columns: the live rows and the permanent lines fit the width and
show the generation, genome N of P, the description (cut), the budget left and the declared best."""

from __future__ import annotations

import io
from datetime import datetime

from rich.console import Console

from evo.progress import ConsoleReporter, clock
from evo.records import EvalState, EvaluationRecord, GenomeRecord
from evo.results import GenomeResult
from evo.runner import Tick

LONG = "MATRIX_LR 0.04 -> 0.0523, EMBEDDING_LR 0.6 -> 0.48, WARMDOWN_RATIO 0.5 -> 0.62, DEPTH 8 -> 10"


def _genome(genome_id: str, generation: int = 2, description: str = LONG) -> GenomeRecord:
    return GenomeRecord("r", genome_id, generation, "optuna", description, "s", "n", datetime(2026, 1, 1), ("g0000",))


def _evaluation(genome_id: str, val_bpb: float | None, state: EvalState = EvalState.COMPLETE) -> EvaluationRecord:
    return EvaluationRecord(
        eval_id=1, run="r", genome_id=genome_id, attempt=1, state=state, started_at=datetime(2026, 1, 1),
        finished_at=datetime(2026, 1, 1), seed=42, device="cuda:0", log_path="x.log", wall_s=312.4,
        failure_kind=None if state is EvalState.COMPLETE else "crash",
        metrics={} if val_bpb is None else {"val_bpb": val_bpb},
    )


def _result(genome: GenomeRecord, val_bpb: float, n: int) -> GenomeResult:
    return GenomeResult(genome, "COMPLETE", val_bpb, 0.001, n, _evaluation(genome.genome_id, val_bpb))


def _reporter() -> tuple[ConsoleReporter, Console]:
    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    return ConsoleReporter(300.0, console), console


def _live_lines(reporter: ConsoleReporter, console: Console) -> list[str]:
    lines = []
    for renderable in reporter._progress.get_renderables():
        for segments in console.render_lines(renderable, console.options, pad=False):
            lines.append("".join(s.text for s in segments).rstrip())
    return lines


def test_the_live_rows_fit_80_columns_and_show_generation_place_budget_left_and_declared_best():
    reporter, console = _reporter()
    best = _genome("g0007", 1, "EMBEDDING_LR 0.6 -> 0.48")
    reporter.generation_started(2, 8)
    reporter.genome_finished(best, _evaluation("g0007", 0.987654), _result(best, 0.987654, 2))
    for slot, (genome_id, index) in enumerate([("g0012", 3), ("g0013", 4)]):
        reporter.genome_started(_genome(genome_id), index, 8, 1, f"cuda:{slot}")
        reporter.tick(f"cuda:{slot}", Tick(elapsed_s=100.0 + slot * 250, wall_limit_s=900.0, last_line="step 10"))
    lines = _live_lines(reporter, console)
    reporter._progress.stop()
    assert len(lines) == 3 and all(len(line) <= 80 for line in lines), lines
    assert lines[0] == "generation 2 · declared best g0007 val_bpb 0.987654 (n=2)"
    assert lines[1].startswith("cuda:0 g0012 gen 2 3/8 MATRIX_LR 0.04 -> 0.0523") and "…" in lines[1]
    assert lines[1].endswith("200s left")
    assert lines[2].startswith("cuda:1 g0013 gen 2 4/8 ") and lines[2].endswith("+50s")  # past the budget


def test_finished_lines_fit_80_columns_and_new_best_is_said_only_for_a_new_declared_best():
    reporter, console = _reporter()
    first, second, worse = _genome("g0001"), _genome("g0002"), _genome("g0003")
    reporter.genome_finished(first, _evaluation("g0001", 1.000001), _result(first, 1.000001, 1))
    reporter.genome_finished(second, _evaluation("g0002", 0.999), _result(first, 1.000001, 1))  # not declared
    reporter.genome_finished(worse, _evaluation("g0003", None, EvalState.FAIL), _result(first, 1.000001, 1))
    lines = console.file.getvalue().splitlines()
    assert len(lines) == 3 and all(len(line) <= 80 for line in lines), lines
    assert lines[0].endswith("-> val_bpb 1.000001 new best (312s)") and "…" in lines[0]
    assert lines[1].endswith("-> val_bpb 0.999000 (312s)")  # a lower reading that is not the declared best
    assert lines[2].endswith("-> FAIL crash (312s)")


def test_a_new_best_over_several_readings_is_said_with_its_mean():
    reporter, console = _reporter()
    genome = _genome("g0013", description="LR 0.04 -> 0.05")
    reporter.genome_finished(genome, _evaluation("g0013", 1.508694), _result(genome, 1.504421, 2))
    (line,) = console.file.getvalue().splitlines()
    assert line.endswith("-> val_bpb 1.508694 new best (mean 1.504421, n=2) (312s)"), line


def test_a_held_out_reading_and_a_resumed_run_s_known_best_are_not_announced_as_new_bests():
    import dataclasses

    reporter, console = _reporter()
    best = _genome("g0004")
    reporter.best = _result(best, 0.99, 2)  # a resumed run's declared best so far (evo resume sets it)
    reporter.genome_finished(best, _evaluation("g0004", 0.98), _result(best, 0.985, 3))
    fresh, _ = _reporter()
    held = dataclasses.replace(_evaluation("g0004", 0.97), held_out=True)
    fresh.genome_finished(best, held, _result(best, 0.985, 3))  # first line of a process, but held out
    for out in (console, fresh.console):
        (line,) = out.file.getvalue().splitlines()
        assert "new best" not in line, line


def test_the_clock_counts_down_the_budget_then_the_time_past_it():
    assert clock(0.0, 300.0) == " 300s left"
    assert clock(299.6, 300.0) == "   0s left"
    assert clock(312.0, 300.0) == "     +12s"


def test_a_stopped_run_takes_its_live_rows_off_the_screen(monkeypatch, tmp_path):
    import evo.cli_run as cli_run
    from evo.config import RunConfig

    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    seen = {}

    class Interrupted:
        def __init__(self, paths, archive, config, time_budget_s, device, reporter, execution):
            seen["reporter"] = reporter

        def run(self, seed_code):
            seen["reporter"].genome_started(_genome("g0001"), 1, 4, 1, "cpu")
            assert seen["reporter"]._progress is not None  # a live row while it trains
            raise KeyboardInterrupt

    printed = console.print

    def print_after_the_rows(*args, **kwargs):  # the last line comes once the live rows are gone
        seen["rows at the last line"] = seen["reporter"]._progress
        printed(*args, **kwargs)

    monkeypatch.setattr(console, "print", print_after_the_rows)
    monkeypatch.setattr(cli_run, "console", console)
    monkeypatch.setattr(cli_run, "Engine", Interrupted)
    monkeypatch.setattr(cli_run, "_sigterm_as_interrupt", lambda: None)
    config = RunConfig(run="r", profile="smoke")
    assert cli_run._execute(None, None, config, 300.0, "cpu", None, None) == 130
    assert seen["reporter"]._progress is None and not console._live_stack  # no bar left to redraw
    assert seen["rows at the last line"] is None
    assert console.file.getvalue().rstrip().endswith("Continue with: evo resume --run r")
