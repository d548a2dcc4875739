"""What a lent GPU machine lacks for evo's GPU measurements, gathered into one ignored folder.

The device tool's machine (``/work/.library/device``; KINDS.md lists its image) has no
network and runs its image's ``python3`` (3.12, with torch, numpy, scipy, pyarrow, tiktoken,
rich, httpx, networkx, matplotlib and pytest). evo's other dependencies travel with the
call, as wheels for that interpreter:

    .device/wheels/    cp312 manylinux x86_64 wheels: every package evo needs (its installed metadata,
                       torch aside) that pip resolves for that target and the image lacks
                       (:data:`IMAGE_HAS`), each downloaded with --no-deps
    .device/autoresearch/train.py
                       optional, for the side-by-side: karpathy/autoresearch's train.py, put
                       there by hand (it is not evo's, and never committed)

Usage (here, with network to the package registries), then the lease script on the device::

    python benchmarks/device_kit.py [--out .device] [--python-version 3.12]
    # device tool: run(command="bash benchmarks/gpu_lease.sh", carry=[".device"], timeout_s=590)

Prints what it gathered and its size (a call carries at most 64 MiB with the working tree).

Raises ``SystemExit`` when pip cannot resolve or download a package for the target.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from importlib.metadata import requires
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")
# What the device image holds (KINDS.md, read 2026-11-17) among evo's dependencies and theirs:
# not carried. A name here that the image lost shows up as an import error in the lease's
# first stage, which prints the image's versions.
IMAGE_HAS = frozenset("""
    anyio certifi charset-normalizer contourpy cycler filelock fonttools fsspec h11 httpcore httpx idna
    jinja2 kiwisolver markdown-it-py markupsafe matplotlib mdurl mpmath networkx numpy packaging pillow
    pygments pyparsing python-dateutil pyyaml regex requests rich scipy setuptools six sympy tiktoken
    torch tqdm triton typing-extensions urllib3 pyarrow pytest pluggy iniconfig execnet pytest-xdist pandas
""".split())


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The normalized package name of a requirement string (``"duckdb>=1.1"`` -> ``duckdb``)."""
    return normalize(re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0])


def requirements() -> list[str]:
    """evo's dependencies as installed here (pyproject.toml's, extras aside), torch left out
    (the image's own is used)."""
    return [r for r in requires("evo") or () if "extra ==" not in r and requirement_name(r) != "torch"]


def _target_args(python_version: str) -> list[str]:
    args = ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def resolve(python_version: str) -> dict[str, str]:
    """Package -> version that pip installs for :func:`requirements` on the target, everything included."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                   "--target", str(Path(tmp) / "t"), "--report", str(report), *_target_args(python_version),
                   *requirements()]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"pip could not resolve evo's dependencies for Python {python_version}:\n{done.stderr[-2000:]}")
        installs = json.loads(report.read_text())["install"]
    return {normalize(i["metadata"]["name"]): i["metadata"]["version"] for i in installs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / ".device", help="the folder to fill (default .device)")
    parser.add_argument("--python-version", default="3.12", help="the device's python3 (default 3.12)")
    args = parser.parse_args(argv)
    wheels = args.out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    resolved = resolve(args.python_version)
    carried = {n: v for n, v in sorted(resolved.items()) if n not in IMAGE_HAS and not n.startswith("nvidia-")}
    print(f"{len(resolved)} packages resolved for Python {args.python_version}; {len(carried)} not in the image")
    pins = [f"{n}=={v}" for n, v in carried.items()]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", str(wheels),
               *_target_args(args.python_version), *pins]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"pip could not download the wheels:\n{done.stderr[-2000:]}")
    (wheels / "requirements.txt").write_text("\n".join(pins) + "\n")
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    for pin in pins:
        print(f"  {pin}")
    print(f"{args.out}: {size / 2**20:.1f} MiB ({wheels / 'requirements.txt'} lists the pins)")
    autoresearch = args.out / "autoresearch" / "train.py"
    print(f"autoresearch's train.py: {'present' if autoresearch.is_file() else f'absent (put it at {autoresearch})'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
