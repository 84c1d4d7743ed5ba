"""The benchmark's arms: every way of ordering the same BM25 candidates that it compares.

Each arm turns ``(query, candidates in BM25 order)`` into a complete ranking of the candidate ids
and says what it cost (LLM calls and tokens) and whether it degraded. Arms that judge only a
subset of the candidates (the generating baselines) keep the rest in BM25 order below it.

=========================== ==================================================================
arm                         what it is
=========================== ==================================================================
retriever                   the retriever's order, no rerank
fast                        ``Funnel(llm=None)``: the default fast stage alone
dense                       all-MiniLM-L6-v2 cosine similarity over the N candidates
hybrid                      reciprocal-rank fusion of bm25 and dense
naive-llm                   the reranker teams give up on: a verbose prompt asks for reasoning
                            and a 1-10 score, generated and parsed, one candidate at a time
llamaindex-llmrerank        ``llama_index.core.postprocessor.LLMRerank`` (generated choice lists)
langchain-llmfilter         ``langchain_classic`` ``LLMChainFilter`` (generated YES/NO per doc)
llm-only                    llmrerank's LLM scorer alone on the BM25 top-k (no fusion)
funnel-<preset>             ``Funnel.from_preset(preset)`` with the preset's deadline
funnel-<preset>-nodl        the same funnel with no deadline
langchain-enterprise        the LangChain adapter end to end: ``ContextualCompressionRetriever``
                            over a LangChain retriever with ``LLMRerankCompressor(preset=
                            "enterprise", top_n=10)``
=========================== ==================================================================
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..budget import Deadline
from ..funnel import Funnel
from ..scorers.base import Scorer, scorer_batch_size
from ..scoring import Fusion
from ..types import Candidate
from .generation import LocalGenerator, parse_score

__all__ = [
    "Arm",
    "ArmOutput",
    "DenseArm",
    "FunnelArm",
    "HybridArm",
    "LangChainAdapterArm",
    "LangChainFilterArm",
    "LlamaIndexArm",
    "MeteredScorer",
    "NaiveLLMArm",
    "RetrieverArm",
]

logger = logging.getLogger("llmrerank")

NAIVE_PROMPT = (
    "You are a world-class document analyst with deep expertise in information retrieval. "
    "Carefully assess how relevant the document below is to the user's query. First explain "
    "your reasoning step by step: identify the key concepts of the query and check whether the "
    "document addresses each of them. Then give a relevance score from 1 to 10 on the last line, "
    "in the form 'Score: N'.\n\nQuery: {query}\n\nDocument: {text}"
)
"""The naive reranker's prompt: verbose, asks for prose, then a score to parse out of it."""


@dataclass
class ArmOutput:
    """One arm's answer for one query."""

    ids: list[str]
    """The complete ranking, best first."""
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_judged: int = 0
    """Candidates the LLM was asked about."""
    degraded: bool = False
    reasons: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class Arm:
    """One way of ranking the candidates. ``rank`` is timed by the runner, nothing else is."""

    name: str
    group: str
    description: str
    llm_subset: int | None = None
    """How many top candidates the LLM judges; None for all it is given or no LLM at all."""
    deadline: float | None = None

    def prepare(self) -> None:
        """Load models (outside the timed section)."""

    async def rank(self, query: str, candidates: Sequence[Candidate]) -> ArmOutput:
        """The complete ranking of ``candidates`` (in BM25 order) for ``query``."""
        raise NotImplementedError

    def account(self, output: ArmOutput) -> None:
        """Fill in costs that are counted after the timed call (default: nothing to add)."""

    def settings(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "description": self.description,
            "llm_subset": self.llm_subset,
            "deadline_s": self.deadline,
        }


def _order_by(scores: Sequence[float | None]) -> list[int]:
    """Indices by score, highest first; missing scores last; ties keep the input order."""
    return sorted(
        range(len(scores)),
        key=lambda i: (-(s if (s := scores[i]) is not None else -math.inf), i),
    )


class RetrieverArm(Arm):
    name = "retriever"
    group = "first stage"
    description = "the retriever's own order (no rerank)"

    async def rank(self, query: str, candidates: Sequence[Candidate]) -> ArmOutput:
        return ArmOutput(ids=[c.id for c in candidates])


class DenseArm(Arm):
    """Orders all candidates by a dense scorer (bi-encoder cosine similarity)."""

    group = "first stage"

    def __init__(self, scorer: Scorer, *, name: str = "dense") -> None:
        self.scorer = scorer
        self.name = name
        self.description = (
            f"dense similarity over all candidates ({scorer.fingerprint}; document vectors "
            "from the index, the query embedded per request)"
        )

    def prepare(self) -> None:
        load = getattr(self.scorer, "load", None)
        if callable(load):
            load()

    async def rank(self, query: str, candidates: Sequence[Candidate]) -> ArmOutput:
        scores = await self.scorer.ascore(
            query, [c.text for c in candidates], deadline=Deadline.never()
        )
        return ArmOutput(ids=[candidates[i].id for i in _order_by(scores)])


class HybridArm(DenseArm):
    """Weighted reciprocal-rank fusion of the BM25 order and a dense scorer."""

    def __init__(self, scorer: Scorer, *, name: str = "hybrid", dense_weight: float = 0.5) -> None:
        super().__init__(scorer, name=name)
        self.fusion = Fusion("rrf", llm_weight=dense_weight)
        self.description = (
            f"RRF of BM25 and dense ({scorer.fingerprint}, {self.fusion.fingerprint})"
        )

    async def rank(self, query: str, candidates: Sequence[Candidate]) -> ArmOutput:
        dense = await self.scorer.ascore(
            query, [c.text for c in candidates], deadline=Deadline.never()
        )
        fused, _ = self.fusion.fuse([c.retrieval_score for c in candidates], dense)
        return ArmOutput(ids=[candidates[i].id for i in _order_by(fused)])


class _GeneratingArm(Arm):
    """A baseline that generates text with :class:`LocalGenerator` about the top ``subset``."""

    group = "generating baseline"

    def __init__(self, generator: LocalGenerator, *, subset: int) -> None:
        if subset < 1:
            raise ValueError(f"subset must be at least 1, got {subset}")
        self.generator = generator
        self.llm_subset = subset

    def prepare(self) -> None:
        self.generator.load()

    def settings(self) -> dict[str, Any]:
        return super().settings() | {
            "model": self.generator.name,
            "max_new_tokens": self.generator.max_new_tokens,
            "decoding": "greedy",
        }

    def _output(
        self, ids: list[str], before: Any, judged: int, reasons: list[str], **extra: Any
    ) -> ArmOutput:
        used = self.generator.stats.since(before)
        return ArmOutput(
            ids=ids,
            llm_calls=used.calls,
            prompt_tokens=used.prompt_tokens,
            completion_tokens=used.completion_tokens,
            llm_judged=judged,
            degraded=bool(reasons),
            reasons=tuple(reasons),
            extra=extra,
        )


class NaiveLLMArm(_GeneratingArm):
    name = "naive-llm"

    def __init__(
        self, generator: LocalGenerator, *, subset: int, prompt: str = NAIVE_PROMPT
    ) -> None:
        super().__init__(generator, subset=subset)
        self.prompt = prompt
        self.description = (
            f"verbose prompt, generated reasoning + 1-10 score parsed, one candidate at a time, "
            f"on the BM25 top {subset} only"
        )

    async def rank(self, query: str, candidates: Sequence[Candidate]) -> ArmOutput:
        before = self.generator.stats.snapshot()
        head, tail = list(candidates[: self.llm_subset]), list(candidates[self.llm_subset :])
        scores: list[float | None] = []
        for c in head:
            answer = self.generator.generate(self.prompt.format(query=query, text=c.text))
            scores.append(parse_score(answer))
        unparsed = sum(s is None for s in scores)
        # what a naive implementation does with an answer it cannot parse: score 0
        order = _order_by([0.0 if s is None else s for s in scores])
        ids = [head[i].id for i in order] + [c.id for c in tail]
        reasons = ["malformed_output"] if unparsed else []
        return self._output(ids, before, len(head), reasons, unparsed=unparsed)


class LlamaIndexArm(_GeneratingArm):
    name = "llamaindex-llmrerank"

    def __init__(
        self, generator: LocalGenerator, *, subset: int, choice_batch_size: int = 10
    ) -> None:
        super().__init__(generator, subset=subset)
        self.choice_batch_size = choice_batch_size
        self.description = (
            f"llama_index LLMRerank (choice_batch_size={choice_batch_size}) on the BM25 top "
            f"{subset}; its picks first, then the rest in BM25 order"
        )
        self._reranker: Any = None

    def prepare(self) -> None:
        super().prepare()
        from llama_index.core.postprocessor import LLMRerank

        from .frameworks import llamaindex_llm

        self._reranker = LLMRerank(
            llm=llamaindex_llm(self.generator),
            choice_batch_size=self.choice_batch_size,
            top_n=self.llm_subset or 10,
        )

    def settings(self) -> dict[str, Any]:
        return super().settings() | {"choice_batch_size": self.choice_batch_size}

    async def rank(self, query: str, candidates: Sequence[Candidate]) -> ArmOutput:
        from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

        if self._reranker is None:
            self.prepare()
        before = self.generator.stats.snapshot()
        head = list(candidates[: self.llm_subset])
        nodes = [
            NodeWithScore(node=TextNode(text=c.text, id_=c.id), score=c.retrieval_score)
            for c in head
        ]
        reasons: list[str] = []
        picked: list[str] = []
        try:
            result = self._reranker.postprocess_nodes(nodes, query_bundle=QueryBundle(query))
            picked = list(dict.fromkeys(n.node.node_id for n in result))
        except Exception as exc:  # the framework's own parsing failures
            reasons.append("backend_error")
            logger.info("LLMRerank failed (%s: %s); BM25 order kept", type(exc).__name__, exc)
        if not picked and not reasons:
            reasons.append("malformed_output")
        chosen = set(picked)
        ids = picked + [c.id for c in candidates if c.id not in chosen]
        return self._output(ids, before, len(head), reasons, picked=len(picked))


class LangChainFilterArm(_GeneratingArm):
    name = "langchain-llmfilter"

    def __init__(self, generator: LocalGenerator, *, subset: int) -> None:
        super().__init__(generator, subset=subset)
        self.description = (
            f"langchain_classic LLMChainFilter (YES/NO per document) on the BM25 top {subset}; "
            "kept documents first, then the rest in BM25 order"
        )
        self._filter: Any = None

    def prepare(self) -> None:
        super().prepare()
        from langchain_classic.retrievers.document_compressors import LLMChainFilter

        from .frameworks import langchain_llm

        self._filter = LLMChainFilter.from_llm(langchain_llm(self.generator))

    async def rank(self, query: str, candidates: Sequence[Candidate]) -> ArmOutput:
        from langchain_core.documents import Document

        if self._filter is None:
            self.prepare()
        before = self.generator.stats.snapshot()
        head = list(candidates[: self.llm_subset])
        docs = [Document(page_content=c.text, metadata={"id": c.id}) for c in head]
        reasons: list[str] = []
        kept: list[str] = []
        try:
            result = self._filter.compress_documents(docs, query)
            kept = [d.metadata["id"] for d in result]
        except Exception as exc:  # BooleanOutputParser rejects answers without YES/NO
            reasons.append("malformed_output")
            logger.info("LLMChainFilter failed (%s: %s); BM25 order kept", type(exc).__name__, exc)
        chosen = set(kept)
        ids = kept + [c.id for c in candidates if c.id not in chosen]
        return self._output(ids, before, len(head), reasons, kept=len(kept))


class MeteredScorer:
    """Wraps an LLM scorer and records what was sent, for calls and token counts per query.

    Token counting happens after the timed request (:meth:`take`), never inside it.
    """

    def __init__(self, inner: Scorer) -> None:
        self.inner = inner
        self.sent: list[tuple[str, list[str]]] = []

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    @property
    def batch_size(self) -> int:
        return scorer_batch_size(self.inner)

    @property
    def max_concurrency(self) -> int | None:
        limit = getattr(self.inner, "max_concurrency", None)
        return int(limit) if limit else None

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        self.sent.append((query, list(texts)))
        return await self.inner.ascore(query, texts, deadline=deadline)

    def take(self) -> list[tuple[str, list[str]]]:
        sent, self.sent = self.sent, []
        return sent


TokenCounter = Callable[[str, str], int]
"""(query, text) -> prompt tokens of one LLM-scored pair."""


class FunnelArm(Arm):
    """An llmrerank :class:`Funnel` with the fast stage users get (the default: the retriever's
    order fused with BM25 over the candidates), unless ``fast`` names another."""

    group = "llmrerank"

    def __init__(
        self,
        name: str,
        build: Callable[[Scorer | None, Scorer | None], Funnel],
        llm: Scorer | None,
        *,
        description: str,
        token_counter: TokenCounter | None = None,
        fast: Scorer | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self._fast = fast
        self._metered = MeteredScorer(llm) if llm is not None else None
        self.funnel = build(self._fast, self._metered)
        self.deadline = self.funnel.deadline
        self.llm_subset = self.funnel.k
        self.token_counter = token_counter
        self._tokens_before: int | None = None

    @property
    def counts_tokens(self) -> str:
        """How this arm's prompt tokens are counted."""
        if self._scorer_tokens() is not None:
            return "the LLM scorer's own count of prompt tokens run (stats.tokens)"
        return "token_counter" if self.token_counter is not None else "not counted"

    def prepare(self) -> None:
        inner = self._metered.inner if self._metered else None
        load = getattr(inner, "load", None)
        if callable(load):
            load()

    def settings(self) -> dict[str, Any]:
        f = self.funnel
        return super().settings() | {
            "funnel": repr(f),
            "k": f.k,
            "k_min": f.k_min,
            "k_max": f.k_max,
            "concurrency": f.concurrency,
            "fusion": f.fusion.fingerprint,
            "fast_scorer": f.fast.fingerprint,
        }

    def _scorer_tokens(self) -> int | None:
        """Prompt tokens the LLM scorer reports having run (``stats.tokens``), if it counts."""
        stats = getattr(self._metered.inner, "stats", None) if self._metered else None
        tokens = getattr(stats, "tokens", None)
        return tokens if isinstance(tokens, int) else None

    async def rank(self, query: str, candidates: Sequence[Candidate]) -> ArmOutput:
        self._tokens_before = self._scorer_tokens()
        ranking = await self.funnel.arerank(query, candidates)
        return ArmOutput(
            ids=ranking.ids,
            llm_judged=ranking.k,
            degraded=ranking.degraded,
            reasons=ranking.reasons,
            extra={"llm_scored": ranking.llm_scored},
        )

    def account(self, output: ArmOutput) -> None:
        """Fill in calls and tokens from what the metered scorer saw (after timing)."""
        if self._metered is None:
            return
        sent = self._metered.take()
        output.llm_calls = len(sent)
        now = self._scorer_tokens()
        if now is not None and self._tokens_before is not None:
            output.prompt_tokens = now - self._tokens_before
        elif self.token_counter is not None:
            output.prompt_tokens = sum(self.token_counter(q, t) for q, texts in sent for t in texts)


class LangChainAdapterArm(Arm):
    """What a LangChain user runs: ``ContextualCompressionRetriever(base_compressor=
    LLMRerankCompressor(preset=..., top_n=10), base_retriever=...)``. The base retriever hands
    the benchmark's candidates over as LangChain ``Document`` objects, in the retriever's order and
    without scores (as ``VectorStore.as_retriever()`` does); the adapter's top 10 come first, then
    the other candidates in the retriever's order."""

    group = "llmrerank"

    def __init__(self, preset: str, llm: Scorer | None, *, top_n: int = 10) -> None:
        self.name = f"langchain-{preset}"
        self.preset = preset
        self.top_n = top_n
        self.llm = llm
        self.deadline = None
        self.description = (
            f"ContextualCompressionRetriever(LLMRerankCompressor(preset={preset!r}, "
            f"top_n={top_n})) over a LangChain retriever (documents in the retriever's order)"
        )
        self._current: list[Candidate] = []
        self._retriever: Any = None

    def prepare(self) -> None:
        from langchain_classic.retrievers import ContextualCompressionRetriever
        from langchain_core.callbacks import CallbackManagerForRetrieverRun
        from langchain_core.documents import Document
        from langchain_core.retrievers import BaseRetriever

        from langchain_llmrerank import LLMRerankCompressor

        arm = self

        class _Candidates(BaseRetriever):
            def _get_relevant_documents(
                self, query: str, *, run_manager: CallbackManagerForRetrieverRun
            ) -> list[Document]:
                return [Document(page_content=c.text, metadata={"id": c.id}) for c in arm._current]

        kwargs: dict[str, Any] = {"preset": self.preset, "top_n": self.top_n}
        if self.llm is not None:
            kwargs["llm"] = self.llm
        compressor = LLMRerankCompressor(**kwargs)
        funnel = compressor.get_funnel()
        self.deadline = funnel.deadline
        self._retriever = ContextualCompressionRetriever(
            base_compressor=compressor, base_retriever=_Candidates()
        )
        load = getattr(funnel.llm, "load", None)
        if callable(load):
            load()

    async def rank(self, query: str, candidates: Sequence[Candidate]) -> ArmOutput:
        if self._retriever is None:
            self.prepare()
        self._current = list(candidates)
        docs = await self._retriever.ainvoke(query)
        top = [d.metadata["id"] for d in docs]
        prov = [d.metadata.get("llmrerank", {}) for d in docs]
        degraded = any(p.get("degraded") for p in prov)
        reasons = tuple(dict.fromkeys(r for p in prov for r in p.get("reasons", [])))
        chosen = set(top)
        ids = top + [c.id for c in candidates if c.id not in chosen]
        return ArmOutput(
            ids=ids,
            degraded=degraded,
            reasons=reasons,
            extra={"llm_scored_in_top": sum(1 for p in prov if p.get("stage") == "llm")},
        )
