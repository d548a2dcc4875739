"""evo export --results-tsv, evo plot, evo show and evo lineage --html on a fake-genome run."""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
import struct

import pytest
from fake_run import build_fake_run

from evo.cli import main
from evo.config import RunConfig
from evo.lineage_layout import layout
from evo.plot import HEIGHT_PX, WIDTH_PX
from evo.results import best


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return build_fake_run(tmp_path_factory.mktemp("project"))


def _args(fake, *argv):
    return [*argv, "--project", str(fake.project)]


def _changed_line(fake, genome_id):
    """The first added line of the genome's diff against its first parent, computed here."""
    results = {r.genome_id: r for r in fake.results()}
    child = results[genome_id].genome
    old = fake.archive.source(results[child.parents[0]].genome.source_sha256).splitlines()
    new = fake.archive.source(child.source_sha256).splitlines()
    return next(line[2:] for line in difflib.ndiff(old, new) if line.startswith("+ "))


# ---------------------------------------------------------------------------- results.tsv

def test_results_tsv_has_one_row_per_evaluated_genome_with_autoresearch_statuses(fake, tmp_path):
    out = tmp_path / "results.tsv"
    assert main(_args(fake, "export", "--results-tsv", str(out))) == 0
    assert not (tmp_path / "train.py").exists()
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert out.read_text().splitlines()[0] == "commit\tval_bpb\tmemory_gb\tstatus\tdescription"
    results = {r.genome_id: r for r in fake.results()}
    assert [r["commit"] for r in rows] == [g for g, r in results.items() if r.is_finished]  # evaluation order
    assert fake.pending not in {r["commit"] for r in rows}
    best_so_far = None
    for row in rows:
        r = results[row["commit"]]
        assert row["description"] == r.genome.description
        if row["commit"] == fake.crashed:
            assert (row["status"], row["val_bpb"], row["memory_gb"]) == ("crash", "0.000000", "0.0")
            continue
        assert row["val_bpb"] == f"{r.val_bpb:.6f}"
        assert row["memory_gb"] == "0.0"
        expected = "keep" if best_so_far is None or r.val_bpb < best_so_far else "discard"
        assert row["status"] == expected
        if expected == "keep":
            best_so_far = r.val_bpb
    statuses = [r["status"] for r in rows]
    assert statuses[0] == "keep" and "discard" in statuses and statuses.count("crash") == 1
    assert best_so_far == best(list(results.values())).val_bpb


def test_results_tsv_fields_are_written_as_they_are_never_quoted():
    from evo.results_tsv import Row, to_tsv

    row = Row("g0003", "0.997900", "44.0", "keep", 'WINDOW_PATTERN "SSSL" -> "SL"')
    assert to_tsv([row]).splitlines()[1] == 'g0003\t0.997900\t44.0\tkeep\tWINDOW_PATTERN "SSSL" -> "SL"'
    # a leading quote would open a quoted field for TSV readers: only then is the field quoted
    leading = Row("g0004", "0.9", "0.0", "discard", '"SSSL" everywhere')
    (parsed,) = list(csv.reader(io.StringIO(to_tsv([leading])), delimiter="\t"))[1:]
    assert parsed[4] == '"SSSL" everywhere'


# ---------------------------------------------------------------------------- plot

def test_plot_writes_a_png_of_the_expected_size(fake, tmp_path):
    out = tmp_path / "progress.png"
    assert main(_args(fake, "plot", "-o", str(out))) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (WIDTH_PX, HEIGHT_PX)
    assert len(data) > 20_000  # dots, lines and labels, not an empty canvas


def test_a_replicate_is_never_a_new_best_on_the_plot(tmp_path):
    from test_cli_runs import SEED, _complete, add_run

    from evo.archive import Archive
    from evo.plot import progress_points

    archive = Archive(tmp_path / "archive" / "evo.duckdb")
    seed_id, child_id = add_run(archive, tmp_path, "p", children=1)  # readings: seed 2.0, child 1.9
    ev = archive.start_evaluation("p", seed_id, 43, "cpu", tmp_path / "rep.log")
    archive.finish_evaluation(ev.eval_id, _complete(1.5))  # the seed's replicate reads lower than anything
    late = archive.add_genome("p", 1, "hyperparam", "LR 0.04 -> 0.03", SEED.replace("0.04", "0.03"), (seed_id,))
    ev = archive.start_evaluation("p", late.genome_id, 42, "cpu", tmp_path / "late.log")
    archive.finish_evaluation(ev.eval_id, _complete(1.8))
    points = progress_points(archive.genomes("p"), archive.evaluations("p"))
    assert [(p.genome_id, p.val_bpb, p.kept) for p in points] == [
        (seed_id, 2.0, True), (child_id, 1.9, True), (seed_id, 1.5, False), (late.genome_id, 1.8, True)]


def test_a_seed_whose_first_reading_failed_is_the_plot_s_baseline_once_it_completes(tmp_path):
    from test_cli_runs import SEED, _complete, _failed

    from evo.archive import Archive
    from evo.plot import plot_progress

    archive = Archive(tmp_path / "archive" / "evo.duckdb")
    archive.create_run(RunConfig(run="f", profile="smoke", fitness="reported"), 1.0, tmp_path)
    seed = archive.add_genome("f", 0, "seed", "seed genome (seed_train.py)", SEED)
    for seed_value, outcome in ((42, _failed()), (43, _complete(2.0))):  # a crash, then a reading
        ev = archive.start_evaluation("f", seed.genome_id, seed_value, "cpu", tmp_path / f"{seed_value}.log")
        archive.finish_evaluation(ev.eval_id, outcome)
    points = plot_progress(archive.genomes("f"), archive.evaluations("f"), "f", tmp_path / "p.png")
    assert [(p.val_bpb, p.kept) for p in points] == [(None, False), (2.0, True)]
    assert (tmp_path / "p.png").stat().st_size > 10_000


# ---------------------------------------------------------------------------- show

def test_show_prints_the_genomes_source_metrics_and_log_tail(fake, capsys):
    results = fake.results()
    top = best(results)
    assert main(_args(fake, "show", top.genome_id)) == 0
    out = capsys.readouterr().out
    assert fake.archive.source(top.genome.source_sha256).strip() in out
    assert f"val_bpb: {top.val_bpb:g}" in out
    assert top.genome.description in out
    assert top.last.log_tail.strip().splitlines()[-1] in out


def test_show_diff_against_parent_and_against_another_genome(fake, capsys):
    child = next(r for r in fake.results() if r.genome.parents and r.is_complete)
    changed = _changed_line(fake, child.genome_id)
    assert main(_args(fake, "show", child.genome_id, "--diff")) == 0
    out = capsys.readouterr().out
    assert f"--- {child.genome.parents[0]}.py" in out and f"+++ {child.genome_id}.py" in out
    assert f"+{changed}" in out.splitlines()
    assert "----- source" not in out  # the diff replaces the source
    assert main(_args(fake, "show", fake.crashed, "--diff", child.genome_id)) == 0
    out = capsys.readouterr().out
    assert f"--- {child.genome_id}.py" in out and '+BEHAVIOUR = "crash"' in out.replace("'", '"')


def test_show_diff_of_the_seed_needs_another_genome(fake, capsys):
    assert main(_args(fake, "show", "g0000", "--diff")) == 2
    assert "has no parent" in capsys.readouterr().err  # errors go to stderr, one line


# ---------------------------------------------------------------------------- HTML page

def test_lineage_html_holds_every_genome_and_loads_nothing_from_the_network(fake, tmp_path):
    out = tmp_path / "lineage.html"
    assert main(_args(fake, "lineage", "--html", str(out))) == 0
    page = out.read_text()
    for r in fake.results():
        assert f'"{r.genome_id}"' in page
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    assert not re.search(r"<link\b", page, re.I)
    assert not re.search(r"@import|url\(", page, re.I)
    assert not re.search(r"https?://", page)  # not even an SVG namespace: the page names no host at all
    data = json.loads(re.search(r'<script id="evo-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    g, tables = data["genomes"], data["tables"]  # one list per field, categorical fields as table indices
    nodes = {gid: {"fail": tables["fail"][g["fail"][i]], "state": tables["state"][g["state"][i]]}
             for i, gid in enumerate(g["id"])}
    assert nodes[fake.crashed]["fail"] == "crash" and nodes[fake.pending]["state"] == "PENDING"
    assert data["best"] == best(fake.results()).genome_id
    assert data["best"] in data["ancestry"] and "g0000" in data["ancestry"]
    assert data["run"]["fitness"] == "reported" and "fitness REPORTED by the genomes (untrusted)" in page


def test_layout_puts_generations_on_rows_and_untangles_crossings():
    # two parents in generation 0 whose children arrive in the "wrong" creation order
    generations = {"a": 0, "b": 0, "b1": 1, "a1": 1, "b2": 1, "a2": 1}
    edges = [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")]
    pos = layout(generations, edges, dx=10, dy=50)
    assert {pos[n][1] for n in ("a", "b")} == {0} and {pos[n][1] for n in ("a1", "b1", "a2", "b2")} == {50}
    row1 = sorted(("a1", "b1", "a2", "b2"), key=lambda n: pos[n][0])
    assert set(row1[:2]) == {"a1", "a2"} and set(row1[2:]) == {"b1", "b2"}  # no crossing left


def test_layout_puts_the_seeds_mutants_on_a_row_below_the_seed():
    pos = layout({"s": 0, "m1": 0, "m2": 0, "c": 1}, [("s", "m1"), ("s", "m2"), ("m1", "c")], dx=10, dy=50)
    assert pos["s"] == (0, 0) and pos["m1"][1] == pos["m2"][1] == 50 and pos["c"] == (0, 100)
