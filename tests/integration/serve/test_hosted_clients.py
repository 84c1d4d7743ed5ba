"""The clients of hosted rerank APIs, unchanged but for their base URL, against ``llmrerank
serve`` on 127.0.0.1: Cohere's SDK (v2 and v1 clients), langchain-cohere, and LlamaIndex's Cohere,
TEI and Jina postprocessors. Each must get llmrerank's order and its [0, 1] relevance scores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from llmrerank import Funnel
from llmrerank.calibration import relevance_scores
from llmrerank.testing import ScriptedScorer

ServeFactory = Callable[..., Any]

pytestmark = pytest.mark.integration

DOCS = [
    "Washington, D.C. is the capital of the United States.",
    "Carson City is the capital city of the American state of Nevada.",
    "Capital punishment has existed in the United States since before it was a country.",
    "The Commonwealth of the Northern Mariana Islands is a group of islands; its capital is Saipan.",
    "Bananas are yellow.",
]
QUERY = "What is the capital of the United States?"


def _overlap(query: str, text: str) -> float:
    """A scripted LLM: the share of query words in the text, shorter texts breaking ties."""
    q = {w.strip("?.,").lower() for w in query.split()}
    t = {w.strip("?.,").lower() for w in text.split()}
    return len(q & t) / len(q) - len(text) / 10_000


def _funnel() -> Funnel:
    return Funnel(llm=ScriptedScorer(_overlap), k=4, deadline=20.0, name="enterprise")


@pytest.fixture
def server(serve: ServeFactory) -> Any:
    return serve(_funnel())


def _expected(top_n: int | None = None) -> tuple[list[int], list[float]]:
    ranking = _funnel().rerank(QUERY, DOCS)
    order = [int(i) for i in ranking.ids]
    probs = relevance_scores(ranking)
    n = top_n or len(order)
    return order[:n], probs[:n]


def _check_scores(got: list[float], want: list[float]) -> None:
    assert got == pytest.approx(want, abs=1e-9)
    assert all(0.0 <= s <= 1.0 for s in got), got
    assert got == sorted(got, reverse=True), got


def test_cohere_v2_client(server: Any) -> None:
    cohere = pytest.importorskip("cohere")
    client = cohere.ClientV2(api_key="unused", base_url=server.url)
    resp = client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCS, top_n=3)
    order, probs = _expected(3)
    assert [r.index for r in resp.results] == order
    _check_scores([r.relevance_score for r in resp.results], probs)
    assert resp.id
    assert resp.meta is not None and resp.meta.api_version is not None


def test_cohere_v1_client(server: Any) -> None:
    cohere = pytest.importorskip("cohere")
    client = cohere.Client(api_key="unused", base_url=server.url)
    resp = client.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCS, top_n=3)
    order, probs = _expected(3)
    assert [r.index for r in resp.results] == order
    _check_scores([r.relevance_score for r in resp.results], probs)


def test_cohere_v2_client_reads_the_error(serve: ServeFactory) -> None:
    cohere = pytest.importorskip("cohere")
    from cohere.core.api_error import ApiError

    server = serve(_funnel(), max_documents=3)
    client = cohere.ClientV2(api_key="unused", base_url=server.url)
    with pytest.raises(ApiError) as info:
        client.rerank(model="m", query=QUERY, documents=DOCS)
    assert info.value.status_code == 413
    assert "at most 3" in info.value.body["message"]


def test_langchain_cohere_rerank(server: Any) -> None:
    pytest.importorskip("langchain_cohere")
    from langchain_cohere import CohereRerank
    from langchain_core.documents import Document

    reranker = CohereRerank(
        model="rerank-v3.5", cohere_api_key="unused", base_url=server.url, top_n=3
    )
    docs = [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(DOCS)]
    out = reranker.compress_documents(docs, QUERY)
    order, probs = _expected(3)
    assert [d.metadata["n"] for d in out] == order
    _check_scores([d.metadata["relevance_score"] for d in out], probs)


def _nodes() -> list[Any]:
    from llama_index.core.schema import NodeWithScore, TextNode

    return [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.5) for i, t in enumerate(DOCS)]


def test_llamaindex_cohere_rerank(server: Any) -> None:
    pytest.importorskip("llama_index.postprocessor.cohere_rerank")
    from llama_index.postprocessor.cohere_rerank import CohereRerank

    post = CohereRerank(api_key="unused", base_url=server.url, top_n=3, model="rerank-v3.5")
    out = post.postprocess_nodes(_nodes(), query_str=QUERY)
    order, probs = _expected(3)
    assert [int(n.node.id_) for n in out] == order
    _check_scores([n.score for n in out], probs)


def test_llamaindex_tei_rerank(server: Any) -> None:
    pytest.importorskip("llama_index.postprocessor.tei_rerank")
    from llama_index.postprocessor.tei_rerank import TextEmbeddingInference

    post = TextEmbeddingInference(base_url=server.url, top_n=3)
    out = post.postprocess_nodes(_nodes(), query_str=QUERY)
    order, probs = _expected(3)
    assert [int(n.node.id_) for n in out] == order
    _check_scores([n.score for n in out], probs)


def test_llamaindex_jinaai_rerank(server: Any) -> None:
    pytest.importorskip("llama_index.postprocessor.jinaai_rerank")
    from llama_index.postprocessor.jinaai_rerank import JinaRerank

    # Jina's base URL is the API root; the client posts to {base_url}/rerank
    post = JinaRerank(base_url=f"{server.url}/v1", api_key="unused", top_n=3)
    out = post.postprocess_nodes(_nodes(), query_str=QUERY)
    order, probs = _expected(3)
    assert [int(n.node.id_) for n in out] == order
    _check_scores([n.score for n in out], probs)


def test_tei_format_raw_scores_and_text(server: Any) -> None:
    r = httpx.post(
        f"{server.url}/rerank",
        json={"query": QUERY, "texts": DOCS, "raw_scores": True, "return_text": True},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    ranking = _funnel().rerank(QUERY, DOCS)
    assert [item["index"] for item in body] == [int(i) for i in ranking.ids]
    assert [item["score"] for item in body] == pytest.approx([x.score for x in ranking])
    assert [item["text"] for item in body] == [DOCS[int(i)] for i in ranking.ids]
    # bad input is a 422 with TEI's "error" field, through the same validation as /v1/rerank
    bad = httpx.post(f"{server.url}/rerank", json={"query": QUERY, "texts": [1]})
    assert bad.status_code == 422 and "texts[0]" in bad.json()["error"]


def test_v2_keeps_the_raw_scores_under_llmrerank(server: Any) -> None:
    r = httpx.post(f"{server.url}/v2/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 200, r.text
    body = r.json()
    ranking = _funnel().rerank(QUERY, DOCS)
    raw = body["llmrerank"]["results"]
    assert [x["index"] for x in raw] == [int(i) for i in ranking.ids]
    assert [x["score"] for x in raw] == pytest.approx([x.score for x in ranking])
    assert body["llmrerank"]["funnel"] == "enterprise"
    # v2 takes strings only: an object document is a clear 400, as Cohere answers an invalid request
    bad = httpx.post(f"{server.url}/v2/rerank", json={"query": QUERY, "documents": [{"text": "x"}]})
    assert bad.status_code == 400 and "documents[0]" in bad.json()["message"]
    # an option llmrerank does not implement is refused by name, never ignored
    spans = {"query": QUERY, "documents": DOCS, "relevant_spans": True}
    bad = httpx.post(f"{server.url}/v2/rerank", json=spans)
    assert bad.status_code == 400 and "relevant_spans" in bad.json()["message"]


COHERE_LATEST = "cohere==7.3.1"
_COHERE7_SCRIPT = """
import json, sys
import cohere
assert cohere.__version__.startswith("7."), cohere.__version__
url = sys.argv[1]
v2 = cohere.ClientV2(api_key="unused", base_url=url).rerank(
    model="rerank-v3.5", query=sys.argv[2], documents=json.loads(sys.argv[3]), top_n=3
)
v1 = cohere.Client(api_key="unused", base_url=url).rerank(
    model="rerank-english-v3.0", query=sys.argv[2], documents=json.loads(sys.argv[3]), top_n=3
)
try:
    cohere.ClientV2(api_key="unused", base_url=url).rerank(model="m", query="", documents=["x"])
    error = None
except cohere.BadRequestError as exc:
    error = [exc.status_code, exc.body]
print(json.dumps({
    "version": cohere.__version__,
    "v2": [[r.index, r.relevance_score] for r in v2.results],
    "v2_id": v2.id,
    "v1": [[r.index, r.relevance_score] for r in v1.results],
    "error": error,
}))
"""


@pytest.mark.slow
def test_cohere_7_clients(server: Any, tmp_path: Any) -> None:
    """The SDK's current major version (the one a new user gets; langchain-cohere pins the test
    extra to cohere 5), installed by the test beside the venv's own packages."""
    import json
    import subprocess
    import sys

    target = tmp_path / "cohere7"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         COHERE_LATEST],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if pip.returncode != 0:
        pytest.skip(f"pip could not install {COHERE_LATEST}: {pip.stderr[-500:]}")
    run = subprocess.run(
        [sys.executable, "-c", _COHERE7_SCRIPT, server.url, QUERY, json.dumps(DOCS)],
        capture_output=True, text=True, timeout=120, env={"PYTHONPATH": str(target),
        "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["version"].startswith("7.")
    order, probs = _expected(3)
    for api in ("v2", "v1"):
        assert [i for i, _ in got[api]] == order, api
        _check_scores([s for _, s in got[api]], probs)
    assert got["v2_id"]
    status, body = got["error"]
    assert status == 400 and "query" in json.dumps(body).lower()
