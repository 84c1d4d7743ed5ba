"""Minimal, versioned prompt templates for the two LLM scoring methods.

**Relevance judgement** (query-first): the instruction and the query come first, then the text,
then a short fixed suffix; the model's next-token distribution over a label set gives an expected
relevance. Query-first means every candidate of one query shares the same prompt prefix, which
servers with prefix caching (vLLM, llama.cpp) compute once.

**Query likelihood** (text-first): ``Passage: {text}`` then ``A question this passage answers:``,
scored by the mean log-probability of the query's tokens. This works with very small models.

Candidate texts are untrusted: :func:`sanitize_text` neutralises the template's own markers so a
text cannot close its section and open a fake ``Query:`` or ``Relevant:`` line.

The template version is part of every LLM scorer's fingerprint, so a cached score never crosses
prompt versions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "GRADE_LABELS",
    "YES_NO_LABELS",
    "JudgementTemplate",
    "Method",
    "QueryLikelihoodTemplate",
    "sanitize_text",
]

Method = Literal["judgement", "query_likelihood"]

YES_NO_LABELS: Mapping[str, float] = {" yes": 1.0, " no": 0.0}
"""Label -> relevance value. The leading space matters: it is how most BPE vocabularies hold the
word after ``Relevant:``."""

GRADE_LABELS: Mapping[str, float] = {f" {g}": float(g) for g in range(4)}
"""Graded relevance 0..3 (single digits, single tokens in common vocabularies)."""

_MARKERS = re.compile(
    r"(?im)^\s*(query|passage|relevant|question|answer|a question this passage answers)\s*:"
)
_FENCE = re.compile(r"<{2,}|>{2,}|\[/?INST\]|<\|[^|>]{0,40}\|>")


def sanitize_text(text: str) -> str:
    """Neutralise template markers inside an untrusted text.

    Line-leading ``Query:``/``Passage:``/``Relevant:``/``Question:``/``Answer:`` (and the
    query-likelihood template's ``A question this passage answers:``) become ``Query -``;
    chat-template tokens such as ``<|im_start|>`` and ``[INST]`` and long angle-bracket
    runs are blanked. Ordinary prose is unchanged.
    """
    text = _FENCE.sub(" ", text)
    return _MARKERS.sub(lambda m: m.group(0).replace(":", " -"), text)


@dataclass(frozen=True, slots=True)
class JudgementTemplate:
    """Query-first relevance judgement read from one next-token distribution."""

    instruction: str = "Does the passage answer the query? Answer yes or no."
    body: str = "Query: {query}\nPassage: {text}\n"
    suffix: str = "Relevant:"
    labels: Mapping[str, float] = field(default_factory=lambda: dict(YES_NO_LABELS))
    version: str = "judge-v1"
    sanitize: bool = True
    """Neutralise template markers in candidate texts (:func:`sanitize_text`). Off only to
    measure what the mitigation buys (docs/reliability.md)."""

    def prefix(self, query: str) -> str:
        """The part shared by every candidate of ``query`` (cacheable by the server)."""
        return f"{self.instruction}\nQuery: {query}\n"

    def render(self, query: str, text: str) -> str:
        body = self.body.format(query=query, text=sanitize_text(text) if self.sanitize else text)
        return f"{self.instruction}\n{body}{self.suffix}"

    @property
    def fingerprint(self) -> str:
        labels = ",".join(f"{k.strip()}={v:g}" for k, v in self.labels.items())
        return f"{self.version}[{labels}]" + ("" if self.sanitize else "+unsanitized")


@dataclass(frozen=True, slots=True)
class QueryLikelihoodTemplate:
    """Text-first query likelihood: log P(query | passage)."""

    context: str = "Passage: {text}\nA question this passage answers:"
    version: str = "ql-v1"
    sanitize: bool = True
    """Neutralise template markers in candidate texts (:func:`sanitize_text`)."""

    def render(self, query: str, text: str) -> tuple[str, str]:
        """(context, target): score the target's tokens given the context. The target starts
        with a space so it tokenises as it would in running text."""
        text = sanitize_text(text) if self.sanitize else text
        return self.context.format(text=text), " " + query.strip()

    @property
    def fingerprint(self) -> str:
        return self.version + ("" if self.sanitize else "+unsanitized")
