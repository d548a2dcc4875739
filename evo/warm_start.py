"""A slot's next genome interpreter, started while the current genome finishes.

Between one genome's last training step and the next genome's first, a slot waits for
the export, the trusted evaluation, the engine's bookkeeping and the next genome's
start-up. Part of that start-up is the same for every genome: the Python interpreter and
its imports of torch, numpy and tiktoken (on a GPU also ``torch.compile``'s Dynamo and
Inductor, which a compiling genome would otherwise import inside its own clock). So when
a slot's genome is done training (its harness prints
:data:`evo.warm_evaluator.EXPORT_STARTED`, or it exits) the slot's pool starts a
:class:`WarmStart` for the slot's next evaluation, whatever that will be:

* a process in the sandbox the next genome gets, under its limits, in a workspace of its
  own that holds the pinned ``prepare.py``, runs a fixed *prelude* (:data:`PRELUDE`, evo's
  code, never a genome's): it imports those modules and waits on its stdin;
* at the release (:meth:`WarmStart.run`), the engine has written the genome's
  ``train.py`` into that workspace; it sends the evaluation's whole environment (a JSON
  line), and the prelude replaces its own environment with it, prints
  :data:`STARTED_WARM` (the first line of the genome's log) and runs ``train.py`` as
  ``python train.py`` would (a fresh ``__main__`` module, ``sys.argv``, ``sys.path[0]``,
  ``__file__``). The wall-clock limit, the ticks and the measured wall time count from the
  release, as for the warm trusted evaluator (:class:`evo.runner.Gate`).

Nothing of a genome runs before its release, so it gains no training time and no access
it would not have cold. (A genome may print the export line itself: that only starts its
slot's next interpreter early, on its own slot's cores; the next genome's workspace is
hidden from it by the sandbox, and without a sandbox warm starts are off.) What a genome
can observe: torch already imported; a traceback with one frame of the prelude above its
own; ``sys.orig_argv``, ``/proc/self/cmdline`` and the process's CPU clock include the
prelude. Its wall time is shorter than cold by the imports, so the scoring limit (set on
the seed genome, which starts cold) leaves it that much more headroom; the model-ready
limit does not: the prelude times its imports (printed with :data:`STARTED_WARM`, before
any genome code runs) and :mod:`evo.model_snapshot` counts them in the genome's ready time. A genome whose
source mentions the environment (``environ``, ``getenv``, ``putenv``, ``unsetenv``) may set
variables that torch reads at import (``TORCH_LOGS``, Inductor's), so it starts cold
(:func:`takes`) and behaves as its exported ``train.py`` would. The check is textual: a
genome that hides such a call only makes its own run differ from its export.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from evo.genome import remove_tree
from evo.runner import TAIL_BYTES, Gate, ProcessResult, Tick
from evo.sandbox import SandboxSpec

MODULES = ("numpy", "tiktoken", "torch")  # what the harness and every genome import
GPU_MODULES = ("torch._dynamo", "torch._inductor.compile_fx")  # imported by torch.compile on its first call
ENVIRONMENT_USE = re.compile(r"environ|putenv|unsetenv|getenv")
STARTED_WARM = "evo: this genome runs in an interpreter started before its turn (evo.warm_start)"
IMPORTS_LINE = re.compile(re.escape(STARTED_WARM) + r" \(imports ([0-9]+\.[0-9]+) s\)")
HEAD_BYTES = 64 * 2**10  # of a log: where the prelude's line is (after any import warnings)
MAX_IMPORTS_S = 600.0
RELEASED_LIMIT_S = 3600.0  # placeholder: every release sets the genome's own limit. While held there is
# none: the pool cancels an unneeded one, and one whose engine died reads EOF on its stdin and exits
PRELUDE = """\
import time as _time
_t0 = _time.monotonic()
import importlib, importlib.machinery, json, os, sys, types
for _name in {modules!r}:
    try:
        importlib.import_module(_name)
    except Exception:
        pass  # the genome's own import reports it
_imports_s = _time.monotonic() - _t0
_line = sys.stdin.readline()
if not _line.strip():
    raise SystemExit(0)
os.environ.clear()
os.environ.update(json.loads(_line))
print({marker!r} + " (imports %.2f s)" % _imports_s, flush=True)
_path = os.path.join(os.getcwd(), "train.py")
sys.argv = ["train.py"]
sys.path[0] = os.getcwd()
_main = types.ModuleType("__main__")
_main.__file__, _main.__cached__, _main.__builtins__ = _path, None, __builtins__
_main.__loader__ = importlib.machinery.SourceFileLoader("__main__", _path)
sys.modules["__main__"] = _main
with open(_path, "rb") as _file:
    _code = compile(_file.read(), _path, "exec")
exec(_code, _main.__dict__)
"""


class WarmStartLost(RuntimeError):
    """The prelude was gone before its release: nothing of the genome ran; start it cold."""


def takes(code: str) -> bool:
    """Whether a genome may run in a warm interpreter: its source never mentions the
    process environment, so torch's imports saw the environment it would have seen cold."""
    return ENVIRONMENT_USE.search(code) is None


class WarmStart:
    """One prelude process held for a slot's next evaluation (module docstring).

    Args:
        setup: the run's :class:`evo.evaluation.EvaluationSetup`.
        workspace: the genome's workspace to be (made by ``prepare``).
        prepare: makes the workspace and returns the genome's sandbox and its environment
            at spawn (the genome's, less the evaluation's own variables); run in this
            object's thread, so that copying a compile cache never holds up a caller.
        log_path: where the prelude's output goes until the release; then renamed to the
            evaluation's log (same folder), and the genome's output follows in it.
        placement: the slot's :class:`evo.evaluation.Placement`.
    """

    def __init__(self, setup, workspace: Path, prepare: Callable[[], tuple[SandboxSpec, dict[str, str]]],
                 log_path: Path, placement) -> None:
        self.setup = setup
        self.workspace = workspace
        self.log_path = log_path
        self.placement = placement
        self.gate = Gate()
        self._prepare = prepare
        self._on_tick: Callable[[Tick], None] | None = None
        self._result: ProcessResult | None = None
        self._error: BaseException | None = None
        self.imports_s = 0.0  # seconds the prelude's imports took, once a genome ran in it (run())
        self._thread = threading.Thread(target=self._run, name=f"warm start {log_path.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        modules = MODULES + (GPU_MODULES if self.setup.gpu else ())
        command = [self.setup.python, "-c", PRELUDE.format(modules=modules, marker=STARTED_WARM)]
        try:
            spec, env = self._prepare()
            if self.gate.cancelled:
                return
            self._result = self.setup.sandbox.run(command, spec, self.setup.limits, self.setup.python,
                                                  self.placement.cpus, self.log_path, RELEASED_LIMIT_S, self._tick,
                                                  gate=self.gate)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the evaluation's thread by run())
            self._error = exc

    def _tick(self, tick: Tick) -> None:
        if self._on_tick is not None:
            self._on_tick(tick)

    def ready(self) -> bool:
        """Whether it can still be released: held, and its process not gone."""
        return self._thread.is_alive() and not self.gate.released and not self.gate.cancelled

    def wait_held(self) -> bool:
        """Wait until its workspace is made and its process started (a fraction of a second,
        or a compile cache's copy); whether it is then held and ready for a genome."""
        while not self.gate.holding.wait(0.1) and self._thread.is_alive():
            pass
        return self.gate.holding.is_set() and self.ready()

    def run(self, env: Mapping[str, str], log_path: Path, wall_limit_s: float,
            on_tick: Callable[[Tick], None] | None) -> ProcessResult:
        """Release it into the genome whose ``train.py`` is in :attr:`workspace` and wait
        for the genome's end.

        Args:
            env: the genome's whole environment (it replaces the prelude's).
            log_path: the evaluation's log.
            wall_limit_s: the genome's wall-clock limit, seconds from the release.
            on_tick: the genome's progress, as :func:`evo.runner.run_process` gives it.

        Returns:
            How the genome ended (``wall_s`` from the release).
        Raises:
            WarmStartLost: the prelude was gone (or never started, or the log could not be
                moved) before the release: nothing of the genome ran.
            Whatever ``on_tick`` raised (the genome was killed) or starting it raised.
        """
        if not self.wait_held():
            raise WarmStartLost("the warm interpreter ended before its release")
        try:
            os.replace(self.log_path, log_path)
        except OSError as exc:
            raise WarmStartLost(f"its log could not be moved: {exc}") from exc
        self.log_path = log_path
        self._on_tick = on_tick
        self.gate.release((json.dumps(dict(env)) + "\n").encode(), wall_limit_s)
        self._thread.join()
        if self._error is not None:
            raise self._error
        result = self._result
        assert result is not None
        # the prelude prints STARTED_WARM when it took the release: a process that ended without
        # it (and printed too little for the line to have left the tail) never ran the genome
        took = STARTED_WARM in result.tail or result.output_bytes > TAIL_BYTES
        if not (self.gate.delivered and took):
            raise WarmStartLost("the warm interpreter ended before it took its release")
        self.imports_s = _imports_s(log_path)
        return result

    def close(self, remove_workspace: bool = True) -> None:
        """Kill the process if it is still there (held or not), wait for it, and remove its
        log if it was never released, and its workspace unless told not to (a genome about
        to run cold in it)."""
        self.gate.cancel()
        self._thread.join()
        if not self.gate.released:
            self.log_path.unlink(missing_ok=True)
        if remove_workspace:
            remove_tree(self.workspace)


def _imports_s(log_path: Path) -> float:
    """The prelude's import seconds, from its line (:data:`STARTED_WARM`), the first of the
    genome's log it can be (the genome runs after it); 0 when it cannot be read."""
    try:
        with open(log_path, "rb") as handle:
            head = handle.read(HEAD_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return 0.0
    found = IMPORTS_LINE.search(head)
    return min(float(found.group(1)), MAX_IMPORTS_S) if found else 0.0
