"""evo's seed genome and karpathy/autoresearch's ``train.py``, one after the other on the same
machine, harness (evo's ``prepare.py``), data and time budget: val_bpb, tokens per second,
MFU, peak VRAM and steps side by side (issue: the gpu profile for real).

    python benchmarks/gpu_side_by_side.py --autoresearch /path/to/autoresearch/train.py
    python benchmarks/gpu_side_by_side.py --autoresearch ... --dataset climbmix --budget 300

autoresearch's file is not part of evo: keep it outside the repository (or in an ignored
folder) and name it with ``--autoresearch``. It imports FlashAttention-3 from Hugging
Face's kernel hub; ``benchmarks/fa3_shim/kernels.py`` stands in for the hub (PyTorch's SDPA
and FlexAttention, so autoresearch's speed here is a lower bound on a Hopper GPU).

Each script runs in a folder of its own with a copy of ``prepare.py`` and its ``train.py``
(evo's seed with the profile's overrides written in), with ``EVO_PROFILE``,
``EVO_DATASET``, ``EVO_SEED`` and, with ``--budget``, ``EVO_TIME_BUDGET`` set; the data and
tokenizer are prepared first (``python prepare.py``, once, in the shared cache). Genomes run
unsandboxed here: both scripts are trusted, and the numbers are the scripts' own summaries.
Tokens per second = ``total_tokens_M`` / ``training_seconds``.

Writes ``<out>/<name>.log`` and ``<out>/side_by_side.json``, and prints a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIM = Path(__file__).resolve().parent / "fa3_shim" / "kernels.py"
SHOWN = ("val_bpb", "tokens_per_s", "mfu_percent", "peak_vram_mb", "num_steps", "num_params_M",
         "training_seconds", "total_seconds")


def _folder(out: Path, name: str, train_py: str) -> Path:
    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "train.py").write_text(train_py, encoding="utf-8")
    shutil.copy(ROOT / "prepare.py", folder / "prepare.py")
    return folder


def _run(folder: Path, argv: list[str], env: dict[str, str], log: Path, limit_s: float) -> tuple[int, float]:
    """Run ``argv`` in ``folder``, its output teed to ``log`` and the terminal; (status, wall s)."""
    start = time.monotonic()
    with open(log, "w", encoding="utf-8") as handle:
        proc = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            handle.write(line)
            print(f"  {folder.name} | {line}", end="", flush=True)
            if time.monotonic() - start > limit_s:
                proc.kill()
                handle.write(f"\n[side_by_side: killed past {limit_s:.0f} s]\n")
                break
        status = proc.wait()
    return status, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--autoresearch", type=Path, help="autoresearch's train.py (omit: evo's seed alone)")
    parser.add_argument("--profile", default="gpu", choices=("gpu", "cpu", "smoke"))
    parser.add_argument("--dataset", default=None, help="sotu | climbmix | tinystories (default: the profile's)")
    parser.add_argument("--budget", type=float, help="training seconds (default: the profile's)")
    parser.add_argument("--seed", type=int, default=1, help="EVO_SEED for both (default 1)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "side_by_side")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from evo.config import SEED_OVERRIDES, default_dataset
    from evo.metrics import parse_summary
    from evo.operators.cst_tools import set_constants

    if args.autoresearch is not None and not args.autoresearch.is_file():
        parser.error(f"--autoresearch: no file {args.autoresearch}")
    dataset = args.dataset or default_dataset(args.profile)
    env = {**os.environ, "EVO_PROFILE": args.profile, "EVO_DATASET": dataset, "EVO_SEED": str(args.seed),
           "PYTHONUNBUFFERED": "1"}
    env.pop("EVO_EXPORT_DIR", None)  # evaluate_bpb scores the validation split itself
    if args.budget is not None:
        env["EVO_TIME_BUDGET"] = str(args.budget)
    args.out.mkdir(parents=True, exist_ok=True)

    seed = set_constants((ROOT / "seed_train.py").read_text(encoding="utf-8"), SEED_OVERRIDES[args.profile])
    scripts = {"evo_seed": _folder(args.out, "evo_seed", seed)}
    if args.autoresearch is not None:
        folder = _folder(args.out, "autoresearch", args.autoresearch.read_text(encoding="utf-8"))
        shutil.copy(SHIM, folder / "kernels.py")  # found before any installed `kernels`: the script's folder
        scripts["autoresearch"] = folder

    print(f"preparing {dataset} for the {args.profile} profile (once; cached)", flush=True)
    status, _ = _run(scripts["evo_seed"], [sys.executable, "prepare.py"], env, args.out / "prepare.log", 7200)
    if status != 0:
        print(f"error: prepare.py failed (exit {status}); see {args.out / 'prepare.log'}", file=sys.stderr)
        return 2
    budget = args.budget or {"gpu": 300.0, "cpu": 30.0, "smoke": 3.0}[args.profile]
    results: dict[str, dict] = {}
    for name, folder in scripts.items():
        print(f"\n== {name}: {budget:.0f} s of training", flush=True)
        log = args.out / f"{name}.log"
        status, wall_s = _run(folder, [sys.executable, "train.py"], env, log, 3 * budget + 900)
        summary = parse_summary(log.read_text(encoding="utf-8", errors="replace"))
        if status != 0 or "val_bpb" not in summary:
            print(f"error: {name} exited {status} without a summary; see {log}", file=sys.stderr)
        training_s = summary.get("training_seconds") or 0.0
        tokens_m = summary.get("total_tokens_M")
        summary["tokens_per_s"] = tokens_m * 1e6 / training_s if tokens_m and training_s > 0 else None
        code = (folder / "train.py").read_bytes()
        results[name] = {"exit_status": status, "wall_s": round(wall_s, 1), "train_py_sha256": hashlib.sha256(code).hexdigest(),
                         **summary}

    report = {"profile": args.profile, "dataset": dataset, "budget_s": budget, "seed": args.seed, "results": results}
    (args.out / "side_by_side.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    names = list(results)
    print(f"\n{args.profile} profile, {dataset}, {budget:.0f} s budget, EVO_SEED {args.seed}")
    print(f"{'':18}" + "".join(f"{n:>16}" for n in names))
    for key in SHOWN:
        cells = []
        for n in names:
            value = results[n].get(key)
            cells.append(f"{value:>16,.6g}" if isinstance(value, float | int) else f"{'-':>16}")
        print(f"{key:18}" + "".join(cells))
    for n in names:  # which version of each script ran (autoresearch's copies differ: forks, ports)
        print(f"{n} train.py sha256 {results[n]['train_py_sha256']}")
    print(f"wrote {args.out / 'side_by_side.json'}")
    return 0 if all(r["exit_status"] == 0 and "val_bpb" in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
