"""Write the README's screenshots of a run: ``docs/lineage.png`` and ``docs/progress.png``.

``lineage.png`` is headless Chromium's view of the ``evo lineage --html`` page with one
genome clicked (the best one unless ``--genome`` names another); ``progress.png`` is
``evo plot``. Needs Debian's chromium at /usr/bin/chromium and ``pip install playwright``
(the test extra).

    python docs/make_screenshots.py --project . [--run RUN] [--genome g0012]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from evo.archive import Archive
from evo.config import Paths
from evo.plot import plot_progress
from evo.results import best, genome_results
from evo.viewer import write_lineage_html

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1600, "height": 1000}


def screenshot_lineage(html: Path, genome_id: str, out: Path) -> None:
    """Open the page, select ``genome_id`` through the search box, click its node, save a PNG."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(html.as_uri())
        page.wait_for_selector("body[data-ready='1']")
        page.fill("#search", genome_id)
        page.press("#search", "Enter")  # centres the graph on it
        page.click(f'#nodes circle.node[data-id="{genome_id}"]')
        page.wait_for_selector(f'#detail[data-genome="{genome_id}"]')  # its details are drawn
        page.mouse.move(5, VIEWPORT["height"] - 5)  # no tooltip in the picture
        page.screenshot(path=str(out))
        browser.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", default=".", help="project folder (default: .)")
    parser.add_argument("--archive", default=None, help="DuckDB archive (default: <project>/archive/evo.duckdb)")
    parser.add_argument("--run", default=None, help="run name (default: the latest run)")
    parser.add_argument("--genome", default=None, help="genome to click (default: the best)")
    parser.add_argument("--out-dir", default=str(Path(__file__).parent), help="where the PNGs go (default: docs/)")
    args = parser.parse_args(argv)

    paths = Paths.for_project(args.project, args.archive)
    archive = Archive(paths.archive_path)
    record = archive.get_run(args.run) if args.run else archive.latest_run()
    results = genome_results(archive.genomes(record.run), archive.evaluations(record.run))
    top = best(results)
    genome_id = args.genome or (top.genome_id if top else results[-1].genome_id)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        html = Path(tmp) / "lineage.html"
        write_lineage_html(archive, record, html)
        screenshot_lineage(html, genome_id, out_dir / "lineage.png")
    plot_progress(archive.genomes(record.run), archive.evaluations(record.run), record.run, out_dir / "progress.png")
    print(f"wrote {out_dir / 'lineage.png'} ({genome_id} selected) and {out_dir / 'progress.png'} for run {record.run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
