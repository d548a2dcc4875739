"""What the run's compile cache (evo.compile_cache) saves: the seed's model compiled cold vs
from a copy of another process's TorchInductor cache, each in a fresh process.

    python benchmarks/compile_cache.py                 # cpu profile's seed shapes (Inductor's C++ backend)
    python benchmarks/compile_cache.py --profile gpu   # on a CUDA machine: the gpu profile's seed

Each trial compiles the seed genome's GPT (its constants with the profile's overrides, random
tokens at the profile's vocabulary and sequence length) and runs one forward/backward, the
work a genome does before its first timed step. "cold" uses an empty cache folder; "warm"
a copy, in another folder, of the folder a cold trial filled (what a child gets from the
seed). Prints seconds per trial and the FX-graph cache hits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TRIAL = textwrap.dedent("""\
    import contextlib, json, sys, time
    t0 = time.time()
    import torch
    sys.path.insert(0, sys.argv[1])
    import train as seed
    from torch._dynamo.utils import counters
    profile = json.loads(sys.argv[2])
    device = seed.pick_device()
    config = seed.model_config(profile["seq"], profile["vocab"])
    model = seed.GPT(config).to(device)
    model.init_weights()
    if device.type == "cuda":
        model.use_flex = any(w < config.sequence_len for w in model.windows)
        model.window_masks(config.sequence_len, device)
    batch = max(1, round(seed.DEVICE_BATCH_SIZE))
    idx = torch.randint(0, config.vocab_size, (batch, config.sequence_len), device=device)
    t1 = time.time()
    dtype, _ = seed.pick_compute_dtype(device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    compiled = torch.compile(model)
    with autocast:
        loss = compiled(idx, idx.roll(-1, 1))
    loss.backward()
    seed.sync(device)
    t2 = time.time()
    print(json.dumps({"setup_s": t1 - t0, "compile_s": t2 - t1, "hits": counters["inductor"]["fxgraph_cache_hit"],
                      "misses": counters["inductor"]["fxgraph_cache_miss"], "device": device.type}))
""")


def _trial(folder: Path, cache: Path) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    profile = json.dumps(PROFILE)
    out = subprocess.run([sys.executable, "-c", TRIAL, str(folder), profile], env=env, capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        raise SystemExit(f"trial failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    global PROFILE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=("gpu", "cpu", "smoke"))
    parser.add_argument("--repeats", type=int, default=3, help="trials of each kind (default 3)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from evo.config import SEED_OVERRIDES
    from evo.operators.cst_tools import set_constants

    sizes = {"gpu": (2048, 8192), "cpu": (128, 2048), "smoke": (64, 512)}[args.profile]
    PROFILE = {"seq": sizes[0], "vocab": sizes[1]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        code = set_constants((ROOT / "seed_train.py").read_text(), SEED_OVERRIDES[args.profile])
        (folder / "train.py").write_text(code)
        shutil.copy(ROOT / "prepare.py", folder / "prepare.py")
        rows = {"cold": [], "warm": []}
        for i in range(args.repeats):
            cold = folder / f"cold{i}"
            rows["cold"].append(_trial(folder, cold))
            warm = folder / f"warm{i}"
            shutil.copytree(cold, warm, symlinks=True)  # as evo.compile_cache.give copies it
            rows["warm"].append(_trial(folder, warm))
            print(f"trial {i + 1}: cold {rows['cold'][-1]['compile_s']:.1f} s, warm {rows['warm'][-1]['compile_s']:.1f} s",
                  flush=True)
        size_mb = sum(p.stat().st_size for p in (folder / "cold0").rglob("*") if p.is_file()) / 2**20
    device = rows["cold"][0]["device"]
    print(f"\nseed genome, {args.profile} profile shapes, device {device}, {args.repeats} trials each, "
          f"cache {size_mb:.1f} MiB")
    for kind, trials in rows.items():
        compile_s = [t["compile_s"] for t in trials]
        print(f"{kind}: compile + first step median {statistics.median(compile_s):.1f} s "
              f"(min {min(compile_s):.1f}, max {max(compile_s):.1f}); FX-graph hits {trials[0]['hits']}, "
              f"misses {trials[0]['misses']}; imports + model build {statistics.median(t['setup_s'] for t in trials):.1f} s")


PROFILE: dict = {}

if __name__ == "__main__":
    main()
