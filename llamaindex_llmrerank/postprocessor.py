"""``LLMRerankPostprocessor``: the llmrerank funnel as a LlamaIndex node postprocessor."""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from llmrerank._adapters import (
    DEFAULT_PRESET,
    PROVENANCE_KEY,
    LazyFunnel,
    provenance,
    select,
    validate_top_n,
)
from llmrerank.errors import InputError
from llmrerank.funnel import Funnel
from llmrerank.presets import Preset
from llmrerank.scorers.base import Scorer
from llmrerank.types import Candidate, Ranking

__all__ = ["RETRIEVAL_SCORE_KEY", "LLMRerankPostprocessor"]

RETRIEVAL_SCORE_KEY = "retrieval_score"
"""The metadata key of the retriever's score (LlamaIndex's ``keep_retrieval_score`` convention)."""

dispatcher = get_dispatcher(__name__)


class LLMRerankPostprocessor(BaseNodePostprocessor):
    """Rerank nodes with the llmrerank funnel: a fast stage on every node, an LLM on the top
    ``k``, a hard deadline after which the fast-stage order fills in (flagged, never dropped).

    Returns copies of the best ``top_n`` nodes, best first, with ``score`` set to the relevance
    score (an estimated probability in [0, 1], see ``llmrerank.calibration``; the raw fused score
    is ``metadata["llmrerank"]["score"]``).
    Each copy's metadata (deep-copied) keeps the retriever's score as ``retrieval_score`` and the
    provenance as ``llmrerank`` (``rank``, ``score``, ``stage``, ``fast_score``, ``llm_score``,
    ``cached``, ``degraded``, ``reasons``, ``funnel``); both keys are excluded from the text the
    LLM and the embedder see. The caller's nodes are not changed. The text scored is
    ``node.get_content(metadata_mode=MetadataMode.EMBED)``.

    Emits ``ReRankStartEvent``/``ReRankEndEvent`` through the instrumentation dispatcher and a
    ``RERANKING`` event through ``callback_manager``.

    Args:
        top_n: how many nodes to return; ``None`` returns every node, reranked.
        preset: the scenario preset the funnel is built from (on first use).
        fast: the first-stage scorer (default: the preset's, BM25).
        llm: the LLM scorer; ``"default"`` is the embedded CPU model, ``None`` for none.
        funnel: a ready :class:`~llmrerank.Funnel`, instead of ``preset``/``fast``/``llm``.
        k: how many nodes the LLM scores per request (``None``: the funnel's setting).
        deadline: seconds per request (``None``: the funnel's deadline).
        callback_manager: receives the ``RERANKING`` event.

    Example:
        .. code-block:: python

            engine = index.as_query_engine(
                similarity_top_k=50,
                node_postprocessors=[LLMRerankPostprocessor(preset="enterprise", top_n=5)],
            )
    """

    top_n: int | None = Field(
        default=3, ge=1, description="How many nodes to return, best first (None: all)."
    )
    preset: str = Field(
        default=DEFAULT_PRESET,
        description="The preset the funnel is built from: realtime, enterprise or research.",
    )
    k: int | None = Field(
        default=None, ge=0, description="Nodes the LLM scores per request (None: the funnel's)."
    )
    deadline: float | None = Field(
        default=None, gt=0, description="Seconds per request (None: the funnel's deadline)."
    )
    input_ranked: bool = Field(
        default=True,
        description="The nodes arrive in their retriever's ranking, best first: the fast stage "
        "fuses that order (and NodeWithScore.score when every node has one) with BM25 over the "
        "nodes. False when their order carries no meaning.",
    )

    _lazy: LazyFunnel = PrivateAttr()

    def __init__(
        self,
        *,
        top_n: int | None = 3,
        preset: str | Preset | None = None,
        fast: Scorer | None = None,
        llm: Scorer | Literal["default"] | None = "default",
        funnel: Funnel | None = None,
        k: int | None = None,
        deadline: float | None = None,
        input_ranked: bool = True,
        callback_manager: CallbackManager | None = None,
    ) -> None:
        lazy = LazyFunnel(
            funnel=funnel,
            preset=preset if preset is not None else DEFAULT_PRESET,
            fast=fast,
            llm=llm,
            preset_given=preset is not None,
        )
        preset_name = preset.name if isinstance(preset, Preset) else preset
        super().__init__(  # type: ignore[call-arg]  # pydantic fields, unseen without its plugin
            top_n=top_n,
            preset=preset_name or (funnel.name if funnel is not None else DEFAULT_PRESET),
            k=k,
            deadline=deadline,
            input_ranked=input_ranked,
            callback_manager=callback_manager or CallbackManager(),
        )
        self._lazy = lazy

    @classmethod
    def class_name(cls) -> str:
        return "LLMRerankPostprocessor"

    def get_funnel(self) -> Funnel:
        """The funnel this postprocessor runs (built from the preset on first use)."""
        return self._lazy.get()

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query = _query(query_bundle)
        funnel = self.get_funnel()
        self._start_event(funnel, nodes, query_bundle)
        with self.callback_manager.event(
            CBEventType.RERANKING, payload=self._payload(funnel, nodes, query)
        ) as event:
            ranking = (
                funnel.rerank(
                    query,
                    _candidates(nodes),
                    k=self.k,
                    deadline=self.deadline,
                    input_ranked=self.input_ranked,
                )
                if nodes
                else None
            )
            out = self._results(nodes, ranking)
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    async def _apostprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        query = _query(query_bundle)
        funnel = self.get_funnel()
        self._start_event(funnel, nodes, query_bundle)
        with self.callback_manager.event(
            CBEventType.RERANKING, payload=self._payload(funnel, nodes, query)
        ) as event:
            ranking = (
                await funnel.arerank(
                    query,
                    _candidates(nodes),
                    k=self.k,
                    deadline=self.deadline,
                    input_ranked=self.input_ranked,
                )
                if nodes
                else None
            )
            out = self._results(nodes, ranking)
            event.on_end(payload={EventPayload.NODES: out})
        dispatcher.event(ReRankEndEvent(nodes=out))
        return out

    # ------------------------------------------------------------------ helpers

    def _start_event(
        self, funnel: Funnel, nodes: list[NodeWithScore], query_bundle: QueryBundle | None
    ) -> None:
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle,
                nodes=nodes,
                top_n=self.top_n if self.top_n is not None else len(nodes),
                model_name=_model_name(funnel),
            )
        )

    def _payload(self, funnel: Funnel, nodes: list[NodeWithScore], query: str) -> dict[str, Any]:
        return {
            EventPayload.NODES: nodes,
            EventPayload.MODEL_NAME: _model_name(funnel),
            EventPayload.QUERY_STR: query,
            EventPayload.TOP_K: self.top_n if self.top_n is not None else len(nodes),
        }

    def _results(self, nodes: list[NodeWithScore], ranking: Ranking | None) -> list[NodeWithScore]:
        if ranking is None:
            return []
        validate_top_n(self.top_n)
        out = []
        for result, relevance in select(ranking, self.top_n):
            original = nodes[int(result.id)]
            metadata = copy.deepcopy(original.node.metadata)
            metadata[RETRIEVAL_SCORE_KEY] = original.score
            metadata[PROVENANCE_KEY] = provenance(result, ranking, relevance)
            node = original.node.model_copy(
                update={
                    "metadata": metadata,
                    "excluded_llm_metadata_keys": _with_ours(
                        original.node.excluded_llm_metadata_keys
                    ),
                    "excluded_embed_metadata_keys": _with_ours(
                        original.node.excluded_embed_metadata_keys
                    ),
                }
            )
            out.append(NodeWithScore(node=node, score=relevance))
        return out


def _query(query_bundle: QueryBundle | None) -> str:
    if query_bundle is None:
        raise InputError(
            "LLMRerankPostprocessor needs the query: pass query_bundle or query_str to "
            "postprocess_nodes"
        )
    return query_bundle.query_str


def _candidates(nodes: list[NodeWithScore]) -> list[Candidate]:
    # Positions are the ids: the same node can come back twice from fused retrievers.
    return [
        Candidate(
            id=str(i),
            text=n.node.get_content(metadata_mode=MetadataMode.EMBED),
            retrieval_score=n.score if n.score is not None and math.isfinite(n.score) else None,
        )
        for i, n in enumerate(nodes)
    ]


def _model_name(funnel: Funnel) -> str:
    stage = funnel.llm if funnel.llm is not None else funnel.fast
    return f"llmrerank/{funnel.name}/{stage.fingerprint}"


def _with_ours(keys: list[str]) -> list[str]:
    return [*keys, *(k for k in (RETRIEVAL_SCORE_KEY, PROVENANCE_KEY) if k not in keys)]
