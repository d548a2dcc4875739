"""Outcomes not yet in the archive: kept in a small file until the archive has them.

A finished evaluation's outcome is written here (atomically) before the engine commits it
to the archive, and removed once the commit succeeded. If the commit fails (a full disk,
an unwritable archive) or the engine dies between the two, the file survives and
``evo resume`` records the outcome instead of training the genome again.

The folder sits beside the archive (``<archive>.pending/``), which no sandboxed genome can
see; a file is only used for an evaluation that the archive still shows RUNNING for the
same run and genome, so a stale or foreign file can never overwrite a finished record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from evo.archive import Archive, ArchiveError
from evo.records import EvalState, EvaluationRecord, FailureKind, Outcome


@dataclass(frozen=True)
class PendingOutcomes:
    """The pending outcomes of one archive.

    Args:
        archive_path: the archive file; the folder is ``<archive_path>.pending``.
    """

    archive_path: Path

    @property
    def folder(self) -> Path:
        return self.archive_path.with_name(self.archive_path.name + ".pending")

    def path(self, eval_id: int) -> Path:
        return self.folder / f"{eval_id}.json"

    def save(self, run: str, genome_id: str, eval_id: int, outcome: Outcome, device: str | None) -> Path:
        """Write one outcome (atomically: a temporary file renamed into place).

        Raises:
            OSError: the file could not be written (the disk is full too).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        data = {
            "run": run, "genome_id": genome_id, "eval_id": eval_id, "device": device,
            "state": outcome.state.value, "wall_s": outcome.wall_s, "returncode": outcome.returncode,
            "metrics": outcome.metrics, "failure_kind": outcome.failure_kind.value if outcome.failure_kind else None,
            "error": outcome.error, "log_tail": outcome.log_tail,
        }
        path = self.path(eval_id)
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(data, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def kept(self) -> set[int]:
        """The eval ids whose outcome is kept here (any run)."""
        if not self.folder.is_dir():
            return set()
        return {int(p.stem) for p in self.folder.glob("*.json") if p.stem.isdigit()}

    def remove(self, eval_id: int) -> None:
        self.path(eval_id).unlink(missing_ok=True)

    def recover(self, archive: Archive, run: str) -> list[EvaluationRecord]:
        """Record in the archive every kept outcome of ``run`` whose evaluation is still
        RUNNING there, then delete the files of ``run`` (recorded, or stale).

        Returns:
            The evaluations finished from kept outcomes.

        Raises:
            ArchiveError: the archive refused a write (the file is kept for the next try).
        """
        recovered: list[EvaluationRecord] = []
        if not self.folder.is_dir():
            return recovered
        for path in sorted(self.folder.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                outcome = Outcome(
                    EvalState(data["state"]), float(data["wall_s"]), data["returncode"],
                    {str(k): float(v) for k, v in data["metrics"].items()},
                    FailureKind(data["failure_kind"]) if data["failure_kind"] else None, data["error"],
                    str(data["log_tail"]),
                )
                eval_id, genome_id = int(data["eval_id"]), str(data["genome_id"])
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                path.unlink(missing_ok=True)  # unreadable: the evaluation is re-run, as after a crash
                continue
            if data["run"] != run:
                continue
            try:
                current = archive.evaluation(eval_id)
            except ArchiveError:
                path.unlink(missing_ok=True)
                continue
            if current.run == run and current.genome_id == genome_id and current.state is EvalState.RUNNING:
                recovered.append(archive.finish_evaluation(eval_id, outcome, data["device"]))
            path.unlink(missing_ok=True)
        return recovered
