"""The trusted evaluator: it agrees with the harness's metric, and refuses what it cannot trust."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evo.evaluator import RESULT_PREFIX, UnverifiableError, check_program

REPO = Path(__file__).resolve().parent.parent

# Runs inside a harness process: a seed-genome GPT at the cpu profile's sizes, with perturbed
# (so not trivial) weights; exports it, and prints prepare.evaluate_bpb on the same weights.
EXPORT_AND_SCORE = """
import importlib.util, json, sys, torch
import prepare
spec = importlib.util.spec_from_file_location("seed", sys.argv[1])
seed = importlib.util.module_from_spec(spec); sys.modules["seed"] = seed; spec.loader.exec_module(seed)
torch.manual_seed(0)
tok = prepare.Tokenizer.from_directory()
cfg = seed.GPTConfig(sequence_len=prepare.MAX_SEQ_LEN, vocab_size=tok.get_vocab_size(), n_layer=2, n_head=2,
                     n_embd=64, window_pattern="SL")
model = seed.GPT(cfg); model.init_weights()
with torch.no_grad():
    for p in model.parameters():
        p.add_(0.05 * torch.randn_like(p))
prepare.export_model(model, 128, sys.argv[2])
print(json.dumps({"direct": prepare.evaluate_bpb(model.eval(), tok, 128)}))
"""


@pytest.fixture(scope="module")
def cpu_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("evo-cpu-cache")
    env = {**os.environ, "EVO_CACHE_DIR": str(cache)}
    proc = subprocess.run([sys.executable, "prepare.py", "--profile", "cpu"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return cache


def _harness_env(cache: Path, profile: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EVO_EXPORT_DIR"}
    return {**env, "EVO_CACHE_DIR": str(cache), "EVO_PROFILE": profile, "PYTHONPATH": str(REPO)}


def _trusted(model_dir: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "evo.evaluator", str(model_dir)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX))
    return json.loads(line[len(RESULT_PREFIX):])


def test_trusted_val_bpb_agrees_with_evaluate_bpb_on_the_cpu_profile(cpu_cache, tmp_path):
    env = _harness_env(cpu_cache, "cpu")
    model_dir = tmp_path / "model"
    proc = subprocess.run([sys.executable, "-c", EXPORT_AND_SCORE, str(REPO / "seed_train.py"), str(model_dir)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    direct = json.loads(proc.stdout.strip().splitlines()[-1])["direct"]
    result = _trusted(model_dir, env)
    assert result["ok"], result
    assert abs(result["val_bpb"] - direct) < 1e-4, (result["val_bpb"], direct)
    assert result["rows"] == 128 * 6  # EVAL_TOKENS // MAX_SEQ_LEN of the cpu profile
    assert result["causality_max_diff"] == 0.0


def test_a_tampered_program_is_refused_before_it_is_loaded(cpu_cache, tmp_path):
    env = _harness_env(cpu_cache, "cpu")
    model_dir = tmp_path / "model"
    subprocess.run([sys.executable, "-c", EXPORT_AND_SCORE, str(REPO / "seed_train.py"), str(model_dir)],
                   cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=True)
    program = json.loads((model_dir / "program.json").read_text())
    node = program["graph_module"]["graph"]["nodes"][0]
    node["target"] = "torch.os.system"
    (model_dir / "program.json").write_text(json.dumps(program))
    result = _trusted(model_dir, env)
    assert not result["ok"] and "operators evo does not run" in result["reason"]


@pytest.mark.parametrize(
    "program, message",
    [
        ({"guards_code": ["import os"], "range_constraints": {}}, "guard code"),
        ({"guards_code": [], "range_constraints": {"s0": {}}}, "dynamic shapes"),
        ({"graph_module": {"x": {"expr_str": "__import__('os')"}}}, "symbolic expression"),
        ({"graph_module": {"nodes": [{"target": "_operator.call", "inputs": []}]}}, "_operator.call"),
        ({"graph_module": {"nodes": [{"target": "torch.ops.aten.from_file.default", "inputs": []}]}}, "from_file"),
    ],
)
def test_check_program_refuses_what_could_run_python_or_read_files(program, message):
    with pytest.raises(UnverifiableError, match=message.replace("(", r"\(")):
        check_program(program)


def test_check_program_accepts_aten_and_autocast_nodes():
    check_program({"guards_code": [], "range_constraints": {}, "graph_module": {"nodes": [
        {"target": "torch.ops.aten.linear.default", "inputs": []},
        {"target": "torch.ops.higher_order.wrap_with_autocast", "inputs": []},
        {"target": "_operator.getitem", "inputs": []},
    ]}})


def test_a_pickle_in_the_weights_is_refused(tmp_path):
    import pickle

    import torch

    from evo.evaluator import load_program

    class Boom:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (tmp_path / "program.json").write_text(json.dumps({"guards_code": [], "range_constraints": {}}))
    (tmp_path / "state_dict.pt").write_bytes(pickle.dumps({"w": Boom()}))
    (tmp_path / "constants.pt").write_bytes(b"")
    with pytest.raises(UnverifiableError, match="not a plain tensor file"):
        load_program(tmp_path, torch.device("cpu"))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_logits_are_refused_wherever_they_are(bad):
    import torch

    from evo.evaluator import _logits

    def module(idx):
        out = torch.zeros(*idx.shape, 8, dtype=torch.bfloat16)
        out[1, 3, 5] = bad
        return out

    with pytest.raises(UnverifiableError, match="non-finite"):
        _logits(module, torch.zeros(2, 4, dtype=torch.long), 8)
    assert _logits(lambda idx: torch.zeros(*idx.shape, 8), torch.zeros(2, 4, dtype=torch.long), 8).shape == (2, 4, 8)


def test_a_program_edited_to_write_in_place_is_refused(tmp_path):
    """An in-place operator (here add_ on a weight) passes the operator allowlist and is not a
    declared buffer mutation, but could keep state between calls: it is refused on load."""
    import torch
    from torch._export.serde.serialize import serialize

    from evo.evaluator import load_program

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(8))

        def forward(self, idx):
            return (idx.float().unsqueeze(-1) + self.w)

    artifact = serialize(torch.export.export(Tiny(), (torch.zeros(2, 4, dtype=torch.long),)))
    for name, data in zip(("program.json", "state_dict.pt", "constants.pt"),
                          (artifact.exported_program, artifact.state_dict, artifact.constants), strict=True):
        (tmp_path / name).write_bytes(data)
    module, shape = load_program(tmp_path, torch.device("cpu"))  # the honest program loads
    assert shape == (2, 4) and module(torch.ones(2, 4, dtype=torch.long)).shape == (2, 4, 8)
    program = (tmp_path / "program.json").read_text()
    assert "torch.ops.aten.add.Tensor" in program
    (tmp_path / "program.json").write_text(program.replace("torch.ops.aten.add.Tensor", "torch.ops.aten.add_.Tensor"))
    with pytest.raises(UnverifiableError, match="in place"):
        load_program(tmp_path, torch.device("cpu"))
