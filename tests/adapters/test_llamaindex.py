"""The LlamaIndex adapter end to end: a real VectorStoreIndex (MiniLM embeddings) over a real
corpus, a RetrieverQueryEngine whose synthesis needs no network LLM, the postprocessor in place;
sync and async; instrumentation and callback events; degradation; copies."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from typing import Any

import pytest

pytest.importorskip("llama_index.core")

from adapter_support import (
    CORPUS,
    QUERIES,
    LoopRecorder,
    overlap_scorer,
    requires_local_llm,
)
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.response_synthesizers.no_text import NoText
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode
from llmrerank import Funnel
from llmrerank.errors import InputError
from llmrerank.testing import ScriptedScorer

from llamaindex_llmrerank import LLMRerankPostprocessor


class MiniLMEmbedding(BaseEmbedding):
    """A LlamaIndex embedding over a loaded sentence-transformers model."""

    _model: Any = PrivateAttr()

    def __init__(self, model: Any) -> None:
        super().__init__(model_name="all-MiniLM-L6-v2", embed_batch_size=32)
        self._model = model

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return [[float(x) for x in v] for v in vectors]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encode([query])[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encode([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encode(texts)


def corpus_nodes() -> list[TextNode]:
    return [
        TextNode(
            text=text,
            id_=topic,
            metadata={"topic": topic, "source": {"file": f"{topic}.txt"}},
            excluded_embed_metadata_keys=["topic", "source"],
            excluded_llm_metadata_keys=["source"],
        )
        for topic, text in CORPUS.items()
    ]


@pytest.fixture(scope="module")
def index(minilm: Any) -> VectorStoreIndex:
    return VectorStoreIndex(corpus_nodes(), embed_model=MiniLMEmbedding(minilm))


def query_engine(
    index: VectorStoreIndex, postprocessor: LLMRerankPostprocessor, cm: CallbackManager
) -> RetrieverQueryEngine:
    # NoText synthesis: the engine retrieves and postprocesses, no LLM writes an answer (the
    # MockLLM only keeps LlamaIndex from resolving its default OpenAI LLM)
    return RetrieverQueryEngine(
        index.as_retriever(similarity_top_k=10),
        response_synthesizer=NoText(llm=MockLLM(), callback_manager=cm),
        node_postprocessors=[postprocessor],
        callback_manager=cm,
    )


class EventLog(BaseEventHandler):
    """Collects the instrumentation events of reranking."""

    events: list[BaseEvent]

    @classmethod
    def class_name(cls) -> str:
        return "EventLog"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, (ReRankStartEvent, ReRankEndEvent)):
            self.events.append(event)


@pytest.fixture
def event_log() -> Any:
    root = get_dispatcher()
    log = EventLog(events=[])
    root.add_event_handler(log)
    yield log
    root.event_handlers.remove(log)


def check_nodes(nodes: list[NodeWithScore], top_n: int, *, degraded: bool) -> None:
    assert len(nodes) == top_n
    scores = [n.score for n in nodes]
    assert all(isinstance(s, float) for s in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    for rank, n in enumerate(nodes):
        record = n.node.metadata["llmrerank"]
        # the node score is the calibrated probability; record["score"] the raw fused score
        assert record["rank"] == rank and record["relevance_score"] == n.score
        assert n.score is not None and 0.0 <= n.score <= 1.0
        assert record["degraded"] is degraded
        assert isinstance(n.node.metadata["retrieval_score"], float)  # the similarity kept
        # our keys stay out of the text the LLM and the embedder see
        for mode in (MetadataMode.LLM, MetadataMode.EMBED):
            content = n.node.get_content(metadata_mode=mode)
            assert "llmrerank" not in content and "retrieval_score" not in content


# ---------------------------------------------------------------------- with a scripted LLM stage


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_query_engine(index: VectorStoreIndex, event_log: Any, mode: str) -> None:
    recorder = LoopRecorder()
    debug = LlamaDebugHandler()
    postprocessor = LLMRerankPostprocessor(llm=ScriptedScorer(recorder), top_n=3, k=5)
    engine = query_engine(index, postprocessor, CallbackManager([debug]))
    query = "What causes the tides in the ocean?"
    if mode == "sync":
        response = engine.query(query)
    else:
        response = await engine.aquery(query)
        assert recorder.loops == {id(asyncio.get_running_loop())}  # native async, no thread
        assert recorder.threads == {threading.get_ident()}
    nodes = response.source_nodes
    check_nodes(nodes, 3, degraded=False)
    assert nodes[0].node.node_id == "tides"
    assert nodes[0].node.metadata["llmrerank"]["stage"] == "llm"

    # instrumentation: one start with the 10 retrieved nodes, one end with what came back
    start, end = event_log.events
    assert isinstance(start, ReRankStartEvent) and isinstance(end, ReRankEndEvent)
    assert len(start.nodes) == 10 and start.top_n == 3
    assert start.model_name == "llmrerank/enterprise/scripted:scripted"
    assert [n.node.node_id for n in end.nodes] == [n.node.node_id for n in nodes]
    # the callback manager's RERANKING event, with the same payloads
    (pair,) = debug.get_event_pairs(CBEventType.RERANKING)
    assert pair[0].payload is not None and pair[1].payload is not None
    assert pair[0].payload[EventPayload.QUERY_STR] == query
    assert pair[0].payload[EventPayload.TOP_K] == 3
    assert [n.node.node_id for n in pair[1].payload[EventPayload.NODES]] == [
        n.node.node_id for n in nodes
    ]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_degradation_visible(index: VectorStoreIndex, mode: str) -> None:
    slow = overlap_scorer(latency=3.0)
    postprocessor = Funnel(llm=slow, k=5, deadline=0.3).as_llamaindex_postprocessor(top_n=4)
    engine = query_engine(index, postprocessor, CallbackManager())
    query = "Why does bread dough rise?"
    t0 = time.monotonic()
    response = engine.query(query) if mode == "sync" else await engine.aquery(query)
    elapsed = time.monotonic() - t0
    nodes = response.source_nodes
    check_nodes(nodes, 4, degraded=True)
    assert elapsed < 2.5  # the deadline is 0.3 s; the scorer would take 3 s
    for n in nodes:
        record = n.node.metadata["llmrerank"]
        assert record["reasons"] == ["deadline"]
        assert record["stage"] == "fast" and record["llm_score"] is None
    assert nodes[0].node.node_id == "bread"
    assert slow.cancelled >= 1


async def test_nodes_are_copies() -> None:
    nodes = [NodeWithScore(node=n, score=0.5 - i / 100) for i, n in enumerate(corpus_nodes())]

    def snapshot() -> list[Any]:
        return [
            (
                n.score,
                copy.deepcopy(n.node.metadata),
                list(n.node.excluded_llm_metadata_keys),
                list(n.node.excluded_embed_metadata_keys),
                n.node.get_content(),
            )
            for n in nodes
        ]

    before = snapshot()
    postprocessor = LLMRerankPostprocessor(llm=overlap_scorer(), top_n=5)
    out = postprocessor.postprocess_nodes(nodes, query_str="how do glaciers carve valleys")
    out += await postprocessor.apostprocess_nodes(
        nodes, query_str="what is chlorophyll in plant leaves"
    )
    assert snapshot() == before
    originals = {id(n) for n in nodes} | {id(n.node) for n in nodes}
    originals |= {id(n.node.metadata) for n in nodes} | {
        id(n.node.metadata["source"]) for n in nodes
    }
    for n in out:
        assert (
            not {id(n), id(n.node), id(n.node.metadata), id(n.node.metadata["source"])} & originals
        )
    assert out[0].node.node_id == "glaciers" and out[5].node.node_id == "chlorophyll"
    assert out[0].node.metadata["retrieval_score"] == nodes[18].score  # glaciers was 19th


def test_top_n_none_keeps_all_and_no_query_is_an_error() -> None:
    nodes = [NodeWithScore(node=n, score=None) for n in corpus_nodes()]
    # the corpus is a bag of paragraphs, not a retriever's ranking: say so
    postprocessor = LLMRerankPostprocessor(llm=None, top_n=None, input_ranked=False)
    out = postprocessor.postprocess_nodes(nodes, query_str="why does bread dough rise")
    assert sorted(n.node.node_id for n in out) == sorted(CORPUS)
    assert out[0].node.node_id == "bread"
    assert all(n.node.metadata["llmrerank"]["stage"] == "fast" for n in out)
    with pytest.raises(InputError, match="needs the query"):
        postprocessor.postprocess_nodes(nodes)
    assert postprocessor.postprocess_nodes([], query_bundle=QueryBundle("anything")) == []


def test_configuration() -> None:
    with pytest.raises(ValueError, match="either funnel= or preset="):
        LLMRerankPostprocessor(funnel=Funnel(), preset="realtime")
    with pytest.raises(ValueError, match="unknown preset"):
        LLMRerankPostprocessor(preset="fastest")
    with pytest.raises(ValueError, match="top_n"):
        LLMRerankPostprocessor(top_n=0)
    with pytest.raises(TypeError):
        LLMRerankPostprocessor(topn=3)  # type: ignore[call-arg]
    postprocessor = LLMRerankPostprocessor(preset="research", llm=None, top_n=4)
    assert not postprocessor._lazy.built
    assert postprocessor.to_dict() == {
        "top_n": 4,
        "preset": "research",
        "k": None,
        "deadline": None,
        "input_ranked": True,
        "class_name": "LLMRerankPostprocessor",
    }
    assert postprocessor.get_funnel().name == "research"
    given = Funnel(llm=None, name="mine")
    via = given.as_llamaindex_postprocessor(top_n=2)
    assert isinstance(via, LLMRerankPostprocessor)
    assert via.get_funnel() is given and via.preset == "mine"


# ---------------------------------------------------------------------- with the embedded LLM


@pytest.mark.slow
@requires_local_llm
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_query_engine_with_embedded_llm(
    index: VectorStoreIndex, llm_funnel: Funnel, event_log: Any, mode: str
) -> None:
    engine = query_engine(index, llm_funnel.as_llamaindex_postprocessor(top_n=3), CallbackManager())
    query, topic = list(QUERIES.items())[2]
    response = engine.query(query) if mode == "sync" else await engine.aquery(query)
    nodes = response.source_nodes
    check_nodes(nodes, 3, degraded=False)
    assert topic in [n.node.node_id for n in nodes]
    assert all(n.node.metadata["llmrerank"]["stage"] == "llm" for n in nodes)
    assert [type(e) for e in event_log.events] == [ReRankStartEvent, ReRankEndEvent]


def test_node_scores_and_order_reach_the_fast_stage() -> None:
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llmrerank.testing import ScriptedScorer

    from llamaindex_llmrerank import LLMRerankPostprocessor

    nodes = [
        NodeWithScore(node=TextNode(text=f"filler text number {i}"), score=None) for i in range(6)
    ]
    flat = ScriptedScorer(lambda q, t: 0.5)
    out = LLMRerankPostprocessor(llm=flat, top_n=None).postprocess_nodes(
        nodes, query_bundle=QueryBundle("kitten")
    )
    assert [n.node.get_content() for n in out] == [n.node.get_content() for n in nodes]
    # NodeWithScore.score (every node has one) is the retriever's ranking: ascending here
    scored = [NodeWithScore(node=n.node, score=float(i)) for i, n in enumerate(nodes)]
    out = LLMRerankPostprocessor(llm=None, top_n=None).postprocess_nodes(
        scored, query_bundle=QueryBundle("kitten")
    )
    assert [n.node.get_content() for n in out] == [n.node.get_content() for n in reversed(nodes)]
