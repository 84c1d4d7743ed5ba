"""The benchmark's model arms with the real embedded models, on a sliver of ../shared/data/adi.

Slow (the generating baselines run SmolLM2 generation on CPU): one query, ten candidates, the
generating arms on the top two with at most 24 new tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ranx", reason="the benchmark needs llmrerank[bench] (ranx)")
pytest.importorskip("bm25s", reason="the benchmark needs llmrerank[bench] (bm25s)")
pytest.importorskip("transformers", reason="the generating arms need llmrerank[local]")
pytest.importorskip("sentence_transformers", reason="the dense arms need llmrerank[dense]")
pytest.importorskip("llama_index.core", reason="the LlamaIndex arm needs llama-index-core")
pytest.importorskip("langchain_classic", reason="the LangChain arm needs langchain-classic")

from llmrerank.errors import ConfigError
from llmrerank.eval.data import default_data_dir
from llmrerank.eval.runner import BenchConfig, run_benchmark
from llmrerank.models import minilm_path, smollm2_gguf

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaWarning"),
]


@pytest.fixture(scope="module")
def adi() -> Path:
    data = default_data_dir()
    if data is None or not (data / "adi").is_dir():
        pytest.skip("../shared/data/adi is absent (set LLMRERANK_DATA to the collections' folder)")
    try:
        smollm2_gguf()
        minilm_path()
    except ConfigError as exc:
        pytest.skip(f"embedded models not installed: {exc}")
    return data / "adi"


def test_model_arms_run_end_to_end(adi: Path) -> None:
    import torch

    torch.set_num_threads(2)
    arms = (
        "retriever",
        "dense",
        "hybrid",
        "naive-llm",
        "llamaindex-llmrerank",
        "langchain-llmfilter",
    )
    config = BenchConfig(
        dataset=adi,
        queries=1,
        n=10,
        subset=2,
        max_new_tokens=24,
        arms=arms,
        llm="local",
        warmup=False,
        progress=False,
    )
    result = run_benchmark(config)
    by_name = {a["name"]: a for a in result["arms"]}
    assert list(by_name) == list(arms)
    for arm in result["arms"]:
        assert arm["complete_rate"] == 1.0, arm["name"]
        assert 0.0 <= arm["metrics"]["ndcg@10"] <= 1.0
    assert by_name["dense"]["llm_calls_per_query"] == 0
    naive = by_name["naive-llm"]
    assert naive["llm_calls_per_query"] == 2  # one generation per judged candidate
    assert 0 < naive["completion_tokens_per_query"] <= 2 * 24
    assert naive["prompt_tokens_per_query"] > 2 * 50  # the verbose prompt plus the text
    assert by_name["langchain-llmfilter"]["llm_calls_per_query"] == 2
    assert by_name["llamaindex-llmrerank"]["llm_calls_per_query"] == 1  # one batch of two
    assert result["settings"]["generator"] == "smollm2-135m-instruct"
    assert result["settings"]["dense_scorer"]
