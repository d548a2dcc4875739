"""evo lineage on a deep run: a chain of 3,000 generations (deeper than Python's recursion
limit) plus a crossover, a crash and a never-evaluated genome, built in bulk with SQL.

The tree lists every genome when piped, DOT holds every node and edge, the lean read agrees
with the full one, and the HTML page names every genome while keeping its size bounded
(details only for a bounded set), with diff lines that wrap.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import sys
from pathlib import Path

import duckdb
import pytest

from evo import viewer
from evo.archive import Archive
from evo.cli import main
from evo.config import RunConfig
from evo.lineage import load_nodes
from evo.lineage_render import INDENT_CAP
from evo.results import genome_results
from evo.show import source_diff

RUN = "deep"
CHAIN = 3000  # g0000 -> g0001 -> ... -> g2999, each a generation below its parent
CROSS, CRASH, PENDING = "g3000", "g3001", "g3002"  # child of g0010 and g0005; child of g2999; child of g0001
ALL_IDS = [f"g{i:04d}" for i in range(CHAIN + 3)]
PAGE_BOUND = 1_000_000  # bytes; the page at DETAILED = 50 of 3003 genomes
DETAILED = 50


def _source(i: int) -> str:
    """A genome's code: a common body and 2 KB of random hex, so that the diff against its
    parent carries ~4 KB that gzip cannot shrink much."""
    return f'"""genome {i}"""\nLR = 0.01  # learning rate\nKEY = "{os.urandom(1024).hex()}"  # noise\nprint("---")\n'


@pytest.fixture(scope="module")
def deep(tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("deep")
    path = project / "archive" / "evo.duckdb"
    archive = Archive(path)
    # each step of the chain is 1e-4 better: g2999, the last, is the declared best
    archive.create_run(RunConfig(run=RUN, profile="smoke", population=1, noise_replicates=1, best_replicates=1,
                                 fitness="reported"), 1.0, project)
    n = CHAIN + 3
    ids = [f"g{i:04d}" for i in range(n)]
    parents = [[]] + [[ids[i - 1]] for i in range(1, CHAIN)] + [["g0010", "g0005"], ["g2999"], ["g0001"]]
    generations = list(range(CHAIN)) + [11, CHAIN, 2]
    operators = ["seed"] + ["hyperparam"] * (CHAIN - 1) + ["crossover", "manual", "manual"]
    with duckdb.connect(str(path)) as con:
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT INTO sources SELECT unnest($1::VARCHAR[]), unnest($2::VARCHAR[])",
                    [[f"sha{i}" for i in range(n)], [_source(i) for i in range(n)]])
        con.execute(
            "INSERT INTO genomes SELECT $run, unnest($ids::VARCHAR[]), unnest($seq::INTEGER[]), unnest($gen::INTEGER[]), "
            "unnest($op::VARCHAR[]), unnest($desc::VARCHAR[]), unnest($sha::VARCHAR[]), unnest($norm::VARCHAR[]), "
            "TIMESTAMP '2026-01-01 00:00:00'",
            {"run": RUN, "ids": ids, "seq": list(range(n)), "gen": generations, "op": operators,
             "desc": [f"KEY step {i}" for i in range(n)], "sha": [f"sha{i}" for i in range(n)],
             "norm": [f"norm{i}" for i in range(n)]})
        edges = [(p, ids[i], k) for i in range(n) for k, p in enumerate(parents[i])]
        con.execute("INSERT INTO lineage SELECT $run, unnest($p::VARCHAR[]), unnest($c::VARCHAR[]), unnest($k::INTEGER[])",
                    {"run": RUN, "p": [e[0] for e in edges], "c": [e[1] for e in edges], "k": [e[2] for e in edges]})
        scored = list(range(CHAIN)) + [CHAIN]  # the chain improves step by step: g2999 is the best
        scores = [2.0 - i * 1e-4 for i in range(CHAIN)] + [2.5]
        con.execute(
            "INSERT INTO evaluations (eval_id, run, genome_id, attempt, state, started_at, finished_at, seed, device, "
            "log_path, wall_s, returncode, log_tail, val_bpb, metrics) SELECT unnest($e::BIGINT[]), $run, "
            "unnest($g::VARCHAR[]), 1, 'COMPLETE', TIMESTAMP '2026-01-01 00:00:00', TIMESTAMP '2026-01-01 00:00:01', "
            "42, 'cpu', 'x.log', 1.0, 0, 'step 1 | loss 5.0', unnest($v::DOUBLE[]), unnest($m::VARCHAR[])",
            {"e": [i + 1 for i in range(len(scored))], "run": RUN, "g": [ids[i] for i in scored], "v": scores,
             "m": [json.dumps({"val_bpb": v}) for v in scores]})
        con.execute(
            "INSERT INTO evaluations (eval_id, run, genome_id, attempt, state, started_at, finished_at, seed, device, "
            "log_path, wall_s, returncode, failure_kind, error, log_tail, metrics) VALUES (?, ?, ?, 1, 'FAIL', "
            "TIMESTAMP '2026-01-01 00:00:00', TIMESTAMP '2026-01-01 00:00:01', 42, 'cpu', 'x.log', 0.5, 1, 'crash', "
            "'RuntimeError: boom', 'Traceback', '{}')", [len(scored) + 1, RUN, CRASH])
        extra = [  # replicates, a re-run interrupted after a COMPLETE one, a COMPLETE without a finite score
            ("g0500", "COMPLETE", 1.951), ("g0500", "COMPLETE", 1.949), ("g0600", "INTERRUPTED", None),
            ("g0800", "COMPLETE", float("nan")),
        ]
        for k, (genome_id, state, value) in enumerate(extra):
            con.execute(
                "INSERT INTO evaluations (eval_id, run, genome_id, attempt, state, started_at, finished_at, seed, "
                "device, log_path, val_bpb, metrics) VALUES (?, ?, ?, 2, ?, TIMESTAMP '2026-01-01 00:00:00', "
                "TIMESTAMP '2026-01-01 00:00:01', 43, 'cpu', 'x.log', ?, ?)",
                [len(scored) + 2 + k, RUN, genome_id, state, value,
                 json.dumps({"val_bpb": value}) if value is not None and value == value else "{}"])
        con.execute("COMMIT")
    return project


def _args(project: Path, *argv: str) -> list[str]:
    return ["lineage", *argv, "--project", str(project)]


def _listed(lines: list[str]) -> list[str]:
    """The genome ids of the tree's genome lines (a star or two spaces, the id, its generation)."""
    return [m.group(1) for line in lines if (m := re.search(r"(?:★| ) (g\d{4}) g\d+ ", line))]


def test_piped_tree_lists_every_genome_of_a_chain_deeper_than_the_recursion_limit(deep, capsys):
    assert CHAIN > sys.getrecursionlimit()
    assert main(_args(deep)) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = _listed(lines)
    assert sorted(listed) == ALL_IDS  # each exactly once
    assert listed[:3] == ["g0000", "g0001", "g0002"]  # the chain, in order from its root
    see_there = [line for line in lines if "see there" in line]
    assert len(see_there) == 1 and f"{CROSS} (also a child of g0010; see there)" in see_there[0]
    assert len(lines) == 1 + len(ALL_IDS) + 1  # the title, a line per genome, the one reference
    # indentation stops at the cap, and the deeper lines state their depth
    deepest = next(line for line in lines if " g2999 g2999 " in line)
    assert "⋯[3000]" in deepest and "★ g2999" in deepest
    assert max(len(line) for line in lines) < 4 * INDENT_CAP + 80
    assert f"indentation stops at {INDENT_CAP}" in lines[0]
    crash = next(line for line in lines if f" {CRASH} " in line)
    assert "⋯[3001]" in crash and "FAIL (crash)" in crash
    assert "PENDING" in next(line for line in lines if f" {PENDING} " in line)


def test_dot_file_holds_every_genome_and_edge_at_any_depth(deep, tmp_path, capsys):
    out = tmp_path / "deep.dot"
    assert main(_args(deep, "-o", str(out))) == 0  # the format from the suffix
    text = out.read_text()
    assert sorted(re.findall(r'^  "(g\d{4})" \[label=', text, re.M)) == ALL_IDS
    edges = set(re.findall(r'^  "(g\d{4})" -> "(g\d{4})";', text, re.M))
    assert len(edges) == (CHAIN - 1) + 2 + 1 + 1
    assert ("g2998", "g2999") in edges and ("g0005", CROSS) in edges and ("g0010", CROSS) in edges
    assert f"wrote {len(ALL_IDS)} genomes" in capsys.readouterr().out


def test_an_output_file_whose_format_cannot_be_told_is_one_error_line(deep, tmp_path, capsys):
    out = tmp_path / "deep.txt"
    assert main(_args(deep, "-o", str(out))) == 2
    captured = capsys.readouterr()
    message = captured.out + captured.err
    assert "cannot tell the format of deep.txt" in message and len(message.strip().splitlines()) == 1
    assert not out.exists()


def test_the_lean_read_agrees_with_the_full_one(deep):
    """load_nodes aggregates the verdicts in SQL: the same as genome_results on full records,
    replicates, an interrupted re-run and a NaN score included."""
    archive = Archive(deep / "archive" / "evo.duckdb")
    full = genome_results(archive.genomes(RUN), archive.evaluations(RUN))
    lean = load_nodes(archive, RUN)
    assert [(n.genome_id, n.index, n.parents, n.state, n.failure_kind, n.val_bpb, n.val_bpb_std, n.n, n.last_eval_id)
            for n in lean] == [
        (r.genome_id, i, r.genome.parents, r.state, r.last.failure_kind if r.last else None, r.val_bpb,
         r.val_bpb_std, r.n, r.last.eval_id if r.last else None) for i, r in enumerate(full)]
    by_id = {n.genome_id: n for n in lean}
    assert by_id["g0500"].n == 3 and by_id["g0500"].val_bpb_std > 0
    assert by_id["g0600"].state == "COMPLETE" and by_id["g0800"].n == 1 and by_id[PENDING].state == "PENDING"
    assert [n.ignores_seed for n in lean] == [r.ignores_seed for r in full]
    # one notion of best: the views' declared best is the engine's, with the pooled sigma
    # (with 2 readings needed, only g0500 qualifies)
    from evo.lineage import declared_best as view_best
    from evo.noise import declared_best as engine_best

    strict = RunConfig(run=RUN, profile="smoke", population=1, noise_replicates=1, best_replicates=2)
    assert view_best(lean, strict).genome_id == engine_best(full, strict).genome_id != "g2999"


def _page(path: Path) -> tuple[str, dict, list]:
    page = path.read_text()
    data = json.loads(re.search(r'<script id="evo-data" type="application/json">(.*?)</script>', page, re.S).group(1))
    packed = re.search(r'<script id="evo-details" type="application/octet-stream">(.*?)</script>', page, re.S).group(1)
    return page, data, json.loads(gzip.decompress(base64.b64decode(packed)))


def test_html_page_names_every_genome_and_stays_bounded(deep, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(viewer, "DETAILED_MAX", DETAILED)
    out = tmp_path / "deep.html"
    assert main(_args(deep, "--html", str(out))) == 0
    assert f"metrics, diffs and log tails of {DETAILED}" in capsys.readouterr().out
    page, data, details = _page(out)
    for genome_id in ALL_IDS:
        assert f'"{genome_id}"' in page
    g = data["genomes"]
    assert g["id"] == ALL_IDS and data["best"] == "g2999" and len(data["ancestry"]) == CHAIN
    kept = [g["id"][i] for i, d in enumerate(g["detail"]) if d >= 0]
    assert len(details) == len(kept) == DETAILED
    assert {"g2999", "g2998", "g2975"} <= set(kept) and "g0100" not in kept  # the best's nearest ancestry first
    best = details[g["detail"][g["id"].index("g2999")]]
    assert best["diffs"][0]["against"] == "g2998" and "+KEY = " in best["diffs"][0]["text"]
    # a diff against the parent compresses to over 2 KB here: one per edge would be > 6 MB
    archive = Archive(deep / "archive" / "evo.duckdb")
    one = source_diff(archive.source("sha2998"), archive.source("sha2999"), "g2998.py", "g2999.py")
    per_edge = len(base64.b64encode(gzip.compress(one.encode()))) * (len(ALL_IDS) - 1)
    size = out.stat().st_size
    assert size < PAGE_BOUND < per_edge
    assert g["state"][g["id"].index(CRASH)] == data["tables"]["state"].index("FAIL")


def _css_rules(page: str) -> list[tuple[list[str], dict[str, str]]]:
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    style = re.sub(r"/\*.*?\*/", "", style, flags=re.S)
    rules = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", style):
        decls = dict(
            (k.strip(), v.strip()) for k, _, v in (d.partition(":") for d in body.split(";")) if k.strip()
        )
        rules.append(([s.strip() for s in selectors.split(",")], decls))
    return rules


def test_diff_lines_wrap_instead_of_running_past_the_pane(deep, tmp_path):
    out = tmp_path / "wrap.html"
    record = Archive(deep / "archive" / "evo.duckdb").get_run(RUN)
    viewer.write_lineage_html(Archive(deep / "archive" / "evo.duckdb"), record, out, detailed_max=5)
    decls: dict[str, str] = {}
    for selectors, body in _css_rules(out.read_text()):
        if "pre.diff" in selectors:
            decls.update(body)
    assert decls.get("white-space") == "pre-wrap"
    assert decls.get("overflow-wrap") in ("anywhere", "break-word")


def test_the_page_labels_drawn_genomes_with_their_ids():
    template = (Path(viewer.__file__).parent / viewer.TEMPLATE).read_text()
    # each drawn genome gets a text element holding its id once zoomed in (see draw() in the template)
    assert '<text class="id-label"' in template and "esc(n.id)" in template
    assert re.search(r"\.id-label\s*\{[^}]*font-size", template)


# ---------------------------------------------------------------------------- in a real browser

@pytest.fixture(scope="module")
def deep_page(deep, tmp_path_factory):
    """The deep run's page (details for DETAILED genomes) open in headless Chromium."""
    from test_viewer_browser import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    html = tmp_path_factory.mktemp("page") / "deep.html"
    archive = Archive(deep / "archive" / "evo.duckdb")
    viewer.write_lineage_html(archive, archive.get_run(RUN), html, detailed_max=DETAILED)
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(5_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(html.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=20_000)
        yield page, errors
        browser.close()


def _drawn(page) -> list[str]:
    return page.eval_on_selector_all("#nodes circle.node", "cs => cs.map((c) => c.getAttribute('data-id'))")


def test_browser_draws_the_genomes_in_view_each_labelled_with_its_id(deep_page):
    page, errors = deep_page
    drawn = _drawn(page)
    assert 0 < len(drawn) < 200 < len(ALL_IDS)  # only what is in view, not 3003 circles
    assert "g0000" in drawn
    labels = page.eval_on_selector_all("#id-labels text", "ts => ts.map((t) => t.textContent)")
    assert sorted(labels) == sorted(drawn)
    assert not errors


def test_browser_finds_a_deep_genome_and_wraps_its_long_diff_lines(deep_page):
    page, errors = deep_page
    page.fill("#search", "2999")
    page.press("#search", "Enter")
    page.wait_for_selector('#nodes circle.node[data-id="g2999"]')  # drawn once centred on it
    page.wait_for_selector('#detail[data-genome="g2999"] pre.diff')
    assert "+KEY = " in page.locator("#detail pre.diff").first.inner_text()
    style, scroll, client = page.evaluate(
        "() => { const p = document.querySelector('#detail pre.diff');"
        " return [getComputedStyle(p).whiteSpace, p.scrollWidth, p.clientWidth]; }")
    assert style == "pre-wrap" and scroll <= client + 1  # the 2 KB line wraps: nothing past the right edge
    assert not errors


def test_browser_genome_without_details_in_the_page_names_the_command(deep_page):
    page, errors = deep_page
    page.fill("#search", "g0100")
    page.press("#search", "Enter")
    page.wait_for_selector('#detail[data-genome="g0100"]')
    assert "evo show g0100 --diff" in page.locator("#detail").inner_text()
    assert page.locator("#detail .desc").inner_text() == "KEY step 100"
    assert not errors


def test_a_tree_label_does_not_say_a_state_twice():
    from evo.lineage import Node
    from evo.lineage_render import _label

    def node(state, kind):
        return Node("g0030", 30, 4, "optuna", "LR 0.04 -> 0.05", ("g0001",), "s", state, kind, None, None, 0, 7)

    assert _label(node("INTERRUPTED", "interrupted"), False) == "  g0030 g4 INTERRUPTED  [optuna] LR 0.04 -> 0.05"
    assert " FAIL (crash) " in _label(node("FAIL", "crash"), False)
