"""Red-team of the engine's snapshot of a genome's export (evo.model_snapshot).

Each test here showed a real problem of its first version (commit 74e84c5) and guards its fix;
each docstring tells the attack as it worked then, and the fix it suggested (what was built:
one folder descriptor for every open, the copy in a thread of its own with holes kept as
holes, ``ready_s`` when the copy is complete, snapshots removed at start-up).
The unit tests drive ModelSnapshot directly (no sandbox); the others run a genome through
the real sandboxed evaluate_genome on the smoke profile (fixture from test_warm_evaluator).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from test_warm_evaluator import EXPLOITS, setup  # noqa: F401  (the module fixture)

from evo.evaluation import evaluate_genome
from evo.evaluator import PROGRAM_FILES
from evo.genome import remove_workspaces, workspace_path
from evo.model_snapshot import ModelSnapshot

GiB = 2**30


def _export(folder: Path, tag: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in PROGRAM_FILES:
        (folder / name).write_bytes(tag + b" " + name.encode())


def _allocated(folder: Path) -> int:
    return sum(os.stat(p).st_blocks * 512 for p in folder.iterdir())


SWAPPER = """
import ctypes, sys, time
libc = ctypes.CDLL(None, use_errno=True)
a, b = sys.argv[1].encode(), sys.argv[2].encode()
real_share = float(sys.argv[3])  # the share of the time the real folder is in place
end = time.time() + float(sys.argv[4])
while time.time() < end:
    libc.renameat2(-100, a, -100, b, 2)  # RENAME_EXCHANGE: the link in place of the real folder
    t = time.perf_counter()
    while time.perf_counter() - t < 1e-4 * (1 - real_share): pass
    libc.renameat2(-100, a, -100, b, 2)  # the real folder back
    t = time.perf_counter()
    while time.perf_counter() - t < 1e-4 * real_share: pass
"""


def test_export_folder_swapped_for_a_link_between_check_and_open_makes_the_engine_read_outside(tmp_path):
    """ModelSnapshot.poll checks ``export_dir`` with lstat (a real folder), then opens
    ``export_dir / name`` by path: O_NOFOLLOW guards only the last component, so a genome
    that swaps its export folder with a symlink (renameat2 RENAME_EXCHANGE in a loop) makes
    the engine, outside the sandbox, resolve the link and copy files from any folder of the
    host (another genome's workspace or snapshot, say): that copy is then scored as its model.
    Here about half the polls copy the victim's files. Fix: open the folder once
    (O_DIRECTORY | O_NOFOLLOW) and do every lstat/open relative to that descriptor (dir_fd=)."""
    ws = tmp_path / "ws"
    victim = tmp_path / "victim.work" / "evo_model"
    _export(ws / "evo_model", b"mine")
    _export(victim, b"VICTIM")
    (ws / "link").symlink_to(victim)
    swapper = subprocess.Popen([sys.executable, "-c", SWAPPER, str(ws / "evo_model"), str(ws / "link"), "0.5", "60"])
    try:
        time.sleep(0.3)
        stolen = 0
        for i in range(100):
            into = tmp_path / f"into{i}"
            snap = ModelSnapshot(ws / "evo_model", into)
            if snap.poll(1.0, wait=True) and into.is_dir():
                stolen += any(p.read_bytes().startswith(b"VICTIM") for p in into.iterdir())
            snap.discard()
    finally:
        swapper.kill()
        swapper.wait()
    assert stolen == 0, f"{stolen} of 100 snapshots copied files from outside the genome's workspace"


def test_sparse_export_files_cost_the_engine_real_disk_and_a_long_stall(tmp_path):
    """A genome truncates state_dict.pt and constants.pt to a large size (a sparse file: no
    disk of its own, allowed up to RLIMIT_FSIZE, 16 GiB by default, each): the engine's copy
    writes every zero for real, into the engine's folder, synchronously inside the runner's
    tick (so the hard wall limit is not checked meanwhile). 2 x 1 GiB here: ~4 KiB of the
    genome's, 2 GiB of the engine's, seconds of stall; at 2 x 16 GiB, 32 GiB and minutes.
    Fix (model_snapshot._copy_regular): refuse a file whose allocated size is far below its
    size (``st_blocks * 512 < st_size - slack``), and/or copy with os.copy_file_range /
    a reflink (holes stay holes), and bound the total bytes copied per snapshot."""
    export = tmp_path / "ws" / "evo_model"
    export.mkdir(parents=True)
    (export / PROGRAM_FILES[0]).write_bytes(b"{}")
    for name in PROGRAM_FILES[1:]:
        with open(export / name, "wb") as f:
            f.truncate(1 * GiB)
    into = tmp_path / "into"
    snap = ModelSnapshot(export, into)
    t0 = time.monotonic()
    assert snap.poll(1.0, wait=True)
    took = time.monotonic() - t0
    engine_bytes = _allocated(into) if into.is_dir() else 0
    snap.discard()
    assert snap.refused or engine_bytes <= _allocated(export) + 2**20, (
        f"the genome's export holds {_allocated(export):,} bytes of disk; the engine's copy "
        f"{engine_bytes:,} (took {took:.1f} s, in the tick)")


def test_a_file_replaced_while_an_earlier_one_is_copied_is_scored_with_the_copy_start_as_ready_time(tmp_path):
    """poll() sets ``ready_s`` to the tick's time *before* the copy, but opens the three
    files one after the other by path: a genome that keeps training while the engine copies a
    large state_dict.pt and then replaces constants.pt (os.replace, as prepare does) gets its
    later constants.pt copied with the earlier ``ready_s``. The larger the file (up to
    RLIMIT_FSIZE) or the slower the engine's disk, the more training time this buys, and
    torch.export lifts plain tensor attributes into constants.pt, so a genome can put its
    weights there. Fix (ModelSnapshot.poll): open all three files (relative to one folder
    descriptor) before copying any, and set ``ready_s`` when the copy is done
    (``elapsed_s + (time.monotonic() - t0)``), which also covers writes through a kept
    descriptor during the copy."""
    export = tmp_path / "ws" / "evo_model"
    export.mkdir(parents=True)
    (export / PROGRAM_FILES[0]).write_bytes(b"{}")
    with open(export / PROGRAM_FILES[1], "wb") as f:  # a large state_dict.pt, written for real (not sparse)
        block = b"\1" * (64 * 2**20)
        for _ in range(8):
            f.write(block)
    (export / PROGRAM_FILES[2]).write_bytes(b"weights at the export")
    into = tmp_path / "into"
    t0 = time.monotonic()
    replaced_at: list[float] = []

    def genome() -> None:  # trains on while the engine copies, then "exports" again
        while not (into / PROGRAM_FILES[1]).exists():
            time.sleep(0.0005)
        tmp = export / "constants.pt.tmp"
        tmp.write_bytes(b"weights trained later")
        os.replace(tmp, export / PROGRAM_FILES[2])
        replaced_at.append(time.monotonic() - t0)

    thread = threading.Thread(target=genome, daemon=True)
    thread.start()
    snap = ModelSnapshot(export, into)
    assert snap.poll(time.monotonic() - t0, wait=True)
    thread.join(30)
    got = (into / PROGRAM_FILES[2]).read_bytes()
    snap.discard()
    assert replaced_at, "the copy finished before the genome could replace the file (a faster disk): enlarge it"
    assert got == b"weights at the export" or snap.ready_s >= replaced_at[0], (
        f"scored constants.pt written at {replaced_at[0]:.3f} s with model_ready_s {snap.ready_s:.3f} s")


def test_snapshot_folders_a_killed_engine_left_are_removed_at_the_next_start(tmp_path):
    """The snapshot lives beside the workspace, ``.<genome_id>.work.model``, and can be as
    large as the export (up to 2 x 64 GiB). A killed engine (SIGKILL, OOM, power) leaves it,
    and Engine start-up's genome.remove_workspaces only globs ``*.work`` and
    ``.*.work.harness``, so it stays forever. Fix (evo/genome.py remove_workspaces): also
    remove ``.*.work.model``."""
    genome_dir = tmp_path / "genomes" / "run"
    ws = workspace_path(genome_dir, "g0001")
    ws.mkdir(parents=True)
    left = ws.parent / f".{ws.name}.model"  # as evaluate_genome names it
    _export(left, b"big")
    (ws.parent / f".{ws.name}.harness").mkdir()
    remove_workspaces(genome_dir)
    assert not ws.exists() and not (ws.parent / f".{ws.name}.harness").exists()
    assert not left.exists(), "a killed engine's model snapshot is never removed"


# ---------------------------------------------------------------------------- in the sandbox


def _run(setup, ending: str, genome_id: str, hard_limit_s: float = 120.0, ready_limit: float | None = None):  # noqa: F811
    code = (EXPLOITS / "base.py").read_text() + "\n" + textwrap.dedent(ending)
    genome_dir = setup.project_dir / "genomes" / "run"
    genome_dir.mkdir(parents=True, exist_ok=True)
    env = {"EVO_PROFILE": "smoke", "EVO_DATASET": "sotu", "EVO_SEED": "1"}
    outcome = evaluate_genome(setup, code, genome_dir / f"{genome_id}.work", genome_dir / f"{genome_id}.log", env,
                              hard_limit_s=hard_limit_s, scoring_limit=None, ready_limit=ready_limit)
    return outcome, genome_dir


def _honest_export(setup, into: Path) -> None:  # noqa: F811
    """Run the honest base genome unsandboxed, exporting into ``into`` (a stand-in for
    another slot's genome, whose workspace is ``<genome_dir>/<id>.work``)."""
    work = into.parent.parent / "victim.src"
    work.mkdir(parents=True, exist_ok=True)
    (work / "prepare.py").write_bytes((setup.project_dir / "prepare.py").read_bytes())
    (work / "train.py").write_text((EXPLOITS / "base.py").read_text() + "\nhonest_main()\n")
    env = {**os.environ, "EVO_CACHE_DIR": str(setup.cache_dir), "EVO_PROFILE": "smoke", "EVO_DATASET": "sotu",
           "EVO_EXPORT_DIR": str(into), "EVO_EXPLOIT_DEVICE": "cpu"}
    subprocess.run([sys.executable, "train.py"], cwd=work, env=env, check=True, capture_output=True, timeout=300)
    assert all((into / n).is_file() for n in PROGRAM_FILES)


def test_sandboxed_genome_makes_the_engine_copy_another_folder_of_the_host(setup, monkeypatch):  # noqa: F811
    """End to end: a genome in bubblewrap keeps an empty real export folder and a symlink to
    a host path it cannot see (another genome's export here; the engine resolves the link,
    outside the sandbox), exchanging the two in a loop biased towards the link. When a poll
    sees the real folder at its lstat and the link at its opens, the engine copies the other
    folder's files as this genome's model (never its own: the real folder is empty, so a lost
    race costs nothing and is retried 4 times a second), and the trusted evaluator scores the
    other genome's model as this one's: COMPLETE, without training. Fix: as in the unit test above."""
    victim = setup.project_dir / "genomes" / "run" / "victim.work" / "evo_model"
    _honest_export(setup, victim)  # a real model: what another slot's genome has just exported
    copies: list[dict[str, bytes]] = []
    poll = ModelSnapshot.poll

    def watched(self, elapsed_s, wait=False):
        fresh = not self.taken
        taken = poll(self, elapsed_s, wait)
        if fresh and taken and self.into.is_dir():
            copies.append({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in self.into.iterdir()})
        return taken

    monkeypatch.setattr(ModelSnapshot, "poll", watched)
    ending = f"""
    import subprocess
    _d = os.environ['EVO_EXPORT_DIR']
    os.makedirs(_d)
    os.symlink({str(victim)!r}, _d + '.link')
    subprocess.run([sys.executable, '-c', {SWAPPER!r}, _d, _d + '.link', '0.15', '40'])
    print('swapped', flush=True)
    """
    outcome, _ = _run(setup, ending, "g0901")
    victims = {n: hashlib.sha256((victim / n).read_bytes()).hexdigest() for n in PROGRAM_FILES}
    assert victims not in copies, (  # (after a fix no snapshot is taken: the real folder stays empty)
        f"the engine copied a host folder outside the workspace; outcome {outcome.state} "
        f"{outcome.failure_kind} {outcome.error}, val_bpb {outcome.metrics.get('val_bpb')}, "
        f"model_ready_s {outcome.metrics.get('model_ready_s')}")


def test_a_sparse_export_stalls_the_engine_past_the_hard_wall_limit(setup):  # noqa: F811
    """End to end: a genome writes program.json and two sparse 2 GiB tensor files, then
    sleeps. The engine's copy runs inside the runner's tick, so the 6 s hard limit is not
    checked until it is done: the genome runs ~25 s here (and ~200 s with the 16 GiB files
    RLIMIT_FSIZE allows), the slot is blocked meanwhile and the engine writes 4 GiB of zeros.
    Fix: copy in a thread of its own (the tick only starts it / checks it), with the
    sparse-file refusal of test_sparse_export_files_cost_the_engine_real_disk_and_a_long_stall."""
    ending = """
    _d = os.environ['EVO_EXPORT_DIR']
    os.makedirs(_d)
    with open(os.path.join(_d, 'program.json'), 'w') as _f:
        _f.write('{}')
    for _n in ('state_dict.pt', 'constants.pt'):
        with open(os.path.join(_d, _n), 'wb') as _f:
            _f.truncate(2 << 30)
    print('sparse export written', flush=True)
    time.sleep(600)
    """
    hard = 6.0
    outcome, _ = _run(setup, ending, "g0902", hard_limit_s=hard)
    assert outcome.wall_s < hard + 3.0, (  # a tick, a SIGTERM: well under 3 s
        f"a {hard:.0f} s hard limit, but the genome ran {outcome.wall_s:.1f} s ({outcome.state} "
        f"{outcome.failure_kind}: {outcome.error})")
