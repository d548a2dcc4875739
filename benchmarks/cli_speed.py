"""Wall time and peak memory of the read-only verbs, and the start-up of `evo --help`.

Builds (once per size) a synthetic archive of one run with engine_scaling.py's builder
(genomes of the fake genome, one evaluation each with a ~2 KB log tail and its metrics
JSON, the seed with three), then runs each command in a fresh process ``--repeats``
times and prints, per command, the median wall seconds (interpreter start included) and
the peak RSS of the process (``VmHWM``). Also prints ``python -X importtime``'s
total for ``evo --help`` and the heaviest top-level imports.

Usage (from the repository root, the venv active):

    nice -n 10 python benchmarks/cli_speed.py [--sizes 100,100000] [--repeats 3] [--keep DIR]

With ``--source DIR`` the commands import evo from DIR instead (for example a tree of an
older commit, ``git archive HEAD | tar -x -C DIR``), to compare; a command that tree does
not have is reported as failed.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

# VmHWM, not ru_maxrss: the latter survives exec and would report this (archive-building) process's peak.
RUNNER = (
    "import re, sys\n"
    "from evo.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "except SystemExit as exc:\n"
    "    code = exc.code or 0\n"
    "hwm = re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
    "sys.stderr.write(f'@@maxrss_kb {hwm}\\n')\n"
    "sys.exit(code)\n"
)

COMMANDS = {
    "evo --help": ["--help"],
    "evo runs": ["runs"],
    "evo status": ["status"],
    "evo status --json": ["status", "--json"],
    "evo show g0001": ["show", "g0001"],
    "evo export --best": ["export", "--best", "-o", "{tmp}/train.py"],
    "evo export --results-tsv": ["export", "--results-tsv", "{tmp}/results.tsv"],
    "evo lineage": ["lineage"],
}


def _env(source: Path | None) -> dict[str, str] | None:
    return None if source is None else {**os.environ, "PYTHONPATH": str(source)}


def run_once(argv: list[str], source: Path | None = None) -> tuple[float, float] | None:
    """(wall seconds, peak RSS in MB) of one ``evo`` command in a fresh process; ``None`` if it failed."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUNNER, *argv], capture_output=True, text=True,
                          cwd=source or REPO, env=_env(source))
    wall = time.perf_counter() - start
    found = re.search(r"@@maxrss_kb (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        print(f"  evo {' '.join(argv[:3])} failed ({proc.returncode}): {proc.stderr.strip()[-300:]}", flush=True)
        return None
    return wall, int(found.group(1)) / 1024


def import_time(source: Path | None = None) -> tuple[float, list[tuple[float, str]]]:
    """Total seconds of imports for `evo --help` and the five heaviest top-level packages."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "evo", "--help"], capture_output=True,
                          text=True, cwd=source or REPO, env=_env(source))
    tops = []
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and len(m.group(2)) <= 1:  # top-level imports only (nested ones are indented further)
            tops.append((int(m.group(1)) / 1e6, m.group(3)))
    return sum(s for s, _ in tops), sorted(tops, reverse=True)[:5]


def build(size: int, folder: Path) -> Path:
    """A project folder with an archive of ``size`` genomes (engine_scaling.build_archive)."""
    from engine_scaling import build_archive

    project = folder / f"project-{size}"
    project.mkdir(parents=True)
    shutil.copy(REPO / "prepare.py", project / "prepare.py")
    args = argparse.Namespace(seed=0, population=8, sleep=0.5, sandbox="none")
    t0 = time.perf_counter()
    build_archive(project / "archive" / "evo.duckdb", project, size, args)
    print(f"built {size} genomes in {time.perf_counter() - t0:.0f} s", flush=True)
    return project


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,100000", help="genomes per archive (default 100,100000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per command (default 3)")
    parser.add_argument("--keep", metavar="DIR", help="build the archives in DIR and keep them (reused if there)")
    parser.add_argument("--source", type=Path, metavar="DIR", help="import evo from DIR (another tree, to compare)")
    args = parser.parse_args(argv)

    total, top = import_time(args.source)
    print(f"python -X importtime -m evo --help: {total:.3f} s of top-level imports; heaviest: "
          + ", ".join(f"{name} {s:.3f}" for s, name in top))
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="evo-cli-speed-"))
    try:
        for size in (int(s) for s in args.sizes.split(",") if s.strip()):
            project = folder / f"project-{size}"
            if not (project / "archive" / "evo.duckdb").exists():
                project = build(size, folder)
            for name, verb in COMMANDS.items():
                cmd = [a.format(tmp=folder) for a in verb] + ([] if verb == ["--help"] else ["--project", str(project)])
                runs = [run_once(cmd, args.source) for _ in range(args.repeats)]
                if None in runs:
                    print(f"{size:>7} genomes  {name:<26} failed", flush=True)
                    continue
                wall = statistics.median(w for w, _ in runs)
                rss = max(r for _, r in runs)
                print(f"{size:>7} genomes  {name:<26} {wall:6.2f} s  peak RSS {rss:6.0f} MB", flush=True)
        print(f"\nload while measuring: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min); "
              f"CPUs: {os.cpu_count()}")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
