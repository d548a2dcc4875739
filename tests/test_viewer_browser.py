"""The lineage page in a real browser: Debian's headless Chromium driven by Playwright.

Skipped (with the reason) only where /usr/bin/chromium is missing; `.ci/run` installs it.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest
from fake_run import build_fake_run

from evo.results import best
from evo.viewer import write_lineage_html

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; .ci/run does)"
)


@pytest.fixture(scope="module")
def page_and_run(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra: pip install -e '.[test]'")
    fake = build_fake_run(tmp_path_factory.mktemp("project"))
    html = fake.project / "lineage.html"
    record = fake.archive.get_run(fake.run)
    write_lineage_html(fake.archive, record, html)
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(5_000)  # a missing node or pane fails in seconds, not Playwright's 30 s
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(html.as_uri())
        page.wait_for_selector("body[data-ready='1']", timeout=10_000)
        yield page, fake, errors
        browser.close()


def _first_added_line(fake, genome_id: str) -> str:
    results = {r.genome_id: r for r in fake.results()}
    child = results[genome_id].genome
    old = fake.archive.source(results[child.parents[0]].genome.source_sha256).splitlines()
    new = fake.archive.source(child.source_sha256).splitlines()
    return next(line[2:] for line in difflib.ndiff(old, new) if line.startswith("+ "))


def test_the_graph_draws_one_node_per_genome_and_the_best_ancestry(page_and_run):
    page, fake, errors = page_and_run
    results = fake.results()
    assert page.locator("#nodes circle.node").count() == len(results)
    for r in results:
        assert page.locator(f'#nodes circle.node[data-id="{r.genome_id}"]').count() == 1
    box = page.locator("#nodes").bounding_box()
    assert box is not None and box["width"] > 50 and box["height"] > 50  # drawn at a visible size
    assert page.locator("#edges").get_attribute("d").count("M") + page.locator("#anc-edges").get_attribute(
        "d").count("M") == len(fake.archive.edges(fake.run))
    top = best(results)
    assert "anc" in page.locator(f'[data-id="{top.genome_id}"]').get_attribute("class")
    assert page.locator(f'[data-id="{fake.crashed}"]').get_attribute("class").split()[:2] == ["node", "failed"]
    assert not errors


@pytest.mark.parametrize("which", ["second_child", "crashed"])
def test_clicking_a_node_shows_that_genomes_description_and_diff(page_and_run, which):
    page, fake, errors = page_and_run
    results = fake.results()
    children = [r for r in results if r.genome.parents and r.is_complete]
    genome_id = children[1].genome_id if which == "second_child" else fake.crashed
    genome = next(r for r in results if r.genome_id == genome_id).genome
    page.click(f'#nodes circle.node[data-id="{genome_id}"]')
    page.wait_for_selector("#detail[data-genome]")  # a click clears it; set again once the details are drawn
    detail = page.locator("#detail")
    assert detail.get_attribute("data-genome") == genome_id
    assert detail.locator(".gid").inner_text() == genome_id
    assert detail.locator(".desc").inner_text() == genome.description
    diff = detail.locator("pre.diff").first.inner_text()
    assert f"+++ {genome_id}.py" in diff and f"--- {genome.parents[0]}.py" in diff
    assert "+" + _first_added_line(fake, genome_id) in diff.splitlines()
    assert not errors


def test_search_box_selects_and_parent_link_navigates(page_and_run):
    page, fake, errors = page_and_run
    child = next(r for r in fake.results() if r.genome.parents and r.genome.generation == 1)
    page.fill("#search", str(int(child.genome_id[1:])))  # "7" finds g0007
    page.press("#search", "Enter")
    assert page.locator("#detail .gid").inner_text() == child.genome_id
    page.click(f'#detail a.goto[data-goto="{child.genome.parents[0]}"]')
    assert page.locator("#detail .gid").inner_text() == child.genome.parents[0]
    page.fill("#search", "g9999")
    page.press("#search", "Enter")
    assert "no genome" in page.locator("#search-msg").inner_text()
    assert not errors
