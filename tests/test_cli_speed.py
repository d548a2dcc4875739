"""Start-up: `evo --help` and the read-only verbs import none of the heavy modules; Ctrl-C
while they load exits 130 with one line. (Seconds are measured by benchmarks/cli_speed.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from test_cli_runs import add_run

from evo.archive import Archive

HEAVY = ("torch", "optuna", "libcst", "anthropic", "ray", "matplotlib", "evo.engine", "evo.operators",
         "evo.scheduler", "evo.harness", "evo.evaluation")

MODULES_AFTER = textwrap.dedent(
    """
    import json, sys
    from evo.cli import main
    try:
        code = main(sys.argv[1:])
    except SystemExit as exc:  # --help exits
        code = exc.code
    sys.stderr.write("@@" + json.dumps({"code": code, "modules": sorted(sys.modules)}) + "\\n")
    """
)


def _modules_after(*argv: str) -> tuple[int, set[str]]:
    proc = subprocess.run([sys.executable, "-c", MODULES_AFTER, *argv], capture_output=True, text=True, timeout=120)
    line = next(line for line in proc.stderr.splitlines() if line.startswith("@@"))
    data = json.loads(line[2:])
    return data["code"], set(data["modules"])


def _heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    path = tmp_path_factory.mktemp("project")
    add_run(Archive(path / "archive" / "evo.duckdb"), path, "r", children=2)
    return path


@pytest.mark.parametrize("argv", [["--help"], ["status", "--help"], ["start", "--help"]])
def test_help_imports_nothing_heavy(argv):
    code, modules = _modules_after(*argv)
    assert code == 0 and _heavy(modules) == []


@pytest.mark.parametrize("verb", [["status"], ["status", "--json"], ["runs"], ["show", "g0001"]])
def test_read_only_verbs_import_nothing_heavy(project, verb):
    code, modules = _modules_after(*verb, "--project", str(project))
    assert code == 0 and _heavy(modules) == []


def test_the_parsers_names_match_the_modules_that_define_them():
    from evo.cli import API_KEY_ENV, OPERATOR_NAMES, SAMPLER_NAMES
    from evo.llm import client
    from evo.operators import REGISTRY
    from evo.operators.optuna_sampler import SAMPLERS

    assert sorted(OPERATOR_NAMES) == sorted(REGISTRY)
    assert SAMPLER_NAMES == SAMPLERS
    assert API_KEY_ENV == client.API_KEY_ENV


INTERRUPT_ON_IMPORT = textwrap.dedent(
    """
    import runpy, sys

    MODULE = sys.argv[1]

    class CtrlC:  # Ctrl-C arrives while Python imports this module
        def find_spec(self, name, path=None, target=None):
            if name == MODULE:
                raise KeyboardInterrupt
            return None

    sys.meta_path.insert(0, CtrlC())
    sys.argv = ["evo", *sys.argv[2:]]
    runpy.run_module("evo", run_name="__main__")
    """
)


@pytest.mark.parametrize("module, argv", [
    ("evo.cli_common", ["--help"]),  # imported by evo.cli itself, before main() runs
    ("evo.cli_views", ["status"]),  # a verb's module, imported when the verb runs
    ("evo.cli_run", ["start"]),
])
def test_ctrl_c_while_importing_exits_130_with_one_line(tmp_path, module, argv):
    proc = subprocess.run([sys.executable, "-c", INTERRUPT_ON_IMPORT, module, *argv, "--project", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "interrupted" and proc.stdout == ""
