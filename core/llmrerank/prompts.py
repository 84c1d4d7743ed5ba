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

**Model profiles** (:class:`Profile`, :data:`PROFILES`): rerankers trained on a fixed prompt
(Qwen3-Reranker, bge-reranker-v2-gemma, ...) score well only with that prompt. A profile names the
prompt (a literal template, or system and user turns for the model's own chat template), the
task instruction, the label tokens and the scoring rule; every LLM scorer takes one as
``profile="qwen3-reranker"``. A per-request instruction (:func:`instruction_scope`) replaces the
profile's default instruction for one ranking.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from .errors import ConfigError
from .scoring import expected_relevance

__all__ = [
    "GRADE_LABELS",
    "PROFILES",
    "YES_NO_LABELS",
    "JudgementTemplate",
    "Method",
    "Profile",
    "QueryLikelihoodTemplate",
    "ScoringRule",
    "current_instruction",
    "get_profile",
    "instruction_scope",
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

    def score(
        self, label_logprobs: Mapping[str, float | None], *, min_mass: float
    ) -> tuple[float | None, float]:
        """(score, label mass) from the labels' next-token log-probabilities: the expected
        relevance over the label set (:func:`~llmrerank.scoring.expected_relevance`)."""
        return expected_relevance(label_logprobs, self.labels, min_mass=min_mass)


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


# ---------------------------------------------------------------------- model profiles

ScoringRule = Literal["p_yes", "label_logprob", "expected"]
"""How a profile turns the labels' log-probabilities into a score:

- ``"p_yes"``: P(positive) from the softmax over the labels alone (Qwen3-Reranker: P("yes") over
  "yes"/"no"); for two labels valued 1 and 0 this is the expected relevance;
- ``"label_logprob"``: the positive label's log-probability over the whole vocabulary. The
  model card of bge-reranker-v2-gemma scores by the raw "Yes" logit; log-probability APIs
  return that logit minus the position's log-normaliser, which is what every backend can read;
- ``"expected"``: the expected grade over a graded label set.
"""

_instruction: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "llmrerank_instruction", default=None
)


def current_instruction() -> str | None:
    """The per-request instruction in force (set by :func:`instruction_scope`), if any."""
    return _instruction.get()


@contextlib.contextmanager
def instruction_scope(instruction: str | None) -> Iterator[None]:
    """Within this block (and the tasks and threads it starts), profiles that take an
    instruction use ``instruction`` instead of their own. ``None`` changes nothing."""
    if instruction is None:
        yield
        return
    token = _instruction.set(instruction)
    try:
        yield
    finally:
        _instruction.reset(token)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class Profile(JudgementTemplate):
    """A model family's own scoring prompt, labels and scoring rule.

    ``chat="literal"``: :meth:`render` is the whole prompt, chat markup included, exactly as the
    model card builds it; scorers send it as is (completions). ``chat="model"``: ``system`` and
    ``user`` go through the served model's own chat template (generic instruct models) and
    ``suffix`` is appended after the assistant turn opens.

    ``user`` holds ``{query}`` and ``{text}`` (and ``{instruction}`` for models that take a task
    instruction); ``prefix_text`` comes before it and ``suffix`` (the assistant prefix) after it.
    ``labels`` map each label token to its value; ``positive`` names the label whose probability
    is the score. ``instruction`` is the default task instruction; a per-request one
    (:func:`instruction_scope`) replaces it.
    """

    name: str = "custom"
    system: str | None = None
    prefix_text: str = ""
    user: str = "Query: {query}\nPassage: {text}"
    chat: Literal["literal", "model"] = "literal"
    rule: ScoringRule = "p_yes"
    positive: str = "yes"
    label_variants: bool = False
    """Add up the probabilities of a label's other spellings (" yes", "Yes", ...) where the
    backend can read them (the OpenAI-compatible scorer). Off for rerankers, whose model cards
    name exact label tokens; on for generic instruct models."""
    source: str = ""
    """Where the prompt comes from (the model card), for the docs."""

    @property
    def takes_instruction(self) -> bool:
        return "{instruction}" in self.prefix_text + self.user + self.suffix + (self.system or "")

    def with_instruction(self, instruction: str) -> Profile:
        """This profile with another default instruction (a per-funnel setting)."""
        if not self.takes_instruction:
            raise ConfigError(f"profile {self.name!r} takes no instruction")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ConfigError("the instruction must be a non-empty string")
        return replace(self, instruction=instruction)

    def _instruction_now(self) -> str:
        override = _instruction.get()
        return override if override is not None and self.takes_instruction else self.instruction

    def _fill(self, template: str, query: str, text: str) -> str:
        # one pass, so a query holding "{text}" stays literal
        values = {"query": query, "text": text, "instruction": self._instruction_now()}
        return re.sub(r"\{(query|text|instruction)\}", lambda m: values[m.group(1)], template)

    def user_turn(self, query: str, text: str) -> str:
        """The user turn alone (``chat="model"`` sends it through the model's chat template)."""
        text = sanitize_text(text) if self.sanitize else text
        return self._fill(self.user, query, text)

    def system_turn(self) -> str | None:
        return None if self.system is None else self._fill(self.system, "", "")

    def prefix(self, query: str) -> str:
        head = self.render(query, "\x00").split("\x00", 1)[0]
        return head[: head.rfind("\n") + 1]

    def render(self, query: str, text: str) -> str:
        """The prompt for one (query, text) pair, up to where the label token comes next."""
        body = self.user_turn(query, text)
        if self.chat == "model":
            return body + self.suffix
        return self._fill(self.prefix_text, query, "") + body + self._fill(self.suffix, query, "")

    @property
    def fingerprint(self) -> str:
        labels = ",".join(f"{k.strip()}={v:g}" for k, v in self.labels.items())
        fp = f"profile:{self.name}@{self.version}[{labels}]{self.rule}"
        if self.takes_instruction:
            override = _instruction.get()
            instruction = override if override is not None else self.instruction
            fp += f"+instr:{_short_hash(instruction)}"
        return fp + ("" if self.sanitize else "+unsanitized")

    def score(
        self, label_logprobs: Mapping[str, float | None], *, min_mass: float
    ) -> tuple[float | None, float]:
        """(score, label mass) by the profile's :data:`ScoringRule`."""
        if self.rule == "label_logprob":
            lp = label_logprobs.get(self.positive)
            mass = math.fsum(
                math.exp(v) for v in label_logprobs.values() if v is not None and math.isfinite(v)
            )
            if lp is None or not math.isfinite(lp) or mass < min_mass:
                return None, mass
            return float(lp), mass
        return expected_relevance(label_logprobs, self.labels, min_mass=min_mass)


QWEN3_RERANKER = Profile(
    name="qwen3-reranker",
    version="1",
    prefix_text=(
        "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query "
        'and the Instruct provided. Note that the answer can only be "yes" or "no".'
        "<|im_end|>\n<|im_start|>user\n"
    ),
    user="<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {text}",
    suffix="<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    instruction="Given a web search query, retrieve relevant passages that answer the query",
    labels={"yes": 1.0, "no": 0.0},
    positive="yes",
    rule="p_yes",
    source="https://huggingface.co/Qwen/Qwen3-Reranker-0.6B",
)
"""Qwen3-Reranker (0.6B, 4B, 8B): score = P("yes") from the softmax over "no"/"yes"."""

BGE_RERANKER_V2_GEMMA = Profile(
    name="bge-reranker-v2-gemma",
    version="1",
    user="A: {query}\nB: {text}\n{instruction}",
    suffix="",
    instruction=(
        "Given a query A and a passage B, determine whether the passage contains an answer to the "
        "query by providing a prediction of either 'Yes' or 'No'."
    ),
    labels={"Yes": 1.0, "No": 0.0},
    positive="Yes",
    rule="label_logprob",
    source="https://huggingface.co/BAAI/bge-reranker-v2-gemma",
)
"""bge-reranker-v2-gemma: ``A: {query}\nB: {passage}\n{prompt}`` after the tokenizer's BOS;
score = the "Yes" token (read as its log-probability, see :data:`ScoringRule`)."""

CHAT_INSTRUCT = Profile(
    name="chat-instruct",
    version="1",
    chat="model",
    system="You judge search results. Answer with one word: yes or no.",
    user=(
        "{instruction}\n\nQuery: {query}\n\nPassage: {text}\n\n"
        "Does the passage answer the query? Answer yes or no."
    ),
    suffix="",
    instruction="Judge whether the passage is relevant to the search query.",
    labels={"yes": 1.0, "no": 0.0},
    positive="yes",
    rule="p_yes",
    label_variants=True,
    source="llmrerank (generic instruct models: Llama 3, Mistral, Qwen2.5 instruct)",
)
"""Generic instruct models judged through their own chat template; the label variants ("Yes",
" yes", ...) add up where the backend can read them."""

BRIEF_GRADED = Profile(
    name="brief-graded",
    version="1",
    user="Query: {query}\nText: {text}\n",
    suffix="relevance (1-10): ",
    labels={str(g): float(g) for g in range(1, 10)},
    positive="9",
    rule="expected",
    source="the project brief's minimal prompt",
)
"""The brief's minimal graded prompt: query, text, ``relevance (1-10):``; score = the expected
grade. Grades are read from the first answer token, so the labels are the digits 1 .. 9 (a "10"
starts with the token "1" in digit-splitting vocabularies: Qwen, SmolLM2, Llama 2), and the
prompt ends with the space before the grade, so a digit is one token in those vocabularies too.
"""

PROFILES: dict[str, Profile] = {
    p.name: p for p in (QWEN3_RERANKER, BGE_RERANKER_V2_GEMMA, CHAT_INSTRUCT, BRIEF_GRADED)
}
"""The built-in profiles by name (``profile="qwen3-reranker"`` on every LLM scorer)."""


def get_profile(profile: str | Profile) -> Profile:
    """A profile by name (see :data:`PROFILES`), or the given one."""
    if isinstance(profile, Profile):
        return profile
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    return PROFILES[profile]
