"""OpenAILLMScorer without a server: configuration, request forms and response parsing, driven
through httpx.MockTransport (real servers: tests/integration/openai_servers/)."""

from __future__ import annotations

import email.utils
import json
import math
import subprocess
import sys
import time
from typing import Any

import pytest
from llmrerank import Deadline
from llmrerank.errors import ConfigError, MalformedOutput, MissingExtraError
from llmrerank.prompts import GRADE_LABELS, JudgementTemplate
from llmrerank.scorers import OpenAILLMScorer
from llmrerank.scorers._http import retry_after as _retry_after
from llmrerank.scorers.llm_openai import _target_logprobs

httpx = pytest.importorskip("httpx")
pytest.importorskip("tenacity")

QUERY = "capital of france"


class FakeVLLM:
    """A MockTransport handler that answers like vLLM 0.32 and records the requests."""

    def __init__(
        self, vocab: dict[str, list[int]] | None = None, top: dict[str, float] | None = None
    ):
        self.vocab = vocab or {}
        self.top = top or {" yes": math.log(0.6), " no": math.log(0.2), " The": math.log(0.1)}
        self.bodies: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content) if request.content else {}
        self.bodies.append({"path": path, **body})
        if path == "/version":
            return httpx.Response(200, json={"version": "0.32.0"})
        if path == "/tokenize":
            text = body["prompt"]
            return httpx.Response(200, json={"tokens": self.vocab.get(text, [1, 2])})
        if path == "/v1/chat/completions":
            entries = [{"token": t, "logprob": v} for t, v in self.top.items()]
            content = [{**entries[0], "top_logprobs": entries}]
            return httpx.Response(200, json={"choices": [{"logprobs": {"content": content}}]})
        if path == "/v1/completions":
            return httpx.Response(
                200, json={"choices": [{"text": " yes", "logprobs": {"top_logprobs": [self.top]}}]}
            )
        return httpx.Response(404, json={"detail": "Not Found"})


VOCAB = {
    " yes": [9805],
    " no": [787],
    "yes": [10407],
    "no": [4607],
    " Yes": [5230],
    "Yes": [10539],
    " No": [2838],
    "No": [9230],
}


def scorer(handler: Any, **kw: Any) -> OpenAILLMScorer:
    kw.setdefault("method", "judgement")
    return OpenAILLMScorer(
        "http://vllm.test:8000/v1", "m", transport=httpx.MockTransport(handler), **kw
    )


async def test_vllm_gets_label_restricted_logprobs_for_every_spelling() -> None:
    fake = FakeVLLM(VOCAB)
    s = scorer(fake)
    scores = await s.ascore(QUERY, ["Paris is the capital."], deadline=Deadline.after(5))
    assert scores[0] == pytest.approx(0.6 / 0.8)
    completion = next(b for b in fake.bodies if b["path"] == "/v1/completions")
    assert sorted(completion["logprob_token_ids"]) == sorted(i for v in VOCAB.values() for i in v)
    assert completion["max_tokens"] == 1 and completion["temperature"] == 0.0
    assert s.server_info["label_token_ids"] == {" yes": 9805, " no": 787}
    await s.aclose()


async def test_chat_mode_adds_up_label_spellings() -> None:
    fake = FakeVLLM(VOCAB, top={" yes": math.log(0.3), "yes": math.log(0.3), " no": -1.6})
    s = scorer(fake, api="chat")
    [score] = await s.ascore(QUERY, ["Paris."], deadline=Deadline.after(5))
    assert score == pytest.approx(0.6 / (0.6 + math.exp(-1.6)))
    chat = next(b for b in fake.bodies if b["path"] == "/v1/chat/completions")
    assert chat["logprobs"] is True and chat["top_logprobs"] == 20
    assert chat["messages"][0]["content"].startswith("Does the passage answer the query?")
    await s.aclose()


async def test_multi_token_labels_raise_config_error() -> None:
    s = scorer(FakeVLLM(VOCAB), template=JudgementTemplate(labels=dict(GRADE_LABELS)))
    with pytest.raises(ConfigError, match="single token") as info:
        await s.avalidate()
    assert "' 0' -> 2 tokens" in str(info.value)
    await s.aclose()


async def test_missing_logprobs_raise_malformed_output() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": [{"text": " yes", "logprobs": None}]})

    s = scorer(handler, server="generic")
    with pytest.raises(MalformedOutput, match="no top log-probabilities"):
        await s.ascore(QUERY, ["x"], deadline=Deadline.after(5))
    await s.aclose()


async def test_query_likelihood_reads_the_query_tokens_from_the_echo() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["prompt"]
        assert prompt.endswith("A question this passage answers: capital of france")
        # the passage holds characters a server may decode oddly; only the tail counts
        tokens = ["Pass", "age", ":", " ��", " x", "\n", "A", " question", " answers", ":"]
        tokens += [" capital", " of", " france", " ?"]
        lps = [None, -1.0, -1.0, -9.0, -9.0, -1.0, -1.0, -1.0, -1.0, -1.0, -0.5, -1.0, -1.5, -2.0]
        return httpx.Response(
            200, json={"choices": [{"logprobs": {"tokens": tokens, "token_logprobs": lps}}]}
        )

    s = OpenAILLMScorer(
        "http://x.test/v1", "m", server="generic", transport=httpx.MockTransport(handler)
    )
    [score] = await s.ascore(QUERY, ["é x"], deadline=Deadline.after(5))
    assert score == pytest.approx(-1.0)  # mean of -0.5, -1.0, -1.5
    await s.aclose()


def test_target_logprobs_counts_from_the_end() -> None:
    tokens = ["a", " b", " cap", "ital", " ?"]
    assert _target_logprobs(tokens, [None, -1, -2, -3, -9], len(" capital")) == [-2, -3]
    assert _target_logprobs(tokens, [None, -1, -2, -3, -9], 100) is None


def test_retry_after_forms() -> None:
    assert _retry_after("2") == 2.0
    assert _retry_after("0.5") == 0.5
    assert _retry_after(None) is None
    assert _retry_after("soon") is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < (_retry_after(later) or 0) <= 31


def test_fingerprint_names_model_and_prompt_not_the_url() -> None:
    a = OpenAILLMScorer("http://a:1/v1", "qwen", method="judgement")
    b = OpenAILLMScorer(["http://b:2", "http://c:3/v1"], "qwen", method="judgement")
    assert a.fingerprint == b.fingerprint == "openai:qwen:judgement:judge-v1[yes=1,no=0]"
    c = OpenAILLMScorer("http://a:1/v1", "qwen", method="judgement", api="chat")
    assert c.fingerprint != a.fingerprint
    assert OpenAILLMScorer("http://a:1", "qwen").fingerprint == "openai:qwen:query_likelihood:ql-v1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base_url": "localhost:8000"}, "http"),
        ({"base_url": []}, "empty"),
        ({"base_url": ["http://a:1", "http://a:1/v1"]}, "twice"),
        ({"model": ""}, "model"),
        ({"method": "query_likelihood", "api": "chat"}, "chat"),
        ({"top_logprobs": 0}, "top_logprobs"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"method": "judgement", "template": JudgementTemplate(labels={" yes": 1.0})}, "two"),
    ],
)
def test_bad_configuration_is_a_config_error(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"base_url": "http://a:1/v1", "model": "m", **kwargs}
    with pytest.raises(ConfigError, match=message):
        OpenAILLMScorer(args.pop("base_url"), args.pop("model"), **args)


def test_credentials_in_the_url_and_the_key_stay_out_of_repr() -> None:
    s = OpenAILLMScorer("https://user:pw@host.test/v1", "m", api_key="sk-secret-123")
    text = repr(s) + repr(s.endpoint_stats())
    assert "pw" not in text and "sk-secret-123" not in text
    assert "api_key=set" in repr(s)


def test_missing_httpx_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "httpx", None)
    with pytest.raises(MissingExtraError, match=r"llmrerank\[openai\]"):
        OpenAILLMScorer("http://a:1/v1", "m")


def test_import_llmrerank_works_without_httpx() -> None:
    code = (
        "import sys; sys.modules['httpx'] = None; import llmrerank, llmrerank.scorers; "
        "from llmrerank.scorers import BM25Scorer; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
