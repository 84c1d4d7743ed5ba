"""Mechanics tests: every model profile on the local scorer, with a tiny random-weight
``Qwen3ForCausalLM`` (the Qwen3-Reranker architecture) and the SmolLM2 tokenizer.

No reranker weights can be downloaded here, so the scores mean nothing about relevance; what is
tested is that the scorer feeds the model the profile's exact prompt (the reference below
tokenizes the whole rendered prompt and runs the model itself) and applies its scoring rule.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="llmrerank[local] is not installed")
pytest.importorskip("transformers", reason="llmrerank[local] is not installed")

from llmrerank import Funnel
from llmrerank.prompts import PROFILES, Profile
from llmrerank.scorers.llm_local import LocalLLMScorer
from llmrerank.testing import tiny_qwen3

pytestmark = [pytest.mark.slow, pytest.mark.integration]

QUERY = "how do bees make honey"
TEXTS = [
    "Bees fan nectar with their wings until the water evaporates.",
    "The stock exchange closed higher on Friday.",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_qwen3(tmp_path_factory.mktemp("tiny-qwen3"))


def reference(model_dir: Path, profile: Profile, query: str, text: str) -> float:
    """The profile's score computed by hand: the whole prompt, one forward pass."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32)
    if profile.chat == "model":
        messages = [
            {"role": "system", "content": profile.system_turn()},
            {"role": "user", "content": profile.user_turn(query, text)},
        ]
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt += profile.suffix
    else:
        prompt = profile.render(query, text)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=True)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    lp = {
        label: float(logprobs[tok.convert_tokens_to_ids(tok.tokenize(label))[0]])
        for label in profile.labels
    }
    if profile.rule == "label_logprob":
        return lp[profile.positive]
    probs = {k: math.exp(v) for k, v in lp.items()}
    return sum(profile.labels[k] * p for k, p in probs.items()) / sum(probs.values())


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_each_profile_scores_its_exact_prompt(tiny: Path, name: str) -> None:
    profile = PROFILES[name]
    scorer = LocalLLMScorer(
        tiny, profile=name, min_label_mass=0.0, max_text_tokens=512, dtype="float32"
    )
    scores = scorer.score(QUERY, TEXTS)
    assert len(scores) == 2 and all(s is not None and math.isfinite(s) for s in scores)
    for text, score in zip(TEXTS, scores, strict=True):
        assert score == pytest.approx(reference(tiny, profile, QUERY, text), abs=1e-4)
    assert f"profile:{name}@1" in scorer.fingerprint
    if profile.rule == "p_yes":
        assert all(0.0 <= s <= 1.0 for s in scores)  # type: ignore[operator]


def test_the_instruction_changes_the_prompt_and_the_score(tiny: Path) -> None:
    scorer = LocalLLMScorer(tiny, profile="qwen3-reranker", min_label_mass=0.0, dtype="float32")
    funnel = Funnel(llm=scorer, k=2)
    a = funnel.rerank(QUERY, TEXTS, deadline=60)
    b = funnel.rerank(QUERY, TEXTS, deadline=60, instruction="Retrieve stock market news")
    assert not a.degraded and not b.degraded
    sa = {r.id: r.llm_score for r in a}
    sb = {r.id: r.llm_score for r in b}
    assert sa != sb  # the instruction is in the prompt (random weights: any change shows)
    expected = reference(
        tiny,
        PROFILES["qwen3-reranker"].with_instruction("Retrieve stock market news"),
        QUERY,
        TEXTS[0],
    )
    assert sb["0"] == pytest.approx(expected, abs=1e-4)
