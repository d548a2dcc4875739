"""What trusted evaluation costs per evaluation: sandbox start, model export, trusted scoring.

Usage (from the project folder, after `python prepare.py --profile cpu`):

    python benchmarks/trust_overhead.py [--profile cpu] [--repeats 5]

Prints seconds per evaluation for each part and as a fraction of the profile's time budget:
1. sandbox: `python -c "import torch"` through the launcher and bubblewrap, minus the same
   run bare (the cost of the limits and the sandbox, not of Python);
2. export: ``prepare.export_model`` of the seed genome's model at the profile's sizes;
3. trusted evaluation: ``python -m evo.evaluator`` on that export (a process: interpreter,
   torch import, load, probes, scoring), wall time;
4. the same, warm, as the engine runs it (:mod:`evo.warm_evaluator`): ``--wait`` started
   when the export starts, released when the export's process ends; wall time from the
   release to its exit (what a slot waits for it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

EXPORT = """
import importlib.util, sys, time, torch
import prepare
from evo.config import SEED_OVERRIDES
from evo.operators.cst_tools import set_constants
code = set_constants(open(sys.argv[1]).read(), SEED_OVERRIDES[prepare.PROFILE])
path = sys.argv[2] + "/seed_variant.py"
open(path, "w").write(code)
spec = importlib.util.spec_from_file_location("seed", path)
seed = importlib.util.module_from_spec(spec); sys.modules["seed"] = seed; spec.loader.exec_module(seed)
tok = prepare.Tokenizer.from_directory()
d = max(1, round(seed.DEPTH)); hd = seed.HEAD_DIM; dim = -(-d * seed.ASPECT_RATIO // hd) * hd
cfg = seed.GPTConfig(sequence_len=prepare.MAX_SEQ_LEN, vocab_size=tok.get_vocab_size(), n_layer=d,
                     n_head=dim // hd, n_embd=dim, window_pattern=seed.WINDOW_PATTERN)
model = seed.GPT(cfg); model.init_weights()
t0 = time.perf_counter()
prepare.export_model(model, seed.FINAL_EVAL_BATCH_SIZE, sys.argv[2] + "/model")
print("EXPORT_S", time.perf_counter() - t0)
"""


def _timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - t0


def _warm(env: dict[str, str], tmp: str) -> float:
    """Seconds from the release of a warm evaluator (started beside a new export) to its exit."""
    evaluator = subprocess.Popen([sys.executable, "-m", "evo.evaluator", "--wait", f"{tmp}/model"], env=env,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO)
    subprocess.run([sys.executable, "-c", EXPORT, str(REPO / "seed_train.py"), tmp], env=env, check=True,
                   capture_output=True, cwd=REPO)
    t0 = time.perf_counter()
    out, _ = evaluator.communicate(b"go\n")
    seconds = time.perf_counter() - t0
    if b'"ok": true' not in out:
        raise RuntimeError(f"the warm evaluator failed: {out[-500:]!r}")
    return seconds


def main() -> int:
    from evo.limits import Confinement, ProcessLimits
    from evo.sandbox import SandboxSpec, allowed_environment, detect

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "EVO_PROFILE": args.profile, "PYTHONPATH": str(REPO)}
    import importlib

    os.environ["EVO_PROFILE"] = args.profile
    prepare = importlib.import_module("prepare")
    budget = prepare.TIME_BUDGET
    sandbox = detect("auto")
    print(f"profile {args.profile}, budget {budget:g} s, sandbox {sandbox.name}, {args.repeats} repeats")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bare, boxed = [], []
        spec = SandboxSpec(workdir=work, env=allowed_environment({"HOME": tmp}))
        probe = [sys.executable, "-c", "import torch"]
        for _ in range(args.repeats):
            bare.append(_timed(probe, env))
            with Confinement(ProcessLimits()) as confinement:
                argv = confinement.command(sys.executable, sandbox.command(probe, spec))
                boxed.append(_timed(argv, env))
        sandbox_s = statistics.median(boxed) - statistics.median(bare)

        exports, trusted, warm = [], [], []
        for _ in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", EXPORT, str(REPO / "seed_train.py"), tmp], env=env,
                                 check=True, capture_output=True, text=True, cwd=REPO).stdout
            exports.append(float(out.split("EXPORT_S")[-1]))
            trusted.append(_timed([sys.executable, "-m", "evo.evaluator", f"{tmp}/model"], env))
            warm.append(_warm(env, tmp))

    for name, seconds in (("sandbox + limits (start)", sandbox_s), ("export (in the genome)", statistics.median(exports)),
                          ("trusted evaluation (process)", statistics.median(trusted)),
                          ("trusted evaluation, warm", statistics.median(warm))):
        print(f"{name:32s} {seconds:7.2f} s   {100 * seconds / budget:5.1f}% of the budget")
    return 0


if __name__ == "__main__":
    sys.exit(main())
