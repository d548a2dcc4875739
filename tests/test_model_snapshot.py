"""The engine's copy of a genome's first complete export (evo.model_snapshot)."""

from __future__ import annotations

import os
import threading

import pytest

from evo import model_snapshot
from evo.evaluator import PROGRAM_FILES
from evo.model_snapshot import ModelSnapshot, ready_limit_s


def _export(folder, tag: bytes = b"first") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in PROGRAM_FILES:
        (folder / name).write_bytes(tag + b" " + name.encode())


def test_the_first_complete_export_is_copied_and_later_changes_are_not_seen(tmp_path):
    export, into = tmp_path / "ws" / "evo_model", tmp_path / ".ws.model"
    snap = ModelSnapshot(export, into)
    assert not snap.poll(1.0) and not into.exists()  # no folder yet
    export.mkdir(parents=True)
    (export / PROGRAM_FILES[0]).write_bytes(b"{}")
    assert not snap.poll(2.0)  # incomplete: not taken
    _export(export)
    kept = open(export / PROGRAM_FILES[1], "r+b")  # a descriptor the genome keeps
    assert snap.poll(3.25, wait=True) and 3.25 <= snap.ready_s < 3.5  # when the copy was complete
    ready = snap.ready_s
    kept.write(b"rewritten later")
    kept.close()
    _export(export, b"second")  # a second export
    assert snap.poll(9.0, wait=True) and snap.ready_s == ready
    snap.at_exit(12.0)
    assert snap.ready_s == ready
    assert {p.name: p.read_bytes() for p in into.iterdir()} == {n: b"first " + n.encode() for n in PROGRAM_FILES}
    snap.discard()
    assert not into.exists()


def test_links_and_fifos_are_never_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("validation text")
    export = tmp_path / "ws" / "evo_model"
    _export(export)
    (export / PROGRAM_FILES[0]).unlink()
    (export / PROGRAM_FILES[0]).symlink_to(secret)
    snap = ModelSnapshot(export, tmp_path / "a")
    assert not snap.poll(1.0, wait=True) and not (tmp_path / "a").exists()

    (export / PROGRAM_FILES[0]).unlink()
    os.mkfifo(export / PROGRAM_FILES[0])  # opening it for reading would block without O_NONBLOCK
    done = []
    thread = threading.Thread(target=lambda: done.append(snap.poll(2.0, wait=True)), daemon=True)
    thread.start()
    thread.join(5)
    assert done == [False]

    linked = tmp_path / "ws2" / "evo_model"
    _export(tmp_path / "real")
    linked.parent.mkdir()
    linked.symlink_to(tmp_path / "real")  # the folder itself a link
    snap = ModelSnapshot(linked, tmp_path / "b")
    assert not snap.poll(1.0)
    snap.at_exit(4.0)
    assert not snap.taken and not (tmp_path / "b").exists()


def test_an_oversized_file_is_refused_not_copied(tmp_path, monkeypatch):
    monkeypatch.setattr(model_snapshot, "MAX_TENSOR_FILE_BYTES", 8)
    export = tmp_path / "evo_model"
    _export(export)
    snap = ModelSnapshot(export, tmp_path / "into")
    assert snap.poll(1.0, wait=True)
    assert snap.refused and "state_dict.pt" in snap.refused and "more than the 8 allowed" in snap.refused
    assert not (tmp_path / "into").exists()


def test_at_exit_takes_a_late_export_or_keeps_the_export_error(tmp_path):
    export = tmp_path / "evo_model"
    _export(export)
    snap = ModelSnapshot(export, tmp_path / "into")
    snap.at_exit(7.5)  # exported between the last poll and the exit
    assert snap.ready_s == 7.5 and len(list((tmp_path / "into").iterdir())) == 3

    failed = tmp_path / "failed"
    failed.mkdir()
    (failed / model_snapshot.EXPORT_ERROR).write_text("Unsupported: data-dependent control flow")
    snap = ModelSnapshot(failed, tmp_path / "into2")
    snap.at_exit(5.0)
    assert not snap.taken
    assert (tmp_path / "into2" / model_snapshot.EXPORT_ERROR).read_text().startswith("Unsupported")

    snap = ModelSnapshot(tmp_path / "never", tmp_path / "into3")
    snap.at_exit(5.0)
    assert not snap.taken and not (tmp_path / "into3").exists()


def test_the_ready_limit_follows_the_seed():
    assert ready_limit_s(300.0, []) is None
    # seed ready 40 s past a 300 s budget: 40 more, half of it slack (20 > 15 > 5)
    assert ready_limit_s(300.0, [330.0, 340.0]) == pytest.approx(300 + 40 + 20)
    # a seed ready 2 s past a 30 s budget: the 3 s floor
    assert ready_limit_s(30.0, [32.0]) == pytest.approx(30 + 2 + 3)
    # a screen of 0.2 of the budget keeps the seed's seconds past it
    assert ready_limit_s(60.0, [60.0 + 40.0]) == pytest.approx(60 + 40 + 20)
    assert ready_limit_s(30.0, [29.0]) == pytest.approx(30 + 0 + 3)  # ready before its budget: no negative start-up



def test_a_full_disk_refuses_the_model_once_instead_of_copying_at_every_tick(tmp_path, monkeypatch):
    import errno

    calls = []

    def full(folder, name, into, limit, cancel=None):
        calls.append(name)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(model_snapshot, "_copy_file", full)
    export = tmp_path / "evo_model"
    _export(export)
    snap = ModelSnapshot(export, tmp_path / "into")
    assert snap.poll(1.0, wait=True) and snap.poll(2.0, wait=True)
    assert calls == [PROGRAM_FILES[0]] and 1.0 <= snap.ready_s < 1.5
    assert snap.refused == "the engine could not copy it: No space left on device"
    assert not (tmp_path / "into").exists()
