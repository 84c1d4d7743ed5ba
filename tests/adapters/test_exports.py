"""Both adapters' public names are pinned; a missing framework names the extra to install."""

from __future__ import annotations

import importlib
import sys

import pytest
from llmrerank import Funnel, MissingExtraError


def test_langchain_exports() -> None:
    module = importlib.import_module("langchain_llmrerank")
    assert sorted(module.__all__) == [
        "LLMRerankCompressor",
        "LLMRerankRetriever",
        "PROVENANCE_KEY",
        "RELEVANCE_SCORE_KEY",
        "RETRIEVAL_SCORE_KEYS",
        "with_retrieval_scores",
    ]
    assert all(hasattr(module, name) for name in module.__all__)
    assert (module.PROVENANCE_KEY, module.RELEVANCE_SCORE_KEY) == ("llmrerank", "relevance_score")


def test_llamaindex_exports() -> None:
    module = importlib.import_module("llamaindex_llmrerank")
    assert sorted(module.__all__) == [
        "LLMRerankPostprocessor",
        "PROVENANCE_KEY",
        "RETRIEVAL_SCORE_KEY",
    ]
    assert all(hasattr(module, name) for name in module.__all__)
    assert (module.PROVENANCE_KEY, module.RETRIEVAL_SCORE_KEY) == ("llmrerank", "retrieval_score")


@pytest.mark.parametrize(
    ("adapter", "framework", "extra", "method"),
    [
        ("langchain_llmrerank", "langchain_core", "langchain", "as_langchain_compressor"),
        ("llamaindex_llmrerank", "llama_index.core", "llamaindex", "as_llamaindex_postprocessor"),
    ],
)
def test_missing_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, adapter: str, framework: str, extra: str, method: str
) -> None:
    monkeypatch.setitem(sys.modules, framework, None)  # makes `import framework` fail
    for name in [m for m in sys.modules if m == adapter or m.startswith(adapter + ".")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingExtraError, match=rf"pip install 'llmrerank\[{extra}\]'") as info:
        importlib.import_module(adapter)
    assert info.value.extra == extra
    with pytest.raises(MissingExtraError, match=rf"llmrerank\[{extra}\]"):
        getattr(Funnel(llm=None), method)()
