"""The Ray worker pool on a local Ray instance with two logical GPUs: jobs run at once as
Ray tasks, a killed Ray worker comes back as a lost worker, close() leaves nothing running."""

from __future__ import annotations

import dataclasses
import os
import signal
import textwrap
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from conftest import add_harness  # noqa: E402

from evo.evaluation import EvaluationSetup, HarnessChangedError, sha256_file  # noqa: E402
from evo.harness import GenomeView  # noqa: E402
from evo.limits import ProcessLimits  # noqa: E402
from evo.records import EvalState  # noqa: E402
from evo.sandbox import detect  # noqa: E402
from evo.workers import ray_pool  # noqa: E402
from evo.workers.base import EvaluationJob, WorkerLostError  # noqa: E402
from evo.workers.ray_pool import RayPool  # noqa: E402

# Prints which GPU it was given, writes "pid ppid" where EVO_TEST_PIDS says (when set),
# sleeps EVO_TEST_SLEEP seconds, then prints a summary block.
GENOME = textwrap.dedent(
    """\
    import os
    import time

    folder = os.environ.get("EVO_TEST_PIDS")
    if folder:
        with open(os.path.join(folder, os.environ["EVO_SEED"] + ".pid"), "w") as handle:
            handle.write(f"{os.getpid()} {os.getppid()}")
    print("visible:", os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
    print("start:", time.time(), flush=True)
    time.sleep(float(os.environ.get("EVO_TEST_SLEEP", "1")))
    print("end:", time.time())
    print("---")
    print("val_bpb: 1.234")
    print("training_seconds: 1.0")
    print("num_steps: 10")
    """
)


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(num_cpus=4, num_gpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def _setup(project: Path, sandbox: str) -> EvaluationSetup:
    add_harness(project)
    return EvaluationSetup(
        project, sha256_file(project / "prepare.py"), "smoke", "sotu", project / "cache", "reported",
        detect(sandbox), ProcessLimits(max_memory_mb=None),
    )


def _job(tmp_path: Path, seed: int, sleep_s: float, pids: Path | None = None) -> EvaluationJob:
    env = {"EVO_PROFILE": "smoke", "EVO_DATASET": "sotu", "EVO_SEED": str(seed), "EVO_TEST_SLEEP": str(sleep_s)}
    if pids is not None:
        env["EVO_TEST_PIDS"] = str(pids)
    return EvaluationJob(seed, f"g{seed}", GENOME, tmp_path / "genomes" / f"g{seed}.log", env, 120.0, None)


def _wait_all(pool: RayPool, count: int, timeout_s: float = 60.0):
    finished, deadline = [], time.monotonic() + timeout_s
    while len(finished) < count and time.monotonic() < deadline:
        finished += pool.wait(1.0)
    assert len(finished) == count, f"{len(finished)} of {count} jobs came back in {timeout_s} s"
    return finished


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _genome_pids(folder: Path, seed: int, timeout_s: float = 30.0) -> tuple[int, int]:
    path = folder / f"{seed}.pid"
    _wait_for(lambda: path.is_file() and path.read_text().strip(), timeout_s, "the genome to start")
    pid, parent = path.read_text().split()
    return int(pid), int(parent)


def test_two_jobs_run_at_once_each_on_its_own_gpu(ray_instance, tmp_path):
    ticks = []
    pool = RayPool(_setup(tmp_path, "auto"), tmp_path / "genomes", "local", 2, gpu=True,
                   on_tick=lambda device, tick: ticks.append((device, tick)))
    try:
        jobs = [_job(tmp_path, seed, 1.5) for seed in (1, 2)]
        assert pool.next_device() == "ray"
        assert [pool.submit(job) for job in jobs] == ["ray#0", "ray#1"]  # one display row per slot
        assert pool.free() == 0 and len(pool.running()) == 2
        with pytest.raises(RuntimeError):
            pool.submit(_job(tmp_path, 3, 0.0))
        finished = _wait_all(pool, 2)
    finally:
        pool.close()
    assert pool.free() == 2 and pool.running() == []
    visible, spans = set(), []
    for f in finished:
        assert f.error is None, f.error
        assert f.outcome.state is EvalState.COMPLETE, f.outcome
        assert f.outcome.metrics["val_bpb"] == pytest.approx(1.234)
        assert f.device.startswith("ray:") and "/GPU" in f.device
        assert f.started_s <= f.finished_s
        log = f.job.log_path.read_text()
        assert "val_bpb: 1.234" in log
        visible.add(log.split("visible:", 1)[1].split()[0])
        spans.append(tuple(float(log.split(f"{edge}:", 1)[1].split()[0]) for edge in ("start", "end")))
    assert len(visible) == 2, visible  # each task had its own (logical) GPU
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # the genomes ran at once
    assert ticks and {device for device, _ in ticks} == {"ray#0", "ray#1"}


def test_a_killed_ray_worker_comes_back_as_a_lost_worker(ray_instance, tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    pool = RayPool(_setup(tmp_path, "none"), tmp_path / "genomes", "local", 1, gpu=False)
    try:
        job = _job(tmp_path, 7, 60.0, pids)
        pool.submit(job)
        genome, worker = _genome_pids(pids, 7)
        assert "ray::" in Path(f"/proc/{worker}/cmdline").read_bytes().decode(errors="replace")
        os.kill(worker, signal.SIGKILL)
        [finished] = _wait_all(pool, 1, timeout_s=30.0)
    finally:
        pool.close()
    assert finished.outcome is None and isinstance(finished.error, WorkerLostError), finished.error
    assert finished.device == "ray"
    _wait_for(lambda: not _alive(genome), 10.0, "the genome to die with its worker")
    assert "did not run to an end" in job.log_path.read_text()


def _one_genome_running(tmp_path, number: int):
    """A one-slot pool on this node with genome ``g<number>`` (60 s long) running; (pool, genome pid)."""
    pids = tmp_path / "pids"
    pids.mkdir()
    pool = RayPool(_setup(tmp_path, "none"), tmp_path / "genomes", "local", 1, gpu=False)
    pool.submit(_job(tmp_path, number, 60.0, pids))
    genome, _ = _genome_pids(pids, number)
    return pool, genome


def _work_folders(number: int) -> list[Path]:
    """This node's work folders of genome ``g<number>``."""
    return list((Path(ray_pool.tempfile.gettempdir()) / "evo-ray").glob(f"*/g{number}.work"))


def test_a_forced_cancel_leaves_no_genome_and_no_work_folder_on_this_node(ray_instance, tmp_path):
    # No grace: the task's worker is killed at once, so the task's own clean-up never runs;
    # close() removes the killed worker's folder itself.
    pool, genome = _one_genome_running(tmp_path, 11)
    assert _work_folders(11)
    pool.close(timeout_s=0.0)
    _wait_for(lambda: not _alive(genome), 10.0, "the genome to be killed")
    assert not _work_folders(11)


def test_close_cancels_jobs_in_flight_and_leaves_no_genome(ray_instance, tmp_path):
    pool, genome = _one_genome_running(tmp_path, 9)
    start = time.monotonic()
    pool.close()
    assert time.monotonic() - start < 15.0
    _wait_for(lambda: not _alive(genome), 10.0, "the genome to be killed")
    assert pool.running() == [] and pool.wait(0.0) == []
    pool.close()  # idempotent
    assert not _work_folders(9)
    with pytest.raises(RuntimeError):
        pool.submit(_job(tmp_path, 10, 0.0))


def test_a_changed_harness_comes_back_as_such(ray_instance, tmp_path):
    setup = _setup(tmp_path, "none")
    pool = RayPool(setup, tmp_path / "genomes", "local", 2, gpu=False)
    try:
        # on the node: the project is elsewhere and the bytes that travelled are not the pinned harness
        pool._harness_ref = ray.put(b"not the harness")
        pool._setup_ref = ray.put(dataclasses.replace(setup, project_dir=tmp_path / "elsewhere"))
        pool.submit(_job(tmp_path, 11, 0.0))
        # on the driver: prepare.py changed since the run started
        (tmp_path / "prepare.py").write_text("# changed\n")
        pool.submit(_job(tmp_path, 12, 0.0))
        finished = {f.job.eval_id: f for f in _wait_all(pool, 2)}
    finally:
        pool.close()
    for f in finished.values():
        assert f.outcome is None and isinstance(f.error, HarnessChangedError), f.error
    assert "sent to this node" in str(finished[11].error)


def test_a_node_without_the_project_gets_a_node_local_one(tmp_path, monkeypatch):
    (tmp_path / "driver").mkdir()
    setup = _setup(tmp_path / "driver", "none")
    harness = (tmp_path / "driver" / "prepare.py").read_bytes()
    elsewhere = dataclasses.replace(setup, project_dir=tmp_path / "missing")
    prepared = []
    monkeypatch.setattr(ray_pool, "prepare_data", lambda project, profile, dataset: prepared.append(project))
    data = tmp_path / "node-cache" / "train.bin"
    view = GenomeView(tmp_path / "node-cache", (data,), (tmp_path / "node-cache",))
    monkeypatch.setattr(ray_pool, "genome_view", lambda prepare_py, profile, dataset: view)
    monkeypatch.setattr(ray_pool, "_prepared", set())

    assert ray_pool.node_setup(setup, harness, root=tmp_path / "node") is setup  # same machine: as it is
    local = ray_pool.node_setup(elsewhere, harness, root=tmp_path / "node")
    again = ray_pool.node_setup(elsewhere, harness, root=tmp_path / "node")
    project = tmp_path / "node" / setup.harness_sha256
    assert local == again and local.project_dir == project
    assert (project / "prepare.py").read_bytes() == harness
    assert prepared == [project]  # once per node process
    assert local.cache_dir == view.cache_dir and local.data_files == (data,) and local.hidden == view.hidden
    assert local.compile_cache is None  # no sandbox: no shared compile cache (evo.compile_cache)
    with pytest.raises(HarnessChangedError):
        ray_pool.node_setup(elsewhere, b"another harness", root=tmp_path / "node")


def test_a_node_local_project_keeps_its_own_compile_cache_per_run(tmp_path, monkeypatch):
    (tmp_path / "driver").mkdir()
    setup = _setup(tmp_path / "driver", "bwrap")
    shared = tmp_path / "driver" / "genomes" / "run7" / ".compile-cache"
    elsewhere = dataclasses.replace(setup, project_dir=tmp_path / "missing", compile_cache=shared)
    monkeypatch.setattr(ray_pool, "prepare_data", lambda project, profile, dataset: None)
    view = GenomeView(tmp_path / "node-cache", (), ())
    monkeypatch.setattr(ray_pool, "genome_view", lambda prepare_py, profile, dataset: view)
    monkeypatch.setattr(ray_pool, "_prepared", set())
    harness = (tmp_path / "driver" / "prepare.py").read_bytes()
    local = ray_pool.node_setup(elsewhere, harness, root=tmp_path / "node")
    assert local.compile_cache == tmp_path / "node" / setup.harness_sha256 / "compile-caches" / "run7"
    assert local.compile_cache.parent.is_dir() and not local.compile_cache.exists()  # filled by a seed run here


def test_the_engine_reruns_an_evaluation_whose_ray_worker_died_exactly_once(ray_instance, tmp_path):
    from conftest import FAKE_GENOME
    from test_engine import Recorder

    from evo.archive import Archive
    from evo.config import Paths, RunConfig
    from evo.engine import Engine, Execution
    from evo.operators.cst_tools import set_constants
    from evo.results import genome_results

    pids = tmp_path / "pids"
    pids.mkdir()
    # the fake genome writes "pid ppid" (its parent is the Ray worker: no sandbox here)
    genome = set_constants(FAKE_GENOME, {"SLEEP_S": 2.0}).replace(
        "    time.sleep(SLEEP_S)\n",
        f"    open(os.path.join({str(pids)!r}, str(os.getpid())), 'w').write(f'{{os.getpid()}} {{os.getppid()}}')\n"
        "    time.sleep(SLEEP_S)\n",
    )

    class Killer(Recorder):
        """Kills the Ray worker of the first genome it sees running, once."""

        killed: int | None = None

        def tick(self, device, tick):
            if self.killed is None and any(pids.iterdir()):
                _, worker = next(pids.iterdir()).read_text().split()
                os.kill(int(worker), signal.SIGKILL)
                self.killed = int(worker)

    paths = Paths.for_project(add_harness(tmp_path))
    archive = Archive(paths.archive_path)
    config = RunConfig(run="r", profile="smoke", population=3, generations=2, seed=4, fitness="reported",
                       sandbox="none", noise_replicates=2)
    archive.create_run(config, 2.0, tmp_path)
    reporter = Killer()
    Engine(paths, archive, config, 2.0, "cpu", reporter, Execution(workers=2, ray="local")).run(genome)

    assert reporter.killed is not None
    evals = archive.evaluations("r")
    results = genome_results(archive.genomes("r"), evals)
    assert len(results) == 6 and all(r.is_finished for r in results)
    [lost] = [e for e in evals if e.state is EvalState.INTERRUPTED]
    assert "was lost" in lost.error
    again = [e for e in evals if (e.genome_id, e.seed) == (lost.genome_id, lost.seed)]
    assert [e.state for e in again] == [EvalState.INTERRUPTED, EvalState.COMPLETE]  # re-run, exactly once
    assert all(e.device.startswith("ray:") for e in evals if e.state is EvalState.COMPLETE)
