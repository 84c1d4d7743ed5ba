"""The server on its real default: BM25 + the embedded SmolLM2 on CPU (no injected scorer)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

if importlib.util.find_spec("llmrerank.scorers.llm_local") is None:
    pytest.skip(
        "llmrerank.scorers.llm_local (the embedded default LLM, issue 3) is not installed yet",
        allow_module_level=True,
    )
pytest.importorskip("transformers", reason="the default LLM needs llmrerank[local]")

ServeFactory = Callable[..., Any]


def test_default_server_reranks_with_the_embedded_llm(serve: ServeFactory) -> None:
    import torch

    torch.set_num_threads(2)
    # No funnel given: the app builds Funnel.from_preset("enterprise") with default_llm_scorer().
    server = serve(None, k=3, deadline=60.0)
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["llm_scorer"] and "bm25" in health["fast_scorer"]
    docs = [
        "The capital of France is Paris.",
        "Bananas are rich in potassium.",
        "Paris is known for the Eiffel Tower and is France's capital city.",
    ]
    r = httpx.post(
        f"{server.url}/v1/rerank",
        json={"query": "What is the capital of France?", "documents": docs},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["llmrerank"]["llm_scored"] == 3 and not body["llmrerank"]["degraded"]
    assert body["llmrerank"]["llm_scorer"] == health["llm_scorer"]
    assert body["results"][-1]["index"] == 1  # bananas last
    assert {res["stage"] for res in body["results"]} == {"llm"}


def test_another_preset_runs_the_embedded_llm_with_its_own_text_cut(
    serve: ServeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request's preset picks that preset's variant of the embedded model (here research reads
    128 tokens of each text, enterprise 256), one loaded model behind both."""
    from llmrerank.presets import PRESETS

    monkeypatch.setitem(PRESETS, "research", PRESETS["research"].with_(llm_text_tokens=128))
    server = serve(None, k=2, deadline=60.0)
    docs = ["Paris is the capital of France.", "Bananas are rich in potassium."]
    seen = {}
    for preset in ("enterprise", "research"):
        r = httpx.post(
            f"{server.url}/v1/rerank",
            json={"query": "capital of France", "documents": docs, "preset": preset, "k": 2},
            timeout=120,
        )
        assert r.status_code == 200, r.text
        seen[preset] = r.json()["llmrerank"]["llm_scorer"]
    assert seen["enterprise"].endswith("q64t256")
    assert seen["research"].endswith("q64t128")
