"""Several evaluation slots: placements, asynchronous steady state, kill and resume with
evaluations in flight (torch-free fake genome, local CPU workers)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import FAKE_GENOME, add_harness
from test_engine import Recorder

from evo.archive import Archive
from evo.config import Paths, RunConfig
from evo.engine import Engine, Execution
from evo.operators.cst_tools import set_constants
from evo.records import EvalState
from evo.results import genome_results
from evo.sandbox import gpu_identity
from evo.workers import local
from evo.workers.local import cpu_placements, gpu_placements

# prints what the slot gave it (its cores and thread count) before its summary block
SLOT_GENOME = set_constants(FAKE_GENOME, {"SLEEP_S": 1.0}).replace(
    "    time.sleep(SLEEP_S)\n",
    "    print('slot cpus', sorted(os.sched_getaffinity(0)), 'threads', os.environ.get('OMP_NUM_THREADS'))\n"
    "    time.sleep(SLEEP_S)\n",
)


def test_cpu_placements_split_the_cores_into_pinned_blocks():
    one = cpu_placements(1, cores=[0, 1, 2, 3])
    assert [(p.name, p.cpus, p.env) for p in one] == [("cpu", (), {})]  # one slot: the whole machine, as before
    two = cpu_placements(2, cores=[0, 1, 2, 3, 4])
    assert [(p.name, p.cpus, p.env["OMP_NUM_THREADS"]) for p in two] == [
        ("cpu[0-2]", (0, 1, 2), "3"), ("cpu[3-4]", (3, 4), "2")]
    shared = cpu_placements(3, cores=[0, 1])  # more slots than cores: one core each, shared
    assert [p.cpus for p in shared] == [(0,), (1,), (0,)]
    assert [p.name for p in shared] == ["cpu[0]#0", "cpu[1]#1", "cpu[0]#2"]  # distinct: one row and record each
    with pytest.raises(ValueError):
        cpu_placements(0)


def test_gpu_slots_name_their_device_by_uuid_and_bind_only_its_node(tmp_path, monkeypatch):
    for bus, minor, uuid in (("0000:3b:00.0", 2, "GPU-aaaa"), ("0000:1a:00.0", 5, "GPU-bbbb")):
        folder = tmp_path / bus
        folder.mkdir()
        (folder / "information").write_text(f"Model: H100\nGPU UUID: {uuid}\nDevice Minor: {minor}\nBus Type: PCIe\n")
    # CUDA index in PCI bus order: 0 is bus 1a (minor 5), 1 is bus 3b (minor 2)
    assert gpu_identity(0, tmp_path) == (5, "GPU-bbbb")
    assert gpu_identity(1, tmp_path) == (2, "GPU-aaaa")
    assert gpu_identity(2, tmp_path) is None
    monkeypatch.setattr(local, "gpu_identity", lambda i: gpu_identity(i, tmp_path))
    slots = gpu_placements([0, 1])
    assert [(p.name, p.env["CUDA_VISIBLE_DEVICES"], p.gpu_index) for p in slots] == [
        ("cuda:0", "GPU-bbbb", 0), ("cuda:1", "GPU-aaaa", 1)]
    assert all(p.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" for p in slots)


def _overlap(a, b) -> bool:
    return a.started_at < b.finished_at and b.started_at < a.finished_at


def test_two_workers_keep_both_slots_busy(tmp_path):
    paths = Paths.for_project(add_harness(tmp_path))
    archive = Archive(paths.archive_path)
    config = RunConfig(run="r", profile="smoke", population=4, generations=3, seed=2, fitness="reported")
    archive.create_run(config, 1.0, tmp_path)
    engine = Engine(paths, archive, config, 1.0, "cpu", Recorder(), Execution(workers=2))
    engine.run(SLOT_GENOME)

    evals = archive.evaluations("r")
    results = genome_results(archive.genomes("r"), evals)
    assert len(results) == 12 and all(r.is_finished for r in results)
    cores = sorted(os.sched_getaffinity(0))
    expected = {p.name: p for p in cpu_placements(2, cores)}
    assert {e.device for e in evals} == set(expected)
    for e in evals:  # each genome ran pinned to its slot's cores, with matching threads
        slot = expected[e.device]
        assert f"slot cpus {list(slot.cpus)} threads {len(slot.cpus)}" in Path(e.log_path).read_text()
    # the slots ran side by side: most search evaluations overlapped another one; the
    # declared best's two held-out evaluations came last, one at a time (evo.held_out)
    searched = [e for e in evals if not e.held_out]
    held = [e for e in evals if e.held_out]
    overlapping = sum(any(_overlap(a, b) for b in searched if b is not a) for a in searched)
    assert overlapping >= len(searched) - 2
    assert len(held) == 2 and {e.genome_id for e in held} == {engine.incumbent().genome_id}
    assert not any(_overlap(h, e) for h in held for e in evals if e is not h)
    assert min(h.started_at for h in held) >= max(e.finished_at for e in searched)
    # no genome twice, none evaluated twice with one seed, no two evaluations of one genome at once
    assert len({r.genome.normalized_sha256 for r in results}) == 12
    assert set(Counter((e.genome_id, e.seed) for e in evals).values()) == {1}
    for a in evals:
        assert not any(_overlap(a, b) for b in evals if b is not a and b.genome_id == a.genome_id)
    # a child's generation is one more than its deepest parent's; cohort 0 is generation 0
    gen = {r.genome_id: r.genome.generation for r in results}
    assert [gen[r.genome_id] for r in results[:4]] == [0, 0, 0, 0]
    assert all(r.genome.generation == 1 + max(gen[p] for p in r.genome.parents) for r in results[4:])


def _evo(args, project, env, **kwargs):
    return subprocess.run([sys.executable, "-m", "evo", *args], cwd=project, env=env, capture_output=True,
                          text=True, **kwargs)


def _processes(marker: str) -> list[int]:
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


@pytest.mark.slow
def test_kill_with_two_evaluations_in_flight_then_resume(tmp_path, tmp_path_factory):
    project = add_harness(tmp_path)
    (project / "fake_train.py").write_text(set_constants(SLOT_GENOME, {"SLEEP_S": 4.0}))
    cache = os.environ.get("EVO_TEST_CACHE_DIR") or str(tmp_path_factory.mktemp("cache"))
    env = {**os.environ, "EVO_CACHE_DIR": cache, "PYTHONUNBUFFERED": "1"}
    archive_path = project / "archive" / "evo.duckdb"
    with open(project / "start.log", "w") as log:
        engine = subprocess.Popen(
            [sys.executable, "-m", "evo", "start", "--population", "3", "--generations", "2", "--profile", "smoke",
             "--run", "k", "--workers", "2", "--fitness", "reported", "--seed-genome", "fake_train.py",
             "--noise-replicates", "2"],
            cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 240
        while True:  # wait for two evaluations running at once
            assert engine.poll() is None, (project / "start.log").read_text()
            assert time.monotonic() < deadline, (project / "start.log").read_text()
            time.sleep(0.5)
            if not archive_path.exists() or not Archive(archive_path).list_runs():
                continue
            running = [e for e in Archive(archive_path).evaluations("k") if e.state is EvalState.RUNNING]
            if len(running) == 2:
                break
        status = _evo(["status", "k"], project, env, timeout=120)  # shows every running slot
        assert status.returncode == 0, status.stderr
        assert "running now (2 slot(s))" in status.stdout
        for e in running:
            assert f"{e.device}: {e.genome_id}" in status.stdout
        archive = Archive(archive_path)
        finished_before = {e.eval_id: e for e in archive.evaluations("k") if e.state.is_finished}
        running = [e for e in archive.evaluations("k") if e.state is EvalState.RUNNING]
        engine.send_signal(signal.SIGKILL)
        engine.wait(timeout=30)
    marker = str(project / "genomes" / "k")
    deadline = time.monotonic() + 20
    while _processes(marker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes(marker) == []  # both genomes died with the engine

    resumed = _evo(["resume", "k", "--workers", "2"], project, env, timeout=600)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    evals = archive.evaluations("k")
    results = genome_results(archive.genomes("k"), evals)
    assert len(results) == 6 and all(r.is_finished for r in results)
    for eval_id, before in finished_before.items():  # nothing lost
        assert archive.evaluation(eval_id) == before
    counted = Counter((e.genome_id, e.seed) for e in evals if e.state is not EvalState.INTERRUPTED)
    assert set(counted.values()) == {1}  # nothing duplicated
    interrupted = sorted((e.genome_id, e.seed) for e in evals if e.state is EvalState.INTERRUPTED)
    # the evaluations in flight at the kill were re-run exactly once each (a replicate that is
    # no longer due after the resume is not re-run: it never counted)
    assert interrupted == sorted((e.genome_id, e.seed) for e in running)
    assert all(counted[key] == 1 for key in interrupted if key[1] == 42)  # first evaluations always are
