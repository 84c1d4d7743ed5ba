"""The HTTP API against a real uvicorn server on 127.0.0.1: formats, errors, streaming,
cancellation on disconnect, backpressure and metrics."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from llmrerank import BackendUnavailable, Funnel, InputError, MemoryScoreCache, RateLimited
from llmrerank.serve.client import arerank, astream_rerank
from llmrerank.testing import ScriptedScorer
from prometheus_client.parser import text_string_to_metric_families

ServeFactory = Callable[..., Any]

pytestmark = pytest.mark.integration

DOCS = [
    "Apples are red fruit that grow on apple trees in orchards.",
    "Bananas are yellow.",
    {"text": "An apple pie is baked from apple slices, sugar and butter.", "source": "recipes"},
    "Cars drive on roads.",
    "Pie charts show proportions; apple is not involved.",
]
QUERY = "apple pie recipe"


def _prefers_short(query: str, text: str) -> float:
    """A scripted LLM that disagrees with BM25: shorter texts score higher."""
    return -float(len(text))


def _funnel(latency: float = 0.05, **kw: Any) -> Funnel:
    llm = ScriptedScorer(_prefers_short, latency=latency)
    return Funnel(
        llm=llm, k=kw.pop("k", 3), deadline=kw.pop("deadline", 20.0), name="enterprise", **kw
    )


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def _eventually(condition: Callable[[], bool], timeout: float = 4.0) -> bool:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return True
        await asyncio.sleep(0.02)
    return condition()


def _texts(docs: list[Any]) -> list[str]:
    return [d if isinstance(d, str) else d["text"] for d in docs]


def test_rerank_answers_in_the_rerank_format_with_provenance(serve: ServeFactory) -> None:
    funnel = _funnel()
    server = serve(funnel)
    r = httpx.post(f"{server.url}/v1/rerank", json={"query": QUERY, "documents": DOCS, "top_n": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = funnel.rerank(QUERY, _texts(DOCS))
    assert [res["index"] for res in body["results"]] == [int(i) for i in expected.ids[:4]]
    scores = [res["relevance_score"] for res in body["results"]]
    assert scores == sorted(scores, reverse=True)
    for res in body["results"]:
        doc = DOCS[res["index"]]
        assert res["document"] == (doc if isinstance(doc, dict) else {"text": doc})
        assert res["stage"] in ("llm", "fast")
        assert res["scores"]["fast"] is not None
        assert (res["scores"]["llm"] is not None) == (res["stage"] == "llm")
    prov = body["llmrerank"]
    assert prov["degraded"] is False and prov["reasons"] == []
    assert prov["k"] == 3 and prov["llm_scored"] == 3
    assert set(prov["timings"]) >= {"fast", "llm", "total"}
    assert prov["llm_scorer"] == "scripted:scripted"
    assert body["model"] == "llmrerank-enterprise"


def test_all_documents_come_back_once_without_top_n(serve: ServeFactory) -> None:
    server = serve(_funnel())
    r = httpx.post(f"{server.url}/v1/rerank", json={"query": QUERY, "documents": DOCS})
    indexes = [res["index"] for res in r.json()["results"]]
    assert sorted(indexes) == list(range(len(DOCS)))


def test_return_documents_false_and_rank_fields(serve: ServeFactory) -> None:
    server = serve(Funnel(llm=ScriptedScorer(), k=2, name="enterprise"))  # word-overlap LLM
    docs = [{"title": "Bananas", "body": "yellow"}, {"title": "Apple pie", "body": "apple pie"}]
    r = httpx.post(
        f"{server.url}/v1/rerank",
        json={
            "query": QUERY,
            "documents": docs,
            "rank_fields": ["title", "body"],
            "return_documents": False,
            "model": "rerank-english-v3.0",
            "input_ranked": False,  # two records, not a retriever's ranking
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert all("document" not in res for res in body["results"])
    assert body["results"][0]["index"] == 1
    assert body["model"] == "rerank-english-v3.0"


BAD = [
    ({"query": "", "documents": ["a"]}, 422, "query is empty"),
    ({"query": "x", "documents": [1]}, 422, "documents[0]: must be a string or an object"),
    ({"query": "x", "documents": [{"title": "t"}]}, 422, "documents[0] is an object without"),
    ({"query": "x"}, 422, "documents: Field required"),
    ({"query": "x", "documents": "abc"}, 422, "documents"),
    ({"query": "x", "documents": ["a"], "top_n": 0}, 422, "top_n"),
    ({"query": "x", "documents": ["a"], "preset": "fastest"}, 422, "unknown preset 'fastest'"),
    ({"query": "x", "documents": ["a"], "deadline": 0}, 422, "deadline"),
    ({"query": "x", "documents": ["a"], "deadline": 999}, 422, "max_deadline"),
    ({"query": "x", "documents": ["a"], "k": -1}, 422, "k"),
    ({"query": "x", "documents": ["a"], "colour": "red"}, 422, "colour: Extra inputs"),
    ({"query": "x", "documents": ["a"] * 11}, 413, "at most 10"),
    ({"query": "x", "documents": ["a", "b" * 101]}, 413, "documents[1] has 101 characters"),
    ([1, 2], 400, "must be a JSON object"),
]


@pytest.mark.parametrize(("payload", "status", "message"), BAD)
def test_bad_input_gets_a_4xx_with_a_clear_message(
    serve: ServeFactory, payload: Any, status: int, message: str
) -> None:
    server = serve(_funnel(), max_documents=10, max_chars_per_doc=100)
    for path in ("/v1/rerank", "/v1/rerank/stream"):
        r = httpx.post(f"{server.url}{path}", json=payload)
        assert r.status_code == status, r.text
        assert message in r.json()["message"]
        assert r.json()["detail"] == r.json()["message"]


def test_malformed_and_oversized_bodies(serve: ServeFactory) -> None:
    server = serve(_funnel(), max_body_bytes=2048)
    r = httpx.post(
        f"{server.url}/v1/rerank",
        content=b'{"query": "x", "documents": [',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
    r = httpx.post(f"{server.url}/v1/rerank", content=b"query=x")
    assert r.status_code == 400
    big = json.dumps({"query": "x", "documents": ["word " * 1000]}).encode()
    r = httpx.post(
        f"{server.url}/v1/rerank", content=big, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413 and "max_body_bytes" in r.json()["message"]

    def chunks() -> Any:  # no Content-Length: the limit is counted while reading
        yield b'{"query": "x", "documents": ["'
        for _ in range(20):
            yield b"y" * 500
        yield b'"]}'

    r = httpx.post(
        f"{server.url}/v1/rerank", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert httpx.get(f"{server.url}/v1/rerank").status_code == 405
    r = httpx.get(f"{server.url}/v2/nothing")
    assert r.status_code == 404 and "no such endpoint" in r.json()["message"]


def test_hostile_text_never_gives_a_500(serve: ServeFactory) -> None:
    server = serve(_funnel())
    docs = ["\ud800 lone surrogate apple", "\x00\x01 control pie", "", "   ", "ç" * 50, "😀 apple"]
    r = httpx.post(
        f"{server.url}/v1/rerank",
        content=json.dumps({"query": "apple \udfff", "documents": docs}),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert sorted(res["index"] for res in r.json()["results"]) == list(range(len(docs)))


def test_a_failing_llm_degrades_and_says_so(serve: ServeFactory) -> None:
    llm = ScriptedScorer(fail=BackendUnavailable("connection refused"))
    server = serve(Funnel(llm=llm, k=3, deadline=5.0, name="enterprise"))
    r = httpx.post(f"{server.url}/v1/rerank", json={"query": QUERY, "documents": DOCS})
    assert r.status_code == 200
    body = r.json()
    assert body["llmrerank"]["degraded"] is True
    assert body["llmrerank"]["reasons"] == ["backend_error"]
    assert {res["stage"] for res in body["results"]} == {"fast"}
    assert sorted(res["index"] for res in body["results"]) == list(range(len(DOCS)))


async def test_stream_sends_fast_then_partials_then_final(serve: ServeFactory) -> None:
    funnel = _funnel(latency=0.3)
    server = serve(funnel)
    kinds, elapsed, finals = [], [], None
    async for update in astream_rerank(server.url, QUERY, DOCS):
        kinds.append(update.kind)
        elapsed.append(update.elapsed)
        assert sorted(update.ranking.ids, key=int) == [str(i) for i in range(len(DOCS))]
        if update.kind == "fast":
            assert {r.stage for r in update.ranking} == {"fast"}
        finals = update.ranking
    assert kinds[0] == "fast" and kinds[-1] == "final" and "partial" in kinds
    assert elapsed[0] < 0.25 <= elapsed[-1]  # fast lands before the first LLM call returns
    assert finals is not None and finals.llm_scored == 3
    plain = await arerank(server.url, QUERY, DOCS)
    assert plain.ids == finals.ids


async def test_client_disconnect_cancels_the_work(serve: ServeFactory) -> None:
    llm = ScriptedScorer(_prefers_short, latency=5.0)
    server = serve(Funnel(llm=llm, k=3, deadline=30.0, name="enterprise"))
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        async with client.stream(
            "POST", "/v1/rerank/stream", json={"query": QUERY, "documents": DOCS}
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("event: fast"):
                    break
        left = time.monotonic()
    # The scorer's pending call is cancelled well before its 5 s latency would have passed.
    assert await _eventually(lambda: llm.cancelled >= 1), "the LLM call was not cancelled"
    assert time.monotonic() - left < 4.0
    assert llm.texts_seen == []  # nothing was scored to completion
    state = server.state
    assert await _eventually(lambda: state.admission.running == 0 and not state.streams)
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"{server.url}/metrics")).text
    assert _metric(metrics, "llmrerank_cancelled_total") == 1


async def test_breaking_out_of_the_client_stream_cancels_too(serve: ServeFactory) -> None:
    llm = ScriptedScorer(_prefers_short, latency=5.0)
    server = serve(Funnel(llm=llm, k=2, deadline=30.0, name="enterprise"))
    t0 = time.monotonic()
    stream = astream_rerank(server.url, QUERY, DOCS)
    async for update in stream:
        assert update.kind == "fast"
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert await _eventually(lambda: llm.cancelled >= 1)
    assert time.monotonic() - t0 < 4.0


async def test_backpressure_answers_503_with_retry_after(serve: ServeFactory) -> None:
    funnel = _funnel(latency=1.0, k=1)
    server = serve(funnel, max_concurrent=1, max_queued=1, retry_after=2)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS}) for _ in range(4))
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 200, 503, 503]
        for r in responses:
            if r.status_code == 503:
                assert r.headers["Retry-After"] == "2"
                assert "server busy" in r.json()["message"]
        waits = sorted(
            r.json()["llmrerank"]["queue_wait"] for r in responses if r.status_code == 200
        )
        assert waits[0] < 0.5 and waits[1] > 0.5  # one ran at once, one waited its turn
        # The stream endpoint shares the same slots: busy -> 503 before any event.
        first = asyncio.ensure_future(
            client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        )
        second = asyncio.ensure_future(
            client.post("/v1/rerank", json={"query": QUERY, "documents": DOCS})
        )
        await asyncio.sleep(0.3)
        r = await client.post("/v1/rerank/stream", json={"query": QUERY, "documents": DOCS})
        assert r.status_code == 503 and r.headers["Retry-After"] == "2"
        await asyncio.gather(first, second)
        with pytest.raises(RateLimited) as info:
            await asyncio.gather(
                *(arerank(server.url, QUERY, DOCS, client=client) for _ in range(3))
            )
        assert info.value.retry_after == 2.0
        metrics = (await client.get("/metrics")).text
    assert _metric(metrics, "llmrerank_rejected_total") >= 3


def test_client_maps_rejections_to_input_error(serve: ServeFactory) -> None:
    server = serve(_funnel())
    with pytest.raises(InputError, match="query is empty"):
        asyncio.run(arerank(server.url, " ", ["a"]))


def test_metrics_count_requests_latency_degradation_and_cache_hits(serve: ServeFactory) -> None:
    funnel = Funnel(
        llm=ScriptedScorer(_prefers_short),
        k=3,
        deadline=5.0,
        name="enterprise",
        cache=MemoryScoreCache(),
    )
    server = serve(funnel)
    for _ in range(2):  # the second request finds its 3 LLM scores in the cache
        assert (
            httpx.post(
                f"{server.url}/v1/rerank", json={"query": QUERY, "documents": DOCS}
            ).status_code
            == 200
        )
    httpx.post(f"{server.url}/v1/rerank", json={"query": "", "documents": DOCS})
    funnel.llm = ScriptedScorer(fail=BackendUnavailable("down"))
    httpx.post(f"{server.url}/v1/rerank", json={"query": "fresh query", "documents": DOCS})
    r = httpx.get(f"{server.url}/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    m = r.text
    assert _metric(m, "llmrerank_requests_total", endpoint="/v1/rerank", status="200") == 3
    assert _metric(m, "llmrerank_requests_total", endpoint="/v1/rerank", status="422") == 1
    assert _metric(m, "llmrerank_request_latency_seconds_count", endpoint="/v1/rerank") == 4
    assert _metric(m, "llmrerank_rankings_total", degraded="false") == 2
    assert _metric(m, "llmrerank_rankings_total", degraded="true") == 1
    assert _metric(m, "llmrerank_degraded_total", reason="backend_error") == 1
    assert _metric(m, "llmrerank_cache_hits_total") == 3
    assert _metric(m, "llmrerank_cache_misses_total") == 6


def test_healthz_and_openapi(serve: ServeFactory) -> None:
    server = serve(_funnel())
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ok" and health["llm_scorer"] == "scripted:scripted"
    assert health["running"] == 0
    schema = httpx.get(f"{server.url}/openapi.json").json()
    assert {"/v1/rerank", "/v1/rerank/stream", "/healthz", "/metrics"} <= set(schema["paths"])


def test_requests_can_pick_a_preset_sharing_the_servers_scorers(serve: ServeFactory) -> None:
    server = serve(_funnel())
    r = httpx.post(
        f"{server.url}/v1/rerank",
        json={"query": QUERY, "documents": DOCS, "preset": "research", "k": 2},
    )
    body = r.json()
    assert r.status_code == 200
    assert body["llmrerank"]["funnel"] == "research"
    assert body["llmrerank"]["llm_scorer"] == "scripted:scripted"
    assert body["llmrerank"]["k"] == 2


def test_demo_search_over_the_stdlib_corpus(serve: ServeFactory, demo_corpus: Any) -> None:
    server = serve(_funnel(k=5), corpus=demo_corpus)
    info = httpx.get(f"{server.url}/v1/demo/info").json()
    assert info["corpus_size"] == len(demo_corpus) >= 1000
    r = httpx.post(
        f"{server.url}/v1/demo/search", json={"query": "decompress gzip data", "top_n": 5}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["results"]) == 5
    assert any("gzip" in res["title"] or "gzip" in res["text"].lower() for res in body["results"])
    assert body["llmrerank"]["retrieval"]["retrieved"] <= 50
    assert body["summary"] and all(isinstance(s, str) for s in body["summary"])
    assert any("compress" in s.lower() or "gzip" in s.lower() for s in body["summary"])
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert httpx.get(f"{server.url}/static/app.js").status_code == 200
    r = httpx.post(f"{server.url}/v1/demo/search", json={"query": "   "})
    assert r.status_code == 422


async def test_documents_are_taken_in_their_retrievers_order(serve: ServeFactory) -> None:
    # no document holds a query term and the LLM is flat: the retriever's order comes back
    docs = [f"filler text number {i}" for i in range(6)]
    flat = Funnel(llm=ScriptedScorer(lambda q, t: 1.0), k=4, deadline=20.0)
    server = serve(flat)
    async with httpx.AsyncClient(base_url=server.url) as client:
        r = await client.post("/v1/rerank", json={"query": "kitten", "documents": docs})
        assert r.status_code == 200
        assert [x["index"] for x in r.json()["results"]] == list(range(6))
        assert r.json()["llmrerank"]["input_ranked"] is True
        # a bag of documents: BM25 decides, the first position earns nothing
        bag = ["dogs", "birds", "a kitten"]
        body = {"query": "kitten", "documents": bag, "input_ranked": False}
        r = await client.post("/v1/rerank", json=body)
        assert r.json()["results"][0]["index"] == 2
        assert r.json()["llmrerank"]["input_ranked"] is False
        r = await client.post("/v1/rerank", json={**body, "input_ranked": "maybe"})
        assert r.status_code == 422
