"""evo status / lineage / export on a run of the fake genome."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import networkx as nx
import pydot
import pytest
from conftest import add_harness
from test_engine import Recorder

from evo.archive import Archive
from evo.cli import main
from evo.config import Paths, RunConfig
from evo.engine import Engine
from evo.results import best, genome_results


@pytest.fixture(scope="module")
def project(tmp_path_factory, ):
    from conftest import FAKE_GENOME

    tmp_path = tmp_path_factory.mktemp("project")
    paths = Paths.for_project(add_harness(tmp_path))
    archive = Archive(paths.archive_path)
    config = RunConfig(run="views", profile="smoke", population=3, generations=2, seed=3, fitness="reported")
    archive.create_run(config, 1.0, tmp_path)
    Engine(paths, archive, config, 1.0, "cpu", Recorder()).run(FAKE_GENOME)
    return tmp_path


def _results(project):
    archive = Archive(project / "archive" / "evo.duckdb")
    return archive, genome_results(archive.genomes("views"), archive.evaluations("views"))


def test_status_lists_every_genome_with_its_score(project, capsys):
    assert main(["status", "--project", str(project)]) == 0
    out = capsys.readouterr().out
    _, results = _results(project)
    assert "COMPLETE 6" in out
    for r in results:
        assert r.genome_id in out
        assert f"{r.val_bpb:.6f}" in out


def test_lineage_tree_marks_the_best_ancestry(project, capsys):
    assert main(["lineage", "--project", str(project)]) == 0
    out = capsys.readouterr().out
    archive, results = _results(project)
    top = best(results)
    starred = [line for line in out.splitlines() if "★ g" in line]
    ancestry = {top.genome_id}
    graph = nx.DiGraph(archive.edges("views"))
    if top.genome_id in graph:
        ancestry |= nx.ancestors(graph, top.genome_id)
    assert len(starred) == len(ancestry)
    assert all(any(g in line for line in starred) for g in ancestry)


@pytest.mark.parametrize("fmt", ["dot", "graphml", "json"])
def test_lineage_files_hold_every_genome_and_edge(project, tmp_path, fmt):
    out = tmp_path / f"l.{fmt}"
    assert main(["lineage", "--project", str(project), "--format", fmt, "-o", str(out)]) == 0
    archive, results = _results(project)
    edges = set(archive.edges("views"))
    if fmt == "graphml":
        graph = nx.read_graphml(out)
        assert set(graph.nodes) == {r.genome_id for r in results}
        assert set(graph.edges) == edges
        ET.parse(out)
    elif fmt == "json":
        data = json.loads(out.read_text())
        assert {n["id"] for n in data["nodes"]} == {r.genome_id for r in results}
        assert {(e["source"], e["target"]) for e in data["edges"]} == edges
    else:
        (graph,) = pydot.graph_from_dot_file(str(out))
        names = {n.get_name().strip('"') for n in graph.get_nodes()} - {"node", "graph", "edge"}
        assert names == {r.genome_id for r in results}
        assert {(e.get_source().strip('"'), e.get_destination().strip('"')) for e in graph.get_edges()} == edges


def test_export_best_runs_standalone_and_reproduces(project, tmp_path):
    out = tmp_path / "train.py"
    assert main(["export", "--project", str(project), "--best", "-o", str(out)]) == 0
    _, results = _results(project)
    top = best(results)
    code = out.read_text()
    assert code.startswith('"""A fake genome')  # the docstring stays first
    assert 'environ.setdefault("EVO_PROFILE", "smoke")' in code
    assert f"# Exported by evo from run 'views', genome {top.genome_id}" in code  # the header's comments are kept
    run = subprocess.run([sys.executable, str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0
    assert f"val_bpb: {top.val_bpb:.6f}" in run.stdout


def test_export_unknown_genome_is_a_clear_error(project, tmp_path, capsys):
    assert main(["export", "--project", str(project), "--genome", "g9999", "-o", str(tmp_path / "x.py")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and captured.err.count("\n") == 1  # one line, on stderr
    assert "no genome 'g9999'" in captured.err and captured.out == ""
    assert not (tmp_path / "x.py").exists()


def test_export_takes_the_genome_as_a_positional_too(project, tmp_path, capsys):
    assert main(["export", "g0001", "--project", str(project), "-o", str(tmp_path / "a.py")]) == 0
    assert "genome g0001" in capsys.readouterr().out and (tmp_path / "a.py").is_file()
    assert main(["export", "g0001", "--best", "--project", str(project), "-o", str(tmp_path / "b.py")]) == 2
    assert "not both" in capsys.readouterr().err and not (tmp_path / "b.py").exists()
