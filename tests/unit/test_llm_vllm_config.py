"""VLLMScorer's configuration checks and identity: no engine, no vllm needed."""

from __future__ import annotations

import importlib.util

import pytest
from llmrerank.budget import Deadline
from llmrerank.errors import ConfigError, MissingExtraError
from llmrerank.prompts import JudgementTemplate, QueryLikelihoodTemplate
from llmrerank.scorers.base import Scorer
from llmrerank.scorers.llm_vllm import VLLMScorer


def test_is_a_scorer_with_batching_hints() -> None:
    scorer = VLLMScorer("/models/qwen2.5-1.5b-instruct")
    assert isinstance(scorer, Scorer)
    assert scorer.max_concurrency >= 32  # the engine batches continuously
    assert 1 <= scorer.batch_size <= 64
    assert scorer.engine is None  # nothing starts before first use


def test_fingerprint_is_backend_model_template_method() -> None:
    ql = VLLMScorer("/models/qwen2.5-1.5b-instruct")
    assert ql.fingerprint == "vllm:qwen2.5-1.5b-instruct:ql-v1:query_likelihood"
    judge = VLLMScorer("/models/qwen2.5-1.5b-instruct", method="judgement", quantization="awq")
    assert judge.fingerprint == (
        f"vllm:qwen2.5-1.5b-instruct+awq:{JudgementTemplate().fingerprint}:judgement"
    )
    other = VLLMScorer(
        "/models/qwen2.5-1.5b-instruct",
        template=QueryLikelihoodTemplate(version="ql-v2"),
    )
    assert other.fingerprint != ql.fingerprint


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "generate"}, "method must be one of"),
        (
            {"method": "judgement", "template": QueryLikelihoodTemplate()},
            "needs a JudgementTemplate",
        ),
        ({"template": JudgementTemplate()}, "needs a QueryLikelihoodTemplate"),
        ({"method": "judgement", "template": JudgementTemplate(labels={})}, "label set is empty"),
        ({"max_text_tokens": 0}, "max_text_tokens must be a positive int"),
        ({"batch_size": 2.5}, "batch_size must be a positive int"),
        ({"min_label_mass": 1.5}, "min_label_mass"),
        ({"kv_cache_gib": 0}, "kv_cache_gib"),
    ],
)
def test_bad_settings_are_refused_up_front(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        VLLMScorer("/models/m", **kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
async def test_without_vllm_the_error_names_the_extra(tmp_path: object) -> None:
    scorer = VLLMScorer(str(tmp_path))
    with pytest.raises(MissingExtraError, match=r"llmrerank\[vllm\]"):
        await scorer.ascore("q", ["t"], deadline=Deadline.never())


async def test_empty_input_needs_no_engine() -> None:
    scorer = VLLMScorer("/models/m")
    assert await scorer.ascore("q", [], deadline=Deadline.never()) == []
    assert scorer.engine is None
