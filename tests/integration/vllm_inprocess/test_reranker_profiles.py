"""Mechanics tests: the model profiles on a real in-process vLLM engine, with a tiny random-weight
``Qwen3ForCausalLM`` (the Qwen3-Reranker architecture) and the SmolLM2 tokenizer, built here.

No reranker weights can be downloaded, so the scores mean nothing about relevance. What is
tested: the generate path (VLLMScorer with ``profile=``) scores the profile's exact prompt (a
reference runs the same prompt through transformers), and the pooling runner with the
Qwen3-Reranker classifier override (``classifier_from_token: ["no", "yes"]``) scores the query
and document halves that RerankAPIScorer sends to such a server to the same P(yes).

One generate engine for the module (every profile shares it through ``with_method``), then one
pooling engine: about 30-100 s each on 2 CPU cores. Run with ``make test-vllm``; the main venv
has no vllm and skips this module.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytest_asyncio

pytest.importorskip(
    "vllm",
    reason="vllm is not installed in this environment (run `make test-vllm`, which uses the "
    "separate .venv-vllm made by scripts/setup_vllm.sh)",
)

from llmrerank.budget import Deadline
from llmrerank.errors import ConfigError
from llmrerank.prompts import PROFILES, Profile
from llmrerank.scorers.llm_vllm import VLLMScorer
from llmrerank.testing import tiny_qwen3

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.asyncio(loop_scope="module"),
]

QUERY = "how do bees make honey"
TEXTS = [
    "Bees fan nectar with their wings until the water evaporates.",
    "The stock exchange closed higher on Friday.",
]
_SLOT = "\x00SLOT\x00"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))


def reference(model_dir: Path, profile: Profile, query: str, text: str) -> float:
    """The profile's score by hand with transformers: the whole prompt, one forward pass."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    if profile.chat == "model":
        messages = [
            {"role": "system", "content": profile.system_turn()},
            {"role": "user", "content": profile.user_turn(query, text)},
        ]
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        prompt = profile.render(query, text)
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
    lp = {
        label: float(logprobs[tok.convert_tokens_to_ids(tok.tokenize(label))[0]])
        for label in profile.labels
    }
    if profile.rule == "label_logprob":
        return lp[profile.positive]
    probs = {k: math.exp(v) for k, v in lp.items()}
    return sum(profile.labels[k] * p for k, p in probs.items()) / sum(probs.values())


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def qwen3(tiny: Path):  # type: ignore[no-untyped-def]
    scorer = VLLMScorer(
        str(tiny),
        profile="qwen3-reranker",
        dtype="float32",
        enforce_eager=True,
        kv_cache_gib=0.25,
        min_label_mass=0.0,
        max_model_len=512,
    )
    await scorer.start()
    yield scorer
    await scorer.aclose()


@pytest.mark.parametrize("name", sorted(PROFILES))
async def test_generate_path_scores_each_profiles_exact_prompt(
    qwen3: VLLMScorer, tiny: Path, name: str
) -> None:
    scorer = qwen3.with_method("judgement", PROFILES[name], min_label_mass=0.0)
    await scorer.start()
    scores = await scorer.ascore(QUERY, TEXTS, deadline=Deadline.after(60))
    for text, score in zip(TEXTS, scores, strict=True):
        assert score is not None
        assert score == pytest.approx(reference(tiny, PROFILES[name], QUERY, text), abs=2e-3)
    assert f"profile:{name}@1" in scorer.fingerprint


async def test_a_multi_token_label_is_refused_before_the_engine(tiny: Path) -> None:
    bad = Profile(name="bad", labels={"irrelevantly": 0.0, "yes": 1.0})
    scorer = VLLMScorer(str(tiny), profile=bad, dtype="float32", enforce_eager=True)
    with pytest.raises(ConfigError, match="irrelevantly") as info:
        await scorer.start()
    assert "token" in str(info.value)
    assert scorer._engine is None  # refused before any engine started
    await scorer.aclose()


def test_pooling_runner_scores_the_halves_rerank_api_sends(tiny: Path) -> None:
    """vLLM's pooling runner with the Qwen3-Reranker conversion: score(query half, document
    half) equals the generate path's P(yes) for the profile prompt."""
    from vllm import LLM

    profile = PROFILES["qwen3-reranker"]
    head, _, tail = profile.render(QUERY, _SLOT).partition(_SLOT)
    llm = LLM(
        model=str(tiny),
        runner="pooling",
        hf_overrides={
            "architectures": ["Qwen3ForSequenceClassification"],
            "classifier_from_token": ["no", "yes"],
            "is_original_qwen3_reranker": True,
        },
        dtype="float32",
        enforce_eager=True,
        max_model_len=512,
        kv_cache_memory_bytes=256 * 2**20,  # on CPU the KV cache comes out of RAM
    )
    try:
        outputs = llm.score(head, [t + tail for t in TEXTS])
        got = [float(o.outputs.score) for o in outputs]
    finally:
        del llm
    for text, score in zip(TEXTS, got, strict=True):
        assert score == pytest.approx(reference(tiny, profile, QUERY, text), abs=2e-3)
