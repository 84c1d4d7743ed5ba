"""The cookbook notebooks run top to bottom on the embedded default and fail on any cell error.

Each notebook runs in a fresh kernel (``scripts/run_notebooks.py``'s ``execute_notebook``, the
same code as ``make notebooks``) with its own time budget; executed copies are saved to
``test-artifacts/cookbook/`` for reading when one fails. A notebook whose prerequisites are not
installed (an optional backend still to land, the judged collections) is skipped with the reason.
The committed notebooks must carry no outputs, so nothing stale is ever shown.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COOKBOOK = REPO / "cookbook"
ARTIFACTS = REPO / "test-artifacts" / "cookbook"
sys.path.insert(0, str(REPO / "scripts"))

from run_notebooks import execute_notebook  # noqa: E402

# notebook -> (modules it imports that optional extras or in-flight work provide, needs data)
NOTEBOOKS: dict[str, tuple[tuple[str, ...], bool]] = {
    "01_langchain_rerank.ipynb": (
        ("llmrerank.scorers.llm_local", "langchain_classic", "sentence_transformers"),
        False,
    ),
    "02_llamaindex_query_engine.ipynb": (
        ("llmrerank.scorers.llm_local", "llama_index.core", "sentence_transformers"),
        False,
    ),
    "03_latency_budgets.ipynb": (("llmrerank.scorers.llm_local", "ranx", "matplotlib"), True),
    "04_streaming.ipynb": (("llmrerank.scorers.llm_local", "uvicorn", "httpx_sse"), False),
    "05_serving_at_scale.ipynb": (
        ("llmrerank.scorers.llm_openai", "llama_cpp.server"),
        False,
    ),
}
TIMEOUT = float(os.environ.get("LLMRERANK_NOTEBOOK_TIMEOUT", "600"))
"""Seconds per notebook; each runs in 1-3 minutes on 2 CPU cores."""


def _missing(modules: tuple[str, ...]) -> list[str]:
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def _data_dir() -> Path | None:
    env = os.environ.get("LLMRERANK_DATA")
    path = Path(env) if env else COOKBOOK.parent.parent / "shared" / "data"
    return path if (path / "adi" / "corpus.jsonl").exists() else None


def test_every_notebook_is_listed() -> None:
    assert sorted(p.name for p in COOKBOOK.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_committed_notebooks_carry_no_outputs(name: str) -> None:
    nb = json.loads((COOKBOOK / name).read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code, f"{name} has no code cells"
    stale = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count")]
    assert not stale, (
        f"{name}: code cells {stale} carry outputs; commit notebooks stripped "
        "(executed copies: make notebooks)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_runs_top_to_bottom(name: str) -> None:
    modules, needs_data = NOTEBOOKS[name]
    missing = _missing(modules)
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}, not installed here")
    if needs_data and _data_dir() is None:
        pytest.skip(f"{name} needs the judged collections (../shared/data or $LLMRERANK_DATA)")
    import nbclient.exceptions

    try:
        nb, seconds = execute_notebook(COOKBOOK / name, timeout=TIMEOUT, out_dir=ARTIFACTS)
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{name}: a cell failed (executed copy in {ARTIFACTS}):\n{exc}"[-6000:])
    except (TimeoutError, nbclient.exceptions.CellTimeoutError) as exc:
        pytest.fail(f"{name}: over its {TIMEOUT:.0f} s budget: {exc}")
    errors = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    assert all(c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    print(f"{name}: {seconds:.1f} s")
