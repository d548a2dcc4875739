"""Second red-team of the engine's snapshot of a genome's export (evo.model_snapshot, commit d004eaa).

Each test here showed a problem of that version and guards its fix; its docstring tells the
attack as it worked then and the fix it suggested (what was built: a copy the export's
changes made fail is tried again only once the files changed, at most 3 times; a stop event
checked between chunks, set by discard() and for a genome killed at its limit). Genomes run through the real sandboxed
evaluate_genome on the smoke profile (fixture from test_warm_evaluator).
"""

from __future__ import annotations

import textwrap
import time

from test_warm_evaluator import EXPLOITS, setup  # noqa: F401  (the module fixture)

from evo.evaluation import evaluate_genome
from evo.model_snapshot import ModelSnapshot


def _run(setup, ending: str, genome_id: str, hard_limit_s: float = 120.0, ready_limit=None, on_tick=None):  # noqa: F811
    code = (EXPLOITS / "base.py").read_text() + "\n" + textwrap.dedent(ending)
    genome_dir = setup.project_dir / "genomes" / "run"
    genome_dir.mkdir(parents=True, exist_ok=True)
    env = {"EVO_PROFILE": "smoke", "EVO_DATASET": "sotu", "EVO_SEED": "1"}
    outcome = evaluate_genome(setup, code, genome_dir / f"{genome_id}.work", genome_dir / f"{genome_id}.log", env,
                              hard_limit_s=hard_limit_s, scoring_limit=None, ready_limit=ready_limit,
                              on_tick=on_tick)
    return outcome, genome_dir


# The genome writes a complete export with a large state_dict.pt of real data, then watches
# its own files with inotify (the engine's reads are visible to it): when the engine opens
# program.json (a copy starts), constants.pt is renamed away, and put back once the engine
# has read state_dict.pt and failed on constants.pt. Every copy fails as "swapped or removed
# meanwhile" and is retried at the next tick, for as long as the genome runs.
DODGER = """
import ctypes, select
_d = os.environ['EVO_EXPORT_DIR']
os.makedirs(_d)
_p = lambda n: os.path.join(_d, n)
with open(_p('program.json'), 'wb') as _f:
    _f.write(b'{}')
with open(_p('state_dict.pt'), 'wb') as _f:
    for _ in range(MIB // 16):
        _f.write(os.urandom(16 << 20))
with open(_p('constants.pt'), 'wb') as _f:
    _f.write(b'x')
_libc = ctypes.CDLL(None, use_errno=True)
_fd = _libc.inotify_init()
_libc.inotify_add_watch(_fd, _p('program.json').encode(), 0x20)  # IN_OPEN
_libc.inotify_add_watch(_fd, _p('state_dict.pt').encode(), 0x10)  # IN_CLOSE_NOWRITE
print('export written, dodging', flush=True)
_end = time.time() + SECONDS
while time.time() < _end:
    if not select.select([_fd], [], [], 0.5)[0]:
        continue
    _events = os.read(_fd, 65536)
    _wd, _mask = int.from_bytes(_events[:4], 'little'), int.from_bytes(_events[4:8], 'little')
    if _mask & 0x20 and os.path.exists(_p('constants.pt')):
        os.rename(_p('constants.pt'), _p('constants.away'))
    elif _mask & 0x10 and os.path.exists(_p('constants.away')):
        time.sleep(0.02)
        os.rename(_p('constants.away'), _p('constants.pt'))
"""


def test_a_genome_makes_the_engine_copy_its_export_over_and_over(setup, monkeypatch):  # noqa: F811
    """A copy that failed because a file was "swapped or removed meanwhile" is retried at the
    next tick, without limit and whether or not the export changed. A genome that removes
    constants.pt whenever the engine starts a copy (inotify tells it) and puts it back after
    makes the engine copy its state_dict.pt (real data, up to RLIMIT_FSIZE = 16 GiB) about
    four times a second for its whole run: disk and CPU work in the engine's process, outside
    the genome's limits, competing with the other slots' copies (whose time is charged to
    their model_ready_s). Fix (ModelSnapshot.poll/_copy): after a failed copy, start another
    only when the export's files changed since (their (st_ino, st_size, st_mtime_ns) differ
    from the failed attempt's), and at most a few times in all (e.g. 3; then ``refused``:
    "the export kept changing while the engine copied it")."""
    attempts: list[float] = []
    copy = ModelSnapshot._copy

    def counted(self):
        attempts.append(time.monotonic())
        copy(self)

    monkeypatch.setattr(ModelSnapshot, "_copy", counted)
    mib, seconds = 128, 8
    outcome, _ = _run(setup, DODGER.replace("MIB", str(mib)).replace("SECONDS", str(seconds)), "g1001")
    copied = len(attempts) * mib
    assert len(attempts) <= 3, (
        f"the engine started {len(attempts)} copies of the same export in {seconds} s (~{copied:,} MiB written); "
        f"outcome {outcome.state} {outcome.failure_kind}: {outcome.error}")


BIG_EXPORT = """
_d = os.environ['EVO_EXPORT_DIR']
os.makedirs(_d + '.tmp')
_block = os.urandom(16 << 20)
with open(os.path.join(_d + '.tmp', 'program.json'), 'wb') as _f:
    _f.write(b'{}')
for _n in ('state_dict.pt', 'constants.pt'):
    with open(os.path.join(_d + '.tmp', _n), 'wb') as _f:
        for _i in range(MIB // 16):
            _f.write(_block)
        os.fsync(_f.fileno())
os.rename(_d + '.tmp', _d)
print('big export written', flush=True)
time.sleep(600)
"""


def test_an_interrupted_evaluation_waits_for_the_whole_copy(setup, monkeypatch):  # noqa: F811
    """evaluate_genome promises KeyboardInterrupt "after the processes were killed and the
    workspace removed": the genome is killed at once, but ModelSnapshot.discard joins a copy
    under way to its end, and the copy has no way to stop: up to 2 x 16 GiB (RLIMIT_FSIZE) of
    real data written to the engine's disk before Ctrl-C (or the engine's shutdown) returns;
    a second Ctrl-C during that join leaves the snapshot and the workspace behind. Fix
    (ModelSnapshot): a threading.Event ``_cancel`` that discard() sets before its join, checked
    by _copy between files and by _copy_file between chunks (raise OSError(ECANCELED))."""
    started: list[float] = []
    copy = ModelSnapshot._copy

    def noted(self):
        started.append(time.monotonic())
        copy(self)

    monkeypatch.setattr(ModelSnapshot, "_copy", noted)
    interrupted: list[float] = []

    def on_tick(tick):
        if started and not interrupted:
            time.sleep(0.2)  # the copy is well under way
            interrupted.append(time.monotonic())
            raise KeyboardInterrupt

    ending = BIG_EXPORT.replace("MIB", "1024")
    try:
        _run(setup, ending, "g1002", on_tick=on_tick)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the interrupt was swallowed")
    waited = time.monotonic() - interrupted[0]
    assert waited < 3.0, f"Ctrl-C took {waited:.1f} s to return: the engine finished copying ~2 GiB first"


def test_a_genome_killed_at_the_hard_limit_holds_its_slot_while_the_engine_copies_its_export(setup):  # noqa: F811
    """A genome makes its large export complete just before the hard limit. It is killed at
    the limit (``timeout``: never scored), but at_exit first joins the copy under way, and
    when that one failed starts another: the slot stays busy for up to two copies of
    2 x 16 GiB past the hard limit (what the first red-team's threaded copy was meant to end),
    for a model that cannot be scored. Fix (ModelSnapshot.at_exit, evaluate_genome): pass
    ``result.timed_out``; when it is set, cancel the copy under way (the ``_cancel`` event of
    test_an_interrupted_evaluation_waits_for_the_whole_copy) and take none."""
    hard = 16.0
    ending = BIG_EXPORT.replace("MIB", "1024").replace(
        "os.rename(_d + '.tmp', _d)",
        f"time.sleep(max(0.0, EXPLOIT_T0 + {hard - 2.5} - time.time()))\nos.rename(_d + '.tmp', _d)")
    t0 = time.monotonic()
    outcome, _ = _run(setup, ending, "g1003", hard_limit_s=hard)
    took = time.monotonic() - t0
    assert outcome.failure_kind is not None and outcome.failure_kind.name == "TIMEOUT", (outcome.state, outcome.error)
    assert took < outcome.wall_s + 3.0, (
        f"the genome was killed at {outcome.wall_s:.1f} s, but its evaluation held the slot {took:.1f} s")
