"""The launcher of a genome (or evaluator) process: ``python -m evo.confine [limits] -- ARGV``.

A single-threaded process that, in this order, asks to die with the engine
(``PR_SET_PDEATHSIG``), joins the evaluation's cgroups, pins itself to its slot's
cores, sets the rlimits, and execs
``ARGV`` (the sandbox). Everything ``ARGV`` starts inherits the cgroup and the rlimits.
It imports nothing heavy, so it costs a bare interpreter start (see :mod:`evo.limits`).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import sys


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except OSError:
            pass


def _set_limit(kind: int, value: int) -> None:
    _soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, value))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evo.confine", description=__doc__)
    parser.add_argument("--cgroup", action="append", default=[], help="a cgroup folder to join (repeatable)")
    parser.add_argument("--fsize-mb", type=int, help="RLIMIT_FSIZE, MiB")
    parser.add_argument("--nproc", type=int, help="RLIMIT_NPROC")
    parser.add_argument("--as-mb", type=int, help="RLIMIT_AS, MiB")
    parser.add_argument("--cpus", help="pin to these CPU cores, comma-separated (a slot's share of the machine)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command to run")
    _die_with_parent()
    for group in args.cgroup:
        with open(os.path.join(group, "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid()))
    if args.cpus:
        os.sched_setaffinity(0, {int(c) for c in args.cpus.split(",")})
    _set_limit(resource.RLIMIT_CORE, 0)
    if args.fsize_mb:
        _set_limit(resource.RLIMIT_FSIZE, args.fsize_mb * 2**20)
    if args.nproc:
        _set_limit(resource.RLIMIT_NPROC, args.nproc)
    if args.as_mb:
        _set_limit(resource.RLIMIT_AS, args.as_mb * 2**20)
    # a genome that writes past RLIMIT_FSIZE must get an error (EFBIG), not die of SIGXFSZ
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main())
