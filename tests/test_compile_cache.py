"""The run's compile cache (evo.compile_cache): the seed genome's TorchInductor cache is
given, as a copy, to every genome, and no genome can change what the next one gets."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from conftest import add_harness

from evo import compile_cache
from evo.evaluation import EvaluationSetup, evaluate_genome, sha256_file
from evo.limits import ProcessLimits
from evo.records import EvalState
from evo.sandbox import detect

SUMMARY = 'print("---"); print("val_bpb: 1.5"); print("training_seconds: 1.0")\n'


def test_give_copies_the_shared_cache_and_names_the_copy(tmp_path):
    shared = tmp_path / "shared"
    (shared / "fxgraph").mkdir(parents=True)
    (shared / "fxgraph" / "entry").write_text("compiled")
    workspace = tmp_path / "g0001.work"
    workspace.mkdir()
    env = compile_cache.give(shared, workspace)
    own = Path(env["TORCHINDUCTOR_CACHE_DIR"])
    assert own == workspace / ".compile-cache" and (own / "fxgraph" / "entry").read_text() == "compiled"
    (own / "fxgraph" / "entry").write_text("poison")  # a copy, not a link
    assert (shared / "fxgraph" / "entry").read_text() == "compiled"


def test_give_without_a_shared_cache_still_gives_an_own_empty_folder(tmp_path):
    for shared in (None, tmp_path / "missing"):
        workspace = tmp_path / f"w{shared is None}"
        workspace.mkdir()
        own = Path(compile_cache.give(shared, workspace)["TORCHINDUCTOR_CACHE_DIR"])
        assert own.is_dir() and not any(own.iterdir())


def test_keep_writes_the_shared_cache_once_and_never_replaces_it(tmp_path):
    shared = tmp_path / "genomes" / "run" / ".compile-cache"
    shared.parent.mkdir(parents=True)
    first, second = tmp_path / "a", tmp_path / "b"
    for workspace, text in ((first, "seed"), (second, "later")):
        (workspace / ".compile-cache").mkdir(parents=True)
        (workspace / ".compile-cache" / "entry").write_text(text)
    assert compile_cache.keep(first, shared) is True
    assert compile_cache.keep(second, shared) is False
    assert (shared / "entry").read_text() == "seed"
    assert [p.name for p in shared.parent.iterdir()] == [".compile-cache"]  # no partial copy left


def test_keep_refuses_an_empty_or_linked_cache(tmp_path):
    shared = tmp_path / "shared"
    empty = tmp_path / "empty"
    (empty / ".compile-cache").mkdir(parents=True)
    assert compile_cache.keep(empty, shared) is False
    linked = tmp_path / "linked"
    linked.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "entry").write_text("x")
    (linked / ".compile-cache").symlink_to(tmp_path / "elsewhere")
    assert compile_cache.keep(linked, shared) is False
    assert compile_cache.keep(empty, None) is False
    assert not shared.exists()


def _setup(project: Path) -> EvaluationSetup:
    add_harness(project)
    sandbox = detect("bwrap")
    return EvaluationSetup(
        project, sha256_file(project / "prepare.py"), "smoke", "sotu", project / "cache", "reported",
        sandbox, ProcessLimits(max_memory_mb=None), hidden=(project / "genomes",),
        compile_cache=compile_cache.shared_path(project / "genomes" / "run"),
    )


def _evaluate(setup: EvaluationSetup, code: str, genome_id: str, keep: bool):
    genome_dir = setup.project_dir / "genomes" / "run"
    genome_dir.mkdir(parents=True, exist_ok=True)
    env = {"EVO_PROFILE": "smoke", "EVO_DATASET": "sotu", "EVO_SEED": "1"}
    outcome = evaluate_genome(setup, code, genome_dir / f"{genome_id}.work", genome_dir / f"{genome_id}.log", env,
                              hard_limit_s=120.0, scoring_limit=None, keep_compile_cache=keep)
    return outcome, (genome_dir / f"{genome_id}.log").read_text()


def test_a_hostile_genome_cannot_change_the_cache_the_next_genome_gets(tmp_path):
    """The seed's cache becomes the run's; a child sees it, rewrites its copy and tries the
    shared folder itself (hidden by the sandbox); the next genome still gets the seed's."""
    setup = _setup(tmp_path)
    seed = textwrap.dedent("""\
        import os, pathlib
        pathlib.Path(os.environ["TORCHINDUCTOR_CACHE_DIR"], "entry.py").write_text("print('seed kernel')")
        """) + SUMMARY
    outcome, _ = _evaluate(setup, seed, "g0000", keep=True)
    assert outcome.state is EvalState.COMPLETE
    shared = setup.compile_cache
    assert (shared / "entry.py").read_text() == "print('seed kernel')"
    hostile = textwrap.dedent(f"""\
        import os, pathlib
        own = pathlib.Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
        print("saw:", (own / "entry.py").read_text())
        (own / "entry.py").write_text("import os; os.system('sabotage')")
        try:
            pathlib.Path({str(shared)!r}, "entry.py").write_text("poison")
            print("wrote the shared cache")
        except OSError as exc:
            print("shared cache:", type(exc).__name__)
        """) + SUMMARY
    outcome, log = _evaluate(setup, hostile, "g0001", keep=False)
    assert outcome.state is EvalState.COMPLETE
    assert "saw: print('seed kernel')" in log and "wrote the shared cache" not in log
    # even a genome evo took for the seed cannot replace a cache that exists
    outcome, _ = _evaluate(setup, hostile, "g0002", keep=True)
    assert (shared / "entry.py").read_text() == "print('seed kernel')"
    reader = 'import os, pathlib\nprint("saw:", pathlib.Path(os.environ["TORCHINDUCTOR_CACHE_DIR"], "entry.py").read_text())\n'
    _, log = _evaluate(setup, reader + SUMMARY, "g0003", keep=False)
    assert "saw: print('seed kernel')" in log
    assert not list((tmp_path / "genomes" / "run").glob("*.work"))  # every copy went with its workspace


def test_a_seed_that_failed_leaves_no_shared_cache(tmp_path):
    setup = _setup(tmp_path)
    failing = 'import os, pathlib\npathlib.Path(os.environ["TORCHINDUCTOR_CACHE_DIR"], "entry.py").write_text("x")\n'
    outcome, _ = _evaluate(setup, failing + 'print("FAIL"); raise SystemExit(1)\n', "g0000", keep=True)
    assert outcome.state is not EvalState.COMPLETE
    assert not setup.compile_cache.exists()


def test_a_child_compiles_from_the_seeds_inductor_cache_in_the_sandbox(tmp_path):
    """Real TorchInductor (CPU, C++ code generation): the child, in another workspace, hits
    the FX-graph cache the seed filled, where a cold compile misses."""
    pytest.importorskip("torch")
    setup = _setup(tmp_path)
    genome = textwrap.dedent("""\
        import torch
        import torch._inductor.config
        from torch._dynamo.utils import counters

        torch._inductor.config.compile_threads = 1  # no pool of compile workers to start: a shorter test

        def f(x):
            return torch.nn.functional.gelu(x @ x.T).sum(dim=-1)

        torch.compile(f)(torch.randn(8, 8))
        print("hits:", counters["inductor"]["fxgraph_cache_hit"], "misses:", counters["inductor"]["fxgraph_cache_miss"])
        """) + SUMMARY
    outcome, seed_log = _evaluate(setup, genome, "g0000", keep=True)
    assert outcome.state is EvalState.COMPLETE, seed_log
    assert "hits: 0 misses: 1" in seed_log
    assert any(setup.compile_cache.rglob("*")), "the seed's cache was not kept"
    outcome, child_log = _evaluate(setup, genome, "g0001", keep=False)
    assert outcome.state is EvalState.COMPLETE, child_log
    assert "hits: 1 misses: 0" in child_log


def test_the_engine_shares_the_seeds_cache_only_and_only_in_the_sandbox(tmp_path, fake_genome):
    """Through the engine: every genome writes an entry named after its own source into its
    cache; the run's shared cache holds the seed's entry alone, and children saw it."""
    from test_engine import Recorder, _engine

    writer = textwrap.dedent("""\
        import hashlib, pathlib
        _own = pathlib.Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
        print("cache saw:", sorted(p.name for p in _own.iterdir()))
        (_own / hashlib.sha256(open(__file__, "rb").read()).hexdigest()[:12]).write_text("x")
        """)
    genome = fake_genome.replace('if __name__ == "__main__":\n', 'if __name__ == "__main__":\n'
                                 + textwrap.indent(writer, "    "))
    engine, archive = _engine(tmp_path, Recorder(), generations=2, population=3)
    assert engine.setup.sandbox.isolated and engine.setup.compile_cache is not None
    engine.run(genome)
    genomes = {g.genome_id: g for g in archive.genomes("r")}
    seed_id = next(g for g in genomes.values() if g.operator == "seed").genome_id
    shared = engine.setup.compile_cache
    entries = [p.name for p in shared.iterdir()]
    assert len(entries) == 1  # the seed's, of its first completed evaluation
    logs = sorted(engine.genome_dir.glob("g*.log"))
    children = [p for p in logs if not p.name.startswith(seed_id)]
    seen = sorted([*entries, compile_cache.GIVEN])  # a copy is marked as given
    assert children and all(f"cache saw: {seen}" in p.read_text() for p in children)

    # children that write a cache while the seed writes none: nothing becomes the run's
    child_only = genome.replace("    (_own / hashlib", "    if (LR, WIDTH, DEPTH, UNUSED) != (0.04, 256, 2, 1):  # the seed, with the smoke profile's DEPTH\n        (_own / hashlib")
    assert child_only != genome
    (tmp_path / "second").mkdir()
    second, archive = _engine(tmp_path / "second", Recorder(), generations=2, population=3, run="second")
    second.run(child_only)
    assert len(archive.genomes("second")) >= 4
    assert not second.setup.compile_cache.exists()

    from evo.boundary import evaluation_setup

    (tmp_path / "plain").mkdir()
    plain, _ = _engine(tmp_path / "plain", Recorder(), run="plain")
    config = dataclasses.replace(plain.config, sandbox="none")
    setup = evaluation_setup(plain.paths, plain.archive, config, False, 1, lambda _: None)
    assert setup.compile_cache is None  # an unconfined genome could write it: no sharing
