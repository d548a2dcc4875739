"""The read-only views against the size of the archive: ``evo status``, ``evo lineage`` (the
tree piped to a file, and DOT) and ``evo lineage --html`` at 1,000, 10,000 and 100,000 genomes.

For each size a synthetic archive of ONE run is built by ``engine_scaling.py``'s bulk builder
(:func:`engine_scaling.build_archive`: the torch-free fake genome, cohorts of ``--population``,
1 or 2 random parents, ~3% crashes, a ~2 KB log tail per evaluation), then made deep: its
last ``--chain`` genomes (default ``min(5000, size // 2)``) are re-linked into one chain,
each the only child of the one before and one generation below it, and the chain's last
genome is made the run's best (so that its ancestry is thousands of genomes long). From
10,000 genomes on the chain is deeper than Python's recursion limit.

Each command runs as a real ``evo`` subprocess (``python -m evo ...``, stdout to a file)
under a small launcher: a bare Python that starts it and reports its wall seconds and
peak RSS (``ru_maxrss`` from ``wait4``; started from this process instead, the child would
carry this builder's peak over through the fork). Also measured, so that the views' own
cost can be told from the CLI's: ``python -c "import evo.cli"``, and in a process of its
own, the lineage's phases (lean load, tree, DOT text, page) timed around the calls.

Checks printed with the numbers: the tree file has a line for every genome (plus one per
"see there" line of a second parent), the DOT file a node per genome and an edge per
lineage edge.

With ``--browser`` each page is also opened in headless Chromium (Debian's, driven by
Playwright): seconds until it is drawn, genomes drawn, JS heap, the frame after "fit", and
the time to find the best genome and show its diff.

Usage (from the repository root, the venv active):

    nice -n 10 python benchmarks/views_scaling.py [--sizes 1000,10000,100000] [--keep DIR] [--browser]

About 5 minutes on a 2-core machine, most of it building the 100k archive.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from _engine_bench import REPO, clean_up_on_sigterm, make_project
from engine_scaling import RUN, build_archive

LAUNCHER = r"""
import json, os, subprocess, sys, time
with open(sys.argv[1], "wb") as out:
    start = time.perf_counter()
    proc = subprocess.Popen(sys.argv[2:], stdout=out, stderr=subprocess.PIPE)
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
print(json.dumps({"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "rc": os.waitstatus_to_exitcode(status),
                  "stderr": err.decode(errors="replace")[-1500:]}))
"""
TIMEOUT_S = 1800
CHROMIUM = Path("/usr/bin/chromium")


# ---------------------------------------------------------------------------- the archive

def deepen(path: Path, chain: int) -> tuple[int, str]:
    """Re-link the run's last ``chain`` genomes into one chain and make its end the best.

    Every chain genome but the first gets the genome created just before it as its only
    parent and that genome's generation + 1; the last one's evaluation becomes COMPLETE with
    a val_bpb 0.05 below the run's lowest (the run's noise rule then declares it the best).

    Returns:
        The deepest generation and the id of the chain's last genome.
    """
    with duckdb.connect(str(path)) as con:
        n = con.execute("SELECT count(*) FROM genomes WHERE run = ?", [RUN]).fetchone()[0]
        first = n - chain
        con.execute("BEGIN TRANSACTION")
        con.execute("DELETE FROM lineage WHERE run = $run AND child_id IN "
                    "(SELECT genome_id FROM genomes WHERE run = $run AND seq > $first)", {"run": RUN, "first": first})
        con.execute("INSERT INTO lineage (run, parent_id, child_id, parent_index) "
                    "SELECT g.run, p.genome_id, g.genome_id, 0 FROM genomes g JOIN genomes p ON p.run = g.run "
                    "AND p.seq = g.seq - 1 WHERE g.run = $run AND g.seq > $first", {"run": RUN, "first": first})
        base = con.execute("SELECT generation FROM genomes WHERE run = ? AND seq = ?", [RUN, first]).fetchone()[0]
        con.execute("UPDATE genomes SET generation = $base + (seq - $first), operator = CASE WHEN operator = "
                    "'crossover' THEN 'hyperparam' ELSE operator END WHERE run = $run AND seq > $first",
                    {"base": base, "first": first, "run": RUN})
        last = con.execute("SELECT genome_id FROM genomes WHERE run = ? AND seq = ?", [RUN, n - 1]).fetchone()[0]
        best = con.execute("SELECT min(val_bpb) FROM evaluations WHERE run = ?", [RUN]).fetchone()[0] - 0.05
        con.execute("UPDATE evaluations SET state = 'COMPLETE', failure_kind = NULL, error = NULL, returncode = 0, "
                    "val_bpb = $v, metrics = json_object('val_bpb', $v) WHERE run = $run AND genome_id = $g",
                    {"v": best, "run": RUN, "g": last})
        con.execute("COMMIT")
        con.execute("CHECKPOINT")
    return base + chain - 1, last


# ---------------------------------------------------------------------------- measuring

def evo(argv: list[str], out: Path, archive: Path, project: Path) -> dict:
    """Run ``evo ARGV`` with stdout to ``out``; wall seconds, peak RSS MiB, exit code."""
    cmd = [sys.executable, "-c", LAUNCHER, str(out), sys.executable, "-m", "evo", *argv,
           "--project", str(project), "--archive", str(archive)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"wall_s": float("nan"), "peak_rss_mb": float("nan"), "rc": "timeout", "stderr": ""}
    if proc.returncode != 0 or not proc.stdout.strip():
        return {"wall_s": float("nan"), "peak_rss_mb": float("nan"), "rc": f"launcher {proc.returncode}",
                "stderr": proc.stderr[-1500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def import_seconds() -> float:
    """Seconds of ``import evo.cli`` in a fresh interpreter (best of 3)."""
    code = "import time; t = time.perf_counter(); import evo.cli; print(time.perf_counter() - t)"
    return min(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    cwd=REPO).stdout) for _ in range(3))


def phases(archive_path: Path, out_dir: Path) -> dict:
    """The lineage's own phases, timed in this process (run as ``--phases``)."""
    from evo.archive import Archive
    from evo.lineage import load_lineage
    from evo.lineage_render import dot_lines, tree_lines, write_tree
    from evo.viewer import write_lineage_html

    result = {}
    archive = Archive(archive_path)
    record = archive.get_run(RUN)
    t = time.perf_counter()
    lineage = load_lineage(archive, record)
    result["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with open(os.devnull, "w", encoding="utf-8") as sink:
        result["tree_lines"] = write_tree(tree_lines(lineage, "tree"), sink)
    result["tree_s"] = time.perf_counter() - t
    t = time.perf_counter()
    result["dot_chars"] = len("\n".join(dot_lines(lineage)))
    result["dot_s"] = time.perf_counter() - t
    t = time.perf_counter()
    page = write_lineage_html(archive, record, out_dir / "phases.html", lineage)
    result["html_s"] = time.perf_counter() - t
    result["html_detailed"] = page.detailed
    return result


def run_phases(archive: Path, out_dir: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--phases", str(archive), "--out", str(out_dir)],
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("PHASES ")]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}: {proc.stderr[-1500:]}"}
    return json.loads(lines[-1][len("PHASES "):])


def browser_check(html: Path, best: str) -> str:
    """Open the page in headless Chromium (Playwright): seconds to ready, genomes drawn, the
    JS heap, milliseconds from "fit" to the next frame drawn, seconds to find the best."""
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=args)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        t = time.perf_counter()
        page.goto(html.as_uri(), timeout=300_000)
        page.wait_for_selector("body[data-ready='1']", timeout=300_000)
        ready_s = time.perf_counter() - t
        drawn = page.locator("#nodes circle").count()
        heap_mb = page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize / 2 ** 20 : NaN")
        fit_ms = page.evaluate("() => new Promise((done) => { const t = performance.now(); "
                               "document.getElementById('fit-btn').click(); "
                               "requestAnimationFrame(() => requestAnimationFrame(() => done(performance.now() - t))); })")
        fit_drawn = page.locator("#nodes circle").count()
        crowded = page.locator("#lod").is_visible()
        t = time.perf_counter()
        page.fill("#search", best)
        page.press("#search", "Enter")
        page.wait_for_selector(f'#detail[data-genome="{best}"] pre.diff', timeout=60_000)
        find_s = time.perf_counter() - t
        browser.close()
    return (f"ready in {ready_s:.1f} s, {drawn} genomes drawn, JS heap {heap_mb:.0f} MiB; fit: next frame after "
            f"{fit_ms:.0f} ms, {fit_drawn} drawn{' (rows as bands)' if crowded else ''}; {best} found with its "
            f"diff in {find_s:.2f} s")


def check_tree(path: Path, genomes: int) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    see_there = sum(1 for line in lines if line.endswith("; see there)"))
    listed = {m.group(1) for line in lines if (m := re.search(r"[★ ] (g\d+) g\d+ ", line))}
    capped = sum(1 for line in lines if "⋯[" in line)
    return (f"{len(listed)} of {genomes} genomes listed, {len(lines)} lines (1 title, {see_there} second-parent "
            f"references), {capped} lines past the indentation cap")


def check_dot(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    nodes = len(re.findall(r'^  "[^"]+" \[label=', text, re.M))
    edges = len(re.findall(r'^  "[^"]+" -> "[^"]+";$', text, re.M))
    return f"{nodes} nodes, {edges} edges"


# ---------------------------------------------------------------------------- driver

def fmt(r: dict) -> str:
    if r.get("rc") != 0:
        return f"FAILED ({r.get('rc')}): {r.get('stderr', '')[-300:]}"
    return f"{r['wall_s']:6.2f} s, peak RSS {r['peak_rss_mb']:6.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--sizes", default="1000,10000,100000", help="genomes per archive (default 1000,10000,100000)")
    parser.add_argument("--chain", type=int, default=None,
                        help="length of the deep chain (default min(5000, size // 2))")
    parser.add_argument("--population", type=int, default=8, help="the run's population (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic archive (default 0)")
    parser.add_argument("--keep", metavar="DIR", help="keep the archives and the outputs in DIR")
    parser.add_argument("--browser", action="store_true",
                        help="also open each page in headless Chromium (needs /usr/bin/chromium and playwright)")
    parser.add_argument("--phases", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phases:
        print("PHASES " + json.dumps(phases(args.phases, args.out)), flush=True)
        return 0
    clean_up_on_sigterm()
    # what build_archive reads of its arguments: the fake genome sleeps 0.5 s, genomes run unconfined
    args.sleep, args.sandbox = 0.5, "none"
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    started = time.monotonic()
    imported = import_seconds()
    print(f"python -c 'import evo.cli': {imported:.2f} s (best of 3; every evo command pays it)", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="evo-views-") as tmp:
        root = Path(tmp)
        project = make_project(root)
        for size in sizes:
            work = root / str(size)
            work.mkdir()
            archive = work / "evo.duckdb"
            t = time.monotonic()
            build_archive(archive, project, size, args)
            chain = args.chain if args.chain is not None else min(5000, size // 2)
            deepest, best = deepen(archive, chain)
            built_s = time.monotonic() - t
            with duckdb.connect(str(archive), read_only=True) as con:
                n_edges = con.execute("SELECT count(*) FROM lineage WHERE run = ?", [RUN]).fetchone()[0]
            print(f"== {size} genomes, {n_edges} edges: built in {built_s:.1f} s ({archive.stat().st_size / 2**20:.0f} "
                  f"MB), a chain of {chain} ending in {best} (the best), deepest generation {deepest}", flush=True)
            measured = {
                "status": evo(["status"], work / "status.txt", archive, project),
                "tree": evo(["lineage"], work / "tree.txt", archive, project),
                "dot": evo(["lineage", "-o", str(work / "lineage.dot")], work / "dot.txt", archive, project),
                "html": evo(["lineage", "--html", str(work / "lineage.html")], work / "html.txt", archive, project),
            }
            for name, r in measured.items():
                print(f"   evo {name:7}: {fmt(r)}", flush=True)
            if measured["tree"].get("rc") == 0:
                print(f"   tree check: {check_tree(work / 'tree.txt', size)}", flush=True)
            if measured["dot"].get("rc") == 0:
                print(f"   dot check: {check_dot(work / 'lineage.dot')}", flush=True)
            page_mb = (work / "lineage.html").stat().st_size / 2**20 if (work / "lineage.html").exists() else float("nan")
            print(f"   page: {page_mb:.1f} MiB; {(work / 'html.txt').read_text().strip()}", flush=True)
            if args.browser and (work / "lineage.html").exists():
                print(f"   browser: {browser_check(work / 'lineage.html', best)}", flush=True)
            ph = run_phases(archive, work)
            if "error" in ph:
                print(f"   phases: failed {ph['error']}", flush=True)
            else:
                print(f"   phases in process: lean load {ph['load_s']:.2f} s, tree "
                      f"{ph['tree_s']:.2f} s ({ph['tree_lines']} lines), DOT text {ph['dot_s']:.2f} s, page "
                      f"{ph['html_s']:.2f} s ({ph['html_detailed']} genomes with details)", flush=True)
            rows.append((size, built_s, measured, page_mb, ph))
            if args.keep:
                keep = Path(args.keep) / str(size)
                keep.mkdir(parents=True, exist_ok=True)
                for item in work.iterdir():
                    item.replace(keep / item.name)
    print()
    print(f"wall seconds / peak RSS MiB of each evo command (import evo.cli alone: {imported:.2f} s)")
    header = (f"{'genomes':>8} | {'status':>15} | {'lineage tree':>15} | {'lineage -o dot':>15} | "
              f"{'lineage --html':>15} | {'page MiB':>8} | {'own: load+tree':>14} | {'own: load+page':>14}")
    print(header)
    print("-" * len(header))
    for size, _, m, page_mb, ph in rows:
        cells = [f"{m[k]['wall_s']:6.2f} / {m[k]['peak_rss_mb']:5.0f}" if m[k].get("rc") == 0 else "failed"
                 for k in ("status", "tree", "dot", "html")]
        own_tree = f"{ph['load_s'] + ph['tree_s']:.2f} s" if "error" not in ph else "-"
        own_html = f"{ph['load_s'] + ph['html_s']:.2f} s" if "error" not in ph else "-"
        print(f"{size:8d} | {cells[0]:>15} | {cells[1]:>15} | {cells[2]:>15} | {cells[3]:>15} | {page_mb:8.1f} | "
              f"{own_tree:>14} | {own_html:>14}")
    print(f"\ntotal {(time.monotonic() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
