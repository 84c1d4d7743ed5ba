"""The `llmrerank` command as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

from llmrerank.bench_engine import run_engine_bench
from llmrerank.cli import main


def test_rerank_command_prints_ranking_with_provenance(capsys):
    code = main(
        ["rerank", "read a file line by line", "--demo", "--llm", "none", "--json", "--unordered"]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["results"][0]["id"] == "demo0"
    assert len(payload["results"]) == 10
    assert payload["provenance"]["degraded"] is False
    assert payload["provenance"]["fast_scorer"].startswith("retriever_fusion(rrf")
    assert payload["provenance"]["input_ranked"] is False


def test_rerank_command_reads_a_file_and_reports_bad_input(tmp_path, capsys):
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "kittens"}\n{"id": "a", "text": "cats"}\n')
    code = main(["rerank", "kitten", "--file", str(docs), "--llm", "none"])
    assert code == 2
    assert "duplicate candidate id 'a'" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmrerank",
            "rerank",
            "cats",
            "dogs",
            "cats and kittens",
            "--llm",
            "none",
            "--unordered",
            "--top",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "[arg1]" in out and "complete" in out


def test_engine_bench_writes_figures(tmp_path):
    result = run_engine_bench(tmp_path, requests=20, deadline=0.2, command="test")
    saved = json.loads((tmp_path / "engine.json").read_text())
    assert saved["command"] == "test"
    assert saved["deadline_heavy_tailed"]["complete_rate"] == 1.0
    assert result["overhead_zero_cost_scorers"]["candidates"] == 300
    assert "Deadline keeping" in (tmp_path / "engine.md").read_text()
