"""The LangChain adapter end to end: a real MiniLM vector-store retriever over a real corpus,
reranked by the funnel inside ContextualCompressionRetriever, a DocumentCompressorPipeline and
LLMRerankRetriever; sync and async; degradation, copies, callbacks, the standard retriever suite."""

from __future__ import annotations

import asyncio
import copy
import functools
import threading
import time
from typing import Any
from uuid import UUID

import pytest

pytest.importorskip("langchain_core")

from adapter_support import (
    CORPUS,
    QUERIES,
    LoopRecorder,
    overlap_scorer,
    requires_local_llm,
    shared_llm_funnel,
)
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from langchain_core.vectorstores import InMemoryVectorStore
from llmrerank import Funnel
from llmrerank.errors import ConfigError
from llmrerank.testing import ScriptedScorer

from langchain_llmrerank import LLMRerankCompressor, LLMRerankRetriever

PROVENANCE_FIELDS = {
    "rank",
    "score",
    "relevance_score",
    "stage",
    "fast_score",
    "llm_score",
    "cached",
    "degraded",
    "reasons",
    "funnel",
}


class MiniLMEmbeddings(Embeddings):
    """LangChain embeddings over a loaded sentence-transformers model."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors = self.model.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        return [[float(x) for x in v] for v in vectors]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


def corpus_documents() -> list[Document]:
    return [
        Document(page_content=text, metadata={"topic": topic, "source": {"file": f"{topic}.txt"}})
        for topic, text in CORPUS.items()
    ]


@functools.cache
def _store() -> InMemoryVectorStore:
    import sentence_transformers
    from llmrerank.models import minilm_path

    model = sentence_transformers.SentenceTransformer(str(minilm_path()), device="cpu")
    store = InMemoryVectorStore(embedding=MiniLMEmbeddings(model))
    store.add_documents(corpus_documents())
    return store


@pytest.fixture(scope="module")
def base_retriever(minilm: Any) -> BaseRetriever:
    """The dense retriever: the 10 nearest paragraphs by MiniLM cosine similarity."""
    return _store().as_retriever(search_kwargs={"k": 10})


def compression_retriever(base: BaseRetriever, compressor: LLMRerankCompressor) -> Any:
    from langchain_classic.retrievers import ContextualCompressionRetriever

    return ContextualCompressionRetriever(base_compressor=compressor, base_retriever=base)


def check_results(docs: list[Document], top_n: int, *, degraded: bool) -> None:
    """What every reranked result list must satisfy."""
    assert len(docs) == top_n
    scores = [d.metadata["relevance_score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    for rank, doc in enumerate(docs):
        record = doc.metadata["llmrerank"]
        assert set(record) == PROVENANCE_FIELDS
        # relevance_score: the calibrated probability; record["score"]: the raw fused score
        assert record["relevance_score"] == doc.metadata["relevance_score"]
        assert 0.0 <= doc.metadata["relevance_score"] <= 1.0
        assert record["rank"] == rank
        assert record["degraded"] is degraded
        assert doc.page_content == CORPUS[doc.metadata["topic"]]


# ---------------------------------------------------------------------- with a scripted LLM stage


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_contextual_compression_retriever(base_retriever: BaseRetriever, mode: str) -> None:
    recorder = LoopRecorder()
    compressor = LLMRerankCompressor(llm=ScriptedScorer(recorder), top_n=3, k=5)
    retriever = compression_retriever(base_retriever, compressor)
    query = "What causes the tides in the ocean?"
    if mode == "sync":
        docs = retriever.invoke(query)
    else:
        docs = await retriever.ainvoke(query)
        # native async: the LLM stage ran on this test's loop, not on a worker thread's loop
        assert recorder.loops == {id(asyncio.get_running_loop())}
        assert recorder.threads == {threading.get_ident()}
    check_results(docs, 3, degraded=False)
    assert docs[0].metadata["topic"] == "tides"
    llm_scored = [d for d in docs if d.metadata["llmrerank"]["stage"] == "llm"]
    assert llm_scored and all(d.metadata["llmrerank"]["llm_score"] is not None for d in llm_scored)
    assert all(d.metadata["llmrerank"]["fast_score"] is not None for d in docs)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_degradation_visible(base_retriever: BaseRetriever, mode: str) -> None:
    """An LLM stage slower than the deadline: the fast order, top_n documents, flagged."""
    slow = overlap_scorer(latency=3.0)
    compressor = Funnel(llm=slow, k=5, deadline=0.3).as_langchain_compressor(top_n=4)
    retriever = compression_retriever(base_retriever, compressor)
    query = "Why does bread dough rise?"
    t0 = time.monotonic()
    docs = retriever.invoke(query) if mode == "sync" else await retriever.ainvoke(query)
    elapsed = time.monotonic() - t0
    check_results(docs, 4, degraded=True)
    assert elapsed < 2.5  # the deadline is 0.3 s; the scorer would take 3 s
    for doc in docs:
        record = doc.metadata["llmrerank"]
        assert record["reasons"] == ["deadline"]
        assert record["stage"] == "fast"
        assert record["llm_score"] is None
    assert docs[0].metadata["topic"] == "bread"  # BM25 alone still finds it
    assert slow.cancelled >= 1  # the pending LLM calls were cancelled, not left running


async def test_documents_are_copies() -> None:
    docs = corpus_documents()
    before = copy.deepcopy(docs)
    compressor = LLMRerankCompressor(llm=overlap_scorer(), top_n=5)
    out = list(compressor.compress_documents(docs, "what is chlorophyll in plant leaves"))
    out += list(await compressor.acompress_documents(docs, "how do glaciers carve valleys"))
    assert docs == before  # contents, metadata included, unchanged
    for doc in docs:
        assert "relevance_score" not in doc.metadata and "llmrerank" not in doc.metadata
    originals = {id(d) for d in docs} | {id(d.metadata) for d in docs}
    originals |= {id(d.metadata["source"]) for d in docs}
    for doc in out:
        assert id(doc) not in originals
        assert id(doc.metadata) not in originals
        assert id(doc.metadata["source"]) not in originals  # deep-copied
    assert out[0].metadata["topic"] == "chlorophyll"
    assert out[5].metadata["topic"] == "glaciers"


async def test_document_compressor_pipeline() -> None:
    from langchain_classic.retrievers.document_compressors import DocumentCompressorPipeline
    from langchain_text_splitters import CharacterTextSplitter

    pipeline = DocumentCompressorPipeline(
        transformers=[
            CharacterTextSplitter(separator=", ", chunk_size=80, chunk_overlap=0),
            LLMRerankCompressor(llm=overlap_scorer(), top_n=2),
        ]
    )
    docs = corpus_documents()
    query = "which pigment absorbs red and blue light"
    for out in (
        pipeline.compress_documents(docs, query),
        await pipeline.acompress_documents(docs, query),
    ):
        out = list(out)
        assert len(out) == 2
        assert out[0].metadata["topic"] == "chlorophyll"
        assert len(out[0].page_content) < len(CORPUS["chlorophyll"])  # a chunk, not the paragraph
        assert out[0].metadata["relevance_score"] >= out[1].metadata["relevance_score"]


def test_score_threshold_and_top_n_none() -> None:
    docs = corpus_documents()
    query = "how to read a text file line by line in python"
    every = LLMRerankCompressor(llm=overlap_scorer(), top_n=None).compress_documents(docs, query)
    assert len(every) == len(docs)  # top_n=None: all, reranked
    assert {d.metadata["topic"] for d in every} == set(CORPUS)
    threshold = every[2].metadata["relevance_score"]
    kept = LLMRerankCompressor(
        llm=overlap_scorer(), top_n=None, score_threshold=threshold
    ).compress_documents(docs, query)
    assert 3 <= len(kept) < len(docs)
    assert all(d.metadata["relevance_score"] >= threshold for d in kept)
    assert [d.metadata["topic"] for d in kept] == [d.metadata["topic"] for d in every][: len(kept)]


@pytest.mark.parametrize("threshold", [1.5, -0.1, float("nan")])
def test_score_threshold_is_a_probability(threshold: float) -> None:
    compressor = LLMRerankCompressor(llm=overlap_scorer(), score_threshold=threshold)
    with pytest.raises(ConfigError, match=r"within \[0, 1\]"):
        compressor.compress_documents(corpus_documents(), "python files")


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.starts: list[tuple[str | None, UUID, UUID | None, Any]] = []
        self.ends: list[tuple[UUID, Any]] = []
        self.retriever_runs: list[UUID] = []

    def on_retriever_start(self, serialized: Any, query: str, *, run_id: UUID, **kw: Any) -> None:
        self.retriever_runs.append(run_id)

    def on_chain_start(
        self,
        serialized: Any,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kw: Any,
    ) -> None:
        self.starts.append((kw.get("name"), run_id, parent_run_id, inputs))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kw: Any) -> None:
        self.ends.append((run_id, outputs))


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_callbacks_passed_on(base_retriever: BaseRetriever, mode: str) -> None:
    recorder = Recorder()
    compressor = LLMRerankCompressor(llm=overlap_scorer(), top_n=2)
    retriever = compression_retriever(base_retriever, compressor)
    config: Any = {"callbacks": [recorder]}
    query = "What causes the tides in the ocean?"
    if mode == "sync":
        docs = retriever.invoke(query, config=config)
    else:
        docs = await retriever.ainvoke(query, config=config)
    ours = [s for s in recorder.starts if s[0] == "LLMRerankCompressor"]
    assert len(ours) == 1
    _, run_id, parent, inputs = ours[0]
    assert parent == recorder.retriever_runs[0]  # a child of the retriever's run
    assert inputs == {"query": query, "documents": 10}
    (outputs,) = [out for rid, out in recorder.ends if rid == run_id]
    assert outputs["documents"] == docs
    assert outputs["ranking"]["degraded"] is False
    assert outputs["ranking"]["funnel"] == "enterprise"


def test_configuration_errors() -> None:
    with pytest.raises(ValueError, match="either funnel= or preset="):
        LLMRerankCompressor(funnel=Funnel(), preset="realtime")
    with pytest.raises(ValueError, match="either funnel= or llm="):
        LLMRerankCompressor(funnel=Funnel(), llm=None)
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        LLMRerankCompressor(preset="fast")
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        LLMRerankCompressor(topn=3)
    with pytest.raises(ValueError, match="top_n"):
        LLMRerankCompressor(top_n=0)
    with pytest.raises(ValueError, match="deadline"):
        LLMRerankCompressor(deadline=0)
    with pytest.raises(ValueError, match="llm"):
        LLMRerankCompressor(llm="gpt")
    # InputError from the funnel reaches the caller unchanged
    with pytest.raises(ValueError, match="query is empty"):
        LLMRerankCompressor(llm=None).compress_documents(corpus_documents(), "  ")
    assert issubclass(ConfigError, ValueError)


def test_built_lazily_and_from_funnel() -> None:
    compressor = LLMRerankCompressor(preset="realtime", llm=None)
    assert not compressor._lazy.built  # constructing loads nothing
    assert compressor.compress_documents([], "anything") == []
    funnel = compressor.get_funnel()
    assert funnel.name == "realtime" and funnel.llm is None and funnel.deadline == 0.5
    assert compressor.get_funnel() is funnel
    given = Funnel(llm=None, name="mine")
    via = given.as_langchain_compressor(top_n=7)
    assert isinstance(via, LLMRerankCompressor)
    assert via.get_funnel() is given and via.top_n == 7
    assert "funnel" not in via.model_dump()  # arbitrary objects stay out of serialisation


# ---------------------------------------------------------------------- with the embedded LLM


@pytest.mark.slow
@requires_local_llm
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_real_funnel_with_embedded_llm(
    base_retriever: BaseRetriever, llm_funnel: Funnel, mode: str
) -> None:
    retriever = compression_retriever(base_retriever, llm_funnel.as_langchain_compressor(top_n=3))
    for query, topic in list(QUERIES.items())[:2]:
        docs = retriever.invoke(query) if mode == "sync" else await retriever.ainvoke(query)
        check_results(docs, 3, degraded=False)
        assert topic in [d.metadata["topic"] for d in docs]
        assert [d.metadata["llmrerank"]["stage"] for d in docs] == ["llm"] * 3
        assert all(d.metadata["llmrerank"]["llm_score"] is not None for d in docs)


# ---------------------------------------------------------------------- the standard suite

from langchain_tests.integration_tests import RetrieversIntegrationTests  # noqa: E402


class TestLLMRerankRetrieverStandard(RetrieversIntegrationTests):
    """langchain-tests' retriever suite over LLMRerankRetriever (MiniLM retriever + funnel)."""

    @property
    def retriever_constructor(self) -> type[LLMRerankRetriever]:
        return LLMRerankRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {
            "base_retriever": _store().as_retriever(search_kwargs={"k": 8}),
            "reranker": LLMRerankCompressor(llm=overlap_scorer(), k=5),
        }

    @property
    def retriever_query_example(self) -> str:
        return "How do plants turn sunlight into chemical energy?"


@pytest.mark.slow
@requires_local_llm
class TestLLMRerankRetrieverStandardEmbeddedLLM(TestLLMRerankRetrieverStandard):
    """The same suite with the embedded LLM as the second stage (LLM window 3)."""

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {
            "base_retriever": _store().as_retriever(search_kwargs={"k": 6}),
            "reranker": LLMRerankCompressor(funnel=shared_llm_funnel()),
        }


def test_the_documents_order_and_metadata_scores_reach_the_fast_stage() -> None:
    from langchain_llmrerank import with_retrieval_scores

    # no document holds a query term: BM25 has no signal, an equal LLM adds none, so the
    # retriever's order must come back as it went in
    docs = [Document(page_content=f"filler text number {i}") for i in range(6)]
    flat = ScriptedScorer(lambda q, t: 0.5)
    compressor = LLMRerankCompressor(llm=flat, top_n=None)
    out = compressor.compress_documents(docs, "kitten")
    assert [d.page_content for d in out] == [d.page_content for d in docs]
    assert all(d.metadata["llmrerank"]["stage"] == "llm" for d in out[:5])

    # scores from similarity_search_with_relevance_scores: they decide over the position
    pairs = [(d, float(i)) for i, d in enumerate(docs)]  # ascending: the last is the best
    scored = with_retrieval_scores(pairs)
    assert (
        scored[0].metadata["retrieval_score"] == 0.0 and "retrieval_score" not in docs[0].metadata
    )
    out = LLMRerankCompressor(llm=None, top_n=None).compress_documents(scored, "kitten")
    assert [d.page_content for d in out] == [d.page_content for d in reversed(docs)]

    # a key only some documents carry is not used; the order stands
    partial = [
        d.model_copy(update={"metadata": {"score": 9.0}}) if i == 5 else d
        for i, d in enumerate(docs)
    ]
    out = LLMRerankCompressor(llm=None, top_n=2).compress_documents(partial, "kitten")
    assert [d.page_content for d in out] == [docs[0].page_content, docs[1].page_content]

    # input_ranked=False: the order carries no meaning, BM25 decides
    bag = [
        Document(page_content="dogs"),
        Document(page_content="birds"),
        Document(page_content="a kitten"),
    ]
    out = LLMRerankCompressor(llm=None, top_n=1, input_ranked=False).compress_documents(
        bag, "kitten"
    )
    assert out[0].page_content == "a kitten"
