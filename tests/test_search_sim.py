"""benchmarks/search_sim.py: settings tried with --set, and repeats that compare paired."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import landscapes as L  # noqa: E402
import search_sim  # noqa: E402

from evo import racing  # noqa: E402


def test_set_overrides_a_config_field_and_a_module_constant(monkeypatch):
    monkeypatch.setattr(racing, "REPLICATE_SHARE", racing.REPLICATE_SHARE)  # restored after the test
    overrides = search_sim.apply_settings(
        ["config.tournament_size=5", "config.operators={'optuna': 1.0}", "evo.racing.REPLICATE_SHARE=0.1"]
    )
    assert overrides == {"tournament_size": 5, "operators": {"optuna": 1.0}}
    assert racing.REPLICATE_SHARE == 0.1


@pytest.mark.parametrize("setting", ["tournament_size", "config.nope=1", "evo.racing.NOPE=1", "os.sep='x'",
                                     "evo.nowhere.X=1", "config.population=eight"])
def test_set_refuses_what_it_cannot_apply(setting):
    with pytest.raises(ValueError):
        search_sim.apply_settings([setting])


def test_a_repeat_is_the_same_run_each_time():
    land = L.parse_name("sphere:0")
    first = search_sim.simulate(land, 3, 12)
    assert len(first) == 12
    _, optimum = L.optimum(land)
    assert all(optimum <= x <= 1.0 for x in first), first
    assert search_sim.simulate(land, 3, 12) == first


def test_first_repeat_runs_the_later_repeats_themselves(tmp_path):
    """``--first-repeat 2 --repeats 1`` is repeat 2 of a longer invocation (fresh seeds for a check)."""
    out = tmp_path / "curves.json"
    assert search_sim.main(["--landscapes", "sphere:0", "--first-repeat", "2", "--repeats", "1",
                            "--evaluations", "12", "--json", str(out)]) == 0
    import json

    assert json.loads(out.read_text()) == {"sphere:0": [search_sim.simulate(L.parse_name("sphere:0"), 2, 12)]}


def test_the_oracle_bounds_the_choice_from_below(capsys):
    """The best genome evaluated is at least as good as the declared best (which the run
    evaluated, twice), and needing more readings can only make the best evaluated worse."""
    land = L.parse_name("cliff:0")
    keep: dict = {}
    chosen = search_sim.simulate(land, 1, 16, keep=keep)[-1]
    any_reading = search_sim.best_evaluated(land, keep["state"], keep["sources"], 1)
    two_readings = search_sim.best_evaluated(land, keep["state"], keep["sources"], 2)
    assert any_reading is not None and two_readings is not None
    assert any_reading <= two_readings <= chosen
    assert search_sim.best_evaluated(land, keep["state"], keep["sources"], 99) is None
    assert search_sim.main(["--landscapes", "cliff:0", "--first-repeat", "1", "--repeats", "1",
                            "--evaluations", "16", "--oracle"]) == 0
    line = capsys.readouterr().out
    assert f"@16 {chosen:.4f}" in line
    assert f"best evaluated {any_reading:.4f}" in line and f"best with >= 2 readings {two_readings:.4f}" in line


def test_the_operator_report_counts_every_child_once(capsys):
    """Every genome but the seed is a child of one operator; the better and failed counts are
    within them, and each non-failed child of a non-failed parent has a gain."""
    land = L.parse_name("cliff:0")
    keep: dict = {}
    search_sim.simulate(land, 0, 16, keep=keep)
    report = search_sim.operator_report(land, [keep])
    assert sum(n for n, *_ in report.values()) == len(keep["state"]) - 1
    for n, better, failed, gains in report.values():
        assert 0 <= better <= len(gains) <= n - failed
        assert better == sum(g > 1e-12 for g in gains)
    assert search_sim.main(["--landscapes", "cliff:0", "--repeats", "1", "--evaluations", "16", "--by-operator"]) == 0
    printed = capsys.readouterr().out
    for op, (n, better, failed, _) in report.items():
        assert f"  {op:12s} {n:4d} children, {better:4d} better than their parent, {failed:3d} failed" in printed


def test_calibration_pairs_each_stated_probability_with_the_truth(capsys):
    """--calibration: at each checkpoint the declared best's stated P(best) (what evo status
    prints) and whether its true fitness is the lowest of every COMPLETE genome."""
    land = L.parse_name("coupled:0")
    keep: dict = {"calibration": []}
    search_sim.simulate(land, 0, 32, keep=keep)
    points = [p for p in keep["calibration"] if p is not None]
    assert len(keep["calibration"]) == 32 // search_sim.CALIBRATION_EVERY and points
    state, sources = keep["state"], keep["sources"]
    stated, truly = search_sim.calibration_point(land, state, sources, 2)
    assert (stated, truly) == points[-1]  # nothing changed after the last checkpoint
    assert 0.0 <= stated <= 1.0 and stated == state.verdict(2).probability
    trues = {r.genome_id: L.true_fitness(land, sources[r.genome.source_sha256]) for r in state.results() if r.is_complete}
    best = state.verdict(2).best
    assert truly == (trues[best] <= min(t for t in trues.values() if t is not None) + 1e-12)
    report = search_sim.calibration_report([(0.8, True), (0.8, False), (0.2, False)])
    assert report.startswith("calibration over 3 checkpoints: stated 0.60, true 0.33")
    assert "[0.7, 0.9): 2 stated 0.80 true 0.50" in report and "[0.0, 0.5): 1 stated 0.20 true 0.00" in report
