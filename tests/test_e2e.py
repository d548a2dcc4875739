"""End to end with the real harness and seed genome (smoke profile, CPU).

Start a run (population 3, 2 generations), SIGKILL the engine mid-generation while
`evo status` reads the archive, resume it, then check that no evaluation was lost or
duplicated, that lineage edges are consistent, and that the exported best train.py runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import networkx as nx
import pytest

from evo.archive import Archive
from evo.records import EvalState
from evo.results import best, genome_results

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = tmp_path_factory.mktemp("e2e")
    for name in ("prepare.py", "seed_train.py", "program.md"):
        shutil.copy(REPO / name, project / name)
    return project


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = os.environ.get("EVO_TEST_CACHE_DIR") or str(tmp_path_factory.mktemp("cache"))
    return {**os.environ, "EVO_CACHE_DIR": cache, "PYTHONUNBUFFERED": "1"}


def evo(args, project, env, **kwargs):
    return subprocess.run([sys.executable, "-m", "evo", *args], cwd=project, env=env, capture_output=True,
                          text=True, **kwargs)


def _genome_processes(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
                state = (entry / "stat").read_text().split()[2]
            except OSError:
                continue
            if marker in cmdline and state != "Z":
                pids.append(int(entry.name))
    return pids


def test_start_kill_resume_export(project, env):
    archive_path = project / "archive" / "evo.duckdb"
    log = open(project / "start.log", "w")
    engine = subprocess.Popen(
        [sys.executable, "-m", "evo", "start", "--population", "2", "--generations", "2", "--profile", "smoke",
         "--run", "e2e", "--warm-start"],  # children run in warm interpreters (evo.warm_start)
        cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    # Wait until generation 1 is being evaluated, with at least one of its children done.
    deadline = time.monotonic() + 300
    status_seen = False
    while True:
        assert engine.poll() is None, (project / "start.log").read_text()
        assert time.monotonic() < deadline, "generation 1 never started"
        time.sleep(1.0)
        if not archive_path.exists():
            continue
        archive = Archive(archive_path)
        if not archive.list_runs():
            continue
        status = evo(["status"], project, env, timeout=120)  # answers while evo start runs
        assert status.returncode == 0, status.stdout + status.stderr
        status_seen = status_seen or ("e2e" in status.stdout and f"engine pid {engine.pid}" in status.stdout)
        results = genome_results(archive.genomes("e2e"), archive.evaluations("e2e"))
        gen1 = [r for r in results if r.genome.generation == 1]
        if any(r.is_finished for r in gen1) and any(r.state == "RUNNING" for r in gen1):
            break
    assert status_seen
    finished_before = {e.eval_id: e for e in archive.evaluations("e2e") if e.state.is_finished}
    running = [e for e in archive.evaluations("e2e") if e.state is EvalState.RUNNING]
    assert len(running) == 1

    engine.send_signal(signal.SIGKILL)
    engine.wait(timeout=30)
    log.close()
    # the genome process dies with the engine (PR_SET_PDEATHSIG), leaving no orphan
    marker = str(project / "genomes" / "e2e")
    deadline = time.monotonic() + 20
    while _genome_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _genome_processes(marker) == []

    runs = evo(["runs", "--json"], project, env, timeout=120)  # the killed engine's lock died with it
    assert runs.returncode == 0 and '"state": "stopped"' in runs.stdout, runs.stdout + runs.stderr
    resumed = evo(["resume", "e2e", "--warm-start"], project, env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert sorted(p.name for p in archive_path.parent.glob("*.lock")) == ["evo.duckdb.lock"]  # no lock per run left
    # the killed engine's held warm start, and the resumed one's, are gone with their workspaces
    assert not list((project / "genomes" / "e2e").glob("_warm*")) and not list(project.glob("genomes/e2e/*.work"))

    archive = Archive(archive_path)
    evals = archive.evaluations("e2e")
    results = genome_results(archive.genomes("e2e"), evals)
    assert Counter(r.genome.generation for r in results) == {0: 2, 1: 2}
    assert all(r.is_finished for r in results)
    # the resumed run ended with two held-out evaluations of its declared best (evo.held_out)
    held = [e for e in evals if e.held_out]
    assert len(held) == 2 and held == evals[-2:] and all(e.state is EvalState.COMPLETE for e in held)
    shown = evo(["status", "--json"], project, env, timeout=120)
    declared = json.loads(shown.stdout)["declared_best"]
    assert declared["genome_id"] == held[0].genome_id and declared["held_out"]["n"] == 2
    # nothing lost: every evaluation finished before the kill is unchanged
    for eval_id, before in finished_before.items():
        assert archive.evaluation(eval_id) == before
    # nothing duplicated: one counted evaluation per (genome, seed) — replicates use new
    # seeds — and the evaluation killed mid-way ran again, once, with its own seed
    counted = Counter((e.genome_id, e.seed) for e in evals if e.state is not EvalState.INTERRUPTED)
    assert set(counted.values()) == {1}
    assert sum(counted.values()) >= 4
    interrupted = [e for e in evals if e.state is EvalState.INTERRUPTED]
    assert [(e.genome_id, e.seed) for e in interrupted] == [(running[0].genome_id, running[0].seed)]
    again = [e for e in evals if (e.genome_id, e.seed) == (running[0].genome_id, running[0].seed)]
    assert len(again) == 2 and again[1].state.is_finished and again[1].attempt == again[0].attempt + 1
    # lineage: a DAG from the seed; every edge joins known genomes, parents are older and completed
    edges = archive.edges("e2e")
    graph = nx.DiGraph(edges)
    by_id = {r.genome_id: r for r in results}
    assert nx.is_directed_acyclic_graph(graph)
    seed = next(r for r in results if r.genome.operator == "seed")
    assert seed.genome.parents == ()
    for parent, child in edges:
        assert by_id[parent].genome.generation <= by_id[child].genome.generation
        assert by_id[parent].is_complete
    assert all(by_id[g].genome.parents for g in by_id if g != seed.genome_id)
    assert nx.descendants(graph, seed.genome_id) == set(by_id) - {seed.genome_id}

    top = best(results)
    assert top is not None
    exported = evo(["export", "--best", "-o", "train.py"], project, env, timeout=60)
    assert exported.returncode == 0, exported.stdout + exported.stderr
    run = subprocess.run([sys.executable, "train.py"], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    summary = run.stdout.split("\n---\n")[-1]
    assert "val_bpb:" in summary
    reproduced = float(next(line for line in summary.splitlines() if line.startswith("val_bpb:")).split()[1])
    assert 0 < reproduced < 9.0  # a real score: below log2(512) bits per token over >= 1 byte per token
