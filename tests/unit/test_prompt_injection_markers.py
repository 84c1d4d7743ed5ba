"""The crafted prompt-injection set (``tests/data/prompt_injection.json``) against the templates:
:func:`sanitize_text` defuses every template marker and chat-template token the injected texts
carry, so a rendered prompt has exactly the sections the template wrote. With ``sanitize=False``
(the measurement's "mitigation off") the same texts do forge extra sections.

The ranking effect of each mitigation, measured with the real local LLM, is in
``docs/reliability.md`` (``scripts/bench_injection.py``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from llmrerank.prompts import JudgementTemplate, QueryLikelihoodTemplate, sanitize_text

SET = Path(__file__).resolve().parents[1] / "data" / "prompt_injection.json"
CHAT_TOKENS = re.compile(r"<\|[^|>]*\|>|\[/?INST\]")


def _load() -> dict[str, Any]:
    return json.loads(SET.read_text())


def injected_texts() -> list[tuple[str, str, str]]:
    data = _load()
    return [
        (name, q["query"], attack.format(payload=q["payload"], query=q["query"]))
        for q in data["queries"]
        for name, attack in data["attacks"].items()
    ]


CASES = injected_texts()


def _lines_starting(prompt: str, marker: str) -> int:
    return sum(1 for line in prompt.split("\n") if line.lstrip().lower().startswith(marker.lower()))


def test_the_crafted_set_is_complete() -> None:
    data = _load()
    assert 8 <= len(data["queries"]) <= 12
    assert set(data["attacks"]) == {
        "instruction",
        "fake_judgement",
        "fake_query_likelihood",
        "label_tokens",
        "chat_template",
    }
    for q in data["queries"]:
        assert q["relevant"] and len(q["distractors"]) == 3 and q["payload"]


@pytest.mark.parametrize(
    ("attack", "query", "text"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_sanitize_text_defuses_every_crafted_marker(attack: str, query: str, text: str) -> None:
    clean = sanitize_text(text)
    assert not CHAT_TOKENS.search(clean), clean
    for marker in (
        "query:",
        "passage:",
        "relevant:",
        "answer:",
        "a question this passage answers:",
    ):
        assert _lines_starting(clean, marker) == 0, (marker, clean)

    judge = JudgementTemplate().render(query, text)
    assert _lines_starting(judge, "Query:") == 1
    assert _lines_starting(judge, "Passage:") == 1
    assert _lines_starting(judge, "Relevant:") == 1  # the template's own suffix, last
    assert judge.endswith("Relevant:")
    context, target = QueryLikelihoodTemplate().render(query, text)
    assert _lines_starting(context, "Passage:") == 1
    assert _lines_starting(context, "A question this passage answers:") == 1
    assert context.endswith("A question this passage answers:")
    assert target == " " + query
    # The payload (what the text is about) survives: sanitising escapes, it does not censor.
    payload = next(q["payload"] for q in _load()["queries"] if q["query"] == query)
    assert payload in clean


@pytest.mark.parametrize("attack", ["fake_judgement", "fake_query_likelihood", "chat_template"])
def test_without_sanitising_the_same_texts_forge_sections(attack: str) -> None:
    forged = [(q, t) for a, q, t in CASES if a == attack]
    raw_judge = JudgementTemplate(sanitize=False)
    raw_ql = QueryLikelihoodTemplate(sanitize=False)
    for query, text in forged:
        judge = raw_judge.render(query, text)
        context, _ = raw_ql.render(query, text)
        extra = (
            _lines_starting(judge, "Query:") > 1
            or _lines_starting(judge, "Relevant:") > 1
            or _lines_starting(context, "A question this passage answers:") > 1
            or bool(CHAT_TOKENS.search(judge))
        )
        assert extra, judge


def test_turning_sanitising_off_changes_the_fingerprint() -> None:
    assert JudgementTemplate().fingerprint == "judge-v1[yes=1,no=0]"
    assert JudgementTemplate(sanitize=False).fingerprint == "judge-v1[yes=1,no=0]+unsanitized"
    assert QueryLikelihoodTemplate().fingerprint == "ql-v1"
    assert QueryLikelihoodTemplate(sanitize=False).fingerprint == "ql-v1+unsanitized"


def test_ordinary_prose_is_unchanged() -> None:
    for q in _load()["queries"]:
        for text in [q["relevant"], *q["distractors"], q["payload"]]:
            assert sanitize_text(text) == text
