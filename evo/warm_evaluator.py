"""The trusted evaluator of one evaluation, started before it is needed.

Most of the trusted evaluator's (:mod:`evo.evaluator`) wall time on a small model is its
start-up: Python, torch, and torch.export's loader (5 of its 7.5 s on the smoke profile).
So it is started *warm*, as soon as the genome's harness prints :data:`EXPORT_STARTED`
(``prepare.export_model`` does, when training is over and the export begins), or when the
genome exits, whichever comes first; it imports what it needs in its own sandbox while
the genome exports its model, then waits (:class:`evo.runner.Gate`). A genome that prints
the line early only makes its own evaluator start early, on its own slot's cores.

It reads nothing of the genome's until the genome's processes are gone. Then
:meth:`WarmEvaluator.score` moves the model folder it is given (the engine's copy of the
genome's first export, :mod:`evo.model_snapshot`), if it is a real folder (not a link),
into the evaluator's own read-only working folder (a rename), releases the evaluator, and
waits for its one result line. An evaluation that needs no trusted score cancels it (:meth:`close`).
"""

from __future__ import annotations

import json
import os
import stat
import threading
from dataclasses import replace
from pathlib import Path

import evo
from evo.evaluator import RESULT_PREFIX
from evo.genome import unlock
from evo.metrics import last_error_line
from evo.runner import Gate, ProcessResult
from evo.sandbox import SandboxSpec, allowed_environment

EVALUATOR_MIN_LIMIT_S = 300.0  # the evaluator's wall-clock limit, from its release
EXPORT_STARTED = "evo: exporting the model for trusted evaluation"  # printed by prepare.export_model
INBOX = "model.d"  # in the evaluator's working folder: where the exported model is moved (no importable name)


class WarmEvaluator:
    """The trusted evaluator's process for one evaluation (module docstring).

    Args:
        setup: the run's :class:`evo.evaluation.EvaluationSetup`.
        harness_dir: the evaluator's own folder, holding the pinned ``prepare.py`` (its
            working folder, read-only to it; never the genome's workspace).
        genome_log: the genome's log; the evaluator's is beside it (``*.trusted.log``,
            removed when it gives a result).
        placement: the slot's :class:`evo.evaluation.Placement`.
    """

    def __init__(self, setup, harness_dir: Path, genome_log: Path, placement) -> None:
        self.setup = setup
        self.harness_dir = harness_dir
        self.log = genome_log.with_name(genome_log.name.replace(".log", ".trusted.log"))
        self.placement = placement
        self.gate = Gate()
        self._thread: threading.Thread | None = None
        self._result: ProcessResult | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        """Start the process (once; later calls do nothing)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"evaluator {self.log.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        setup, placement = self.setup, self.placement
        package_parent = Path(evo.__file__).resolve().parent.parent
        env = allowed_environment({
            "EVO_PROFILE": setup.profile, "EVO_DATASET": setup.dataset, "EVO_CACHE_DIR": str(setup.cache_dir),
            "PYTHONPATH": os.pathsep.join((str(self.harness_dir), str(package_parent))),
            "HOME": str(self.harness_dir), "PYTHONDONTWRITEBYTECODE": "1", **placement.env,
        })
        spec = SandboxSpec(
            workdir=self.harness_dir, env=env, writable=False, gpu=setup.gpu, gpu_index=placement.gpu_index,
            read_only=(setup.cache_dir, Path(evo.__file__).resolve().parent),
        )
        try:
            command = [setup.python, "-m", "evo.evaluator", "--wait", str(self.harness_dir / INBOX)]
            self._result = setup.sandbox.run(command, spec, replace(setup.limits, max_file_size_mb=64), setup.python,
                                             placement.cpus, self.log, EVALUATOR_MIN_LIMIT_S, gate=self.gate)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the engine's thread by score())
            self._error = exc

    def score(self, model_dir: Path) -> dict:
        """The trusted score of the model the genome exported into ``model_dir``; call once
        the genome's processes are gone.

        Returns:
            The evaluator's JSON result (``val_bpb``, ``seconds``, ``tokens``,
            ``causality_max_diff``, ``waited_s``) with ``wall_s`` (seconds from its
            release to its exit), or ``{"reason": ...}`` when the model cannot be scored.
        Raises:
            Whatever starting the evaluator raised (a cgroup that cannot be made, say).
        """
        inbox = self.harness_dir / INBOX
        try:
            unlock(model_dir.parent)
            unlock(model_dir)
            os.rename(model_dir, inbox)  # then checked where only the engine writes: nothing can swap it after
            mode = os.lstat(inbox).st_mode
        except OSError:
            mode = 0
        if not stat.S_ISDIR(mode):
            self.close()
            return {"reason": "the genome exported no model (prepare.evaluate_bpb was never called, or was replaced)"}
        self.start()
        self.gate.release()
        self._join()
        result = self._result
        assert result is not None
        for line in reversed(result.tail.splitlines()):
            if line.startswith(RESULT_PREFIX):
                try:
                    payload = json.loads(line[len(RESULT_PREFIX):])
                except json.JSONDecodeError:
                    break
                self.log.unlink(missing_ok=True)
                if not payload.get("ok"):
                    return {"reason": str(payload.get("reason"))}
                return {**payload, "wall_s": result.wall_s}
        why = "timed out" if result.timed_out else (last_error_line(result.tail) or f"exit status {result.returncode}")
        return {"reason": f"the trusted evaluator failed on this model: {why} (log: {self.log})"}

    def close(self) -> None:
        """Kill the evaluator if it is still running (held or not), and wait for it to be gone."""
        self.gate.cancel()
        if self._thread is not None:
            self._thread.join()
            if not self.gate.released:
                self.log.unlink(missing_ok=True)

    def _join(self) -> None:
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise self._error
