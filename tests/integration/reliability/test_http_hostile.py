"""Hostile input through the HTTP API (property-based, against the live server on 127.0.0.1):
arbitrary unicode (lone surrogates escaped in the JSON, as a JSON encoder may send them),
huge and empty documents, too many documents, extreme ``k``, ``top_n`` and deadlines, both
endpoints (JSON and Server-Sent Events).

Every request gets either a 4xx whose JSON says what is wrong, or a 200 whose ranking holds every
document exactly once (or the best ``top_n``, distinct). Never a 5xx.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llmrerank import BackendUnavailable, Funnel
from llmrerank.testing import ScriptedScorer
from reliability_support import LiveServer

pytestmark = pytest.mark.integration

MAX_DOCS = 30
MAX_CHARS = 3_000

ANY_CHAR = st.characters(codec=None, exclude_categories=())
text = (
    st.text(ANY_CHAR, max_size=120)
    | st.sampled_from(["", " ", "\x00", "\ud83d", "<|im_start|>system", "\u202eevil"])
    | st.builds(lambda s, n: (s or "y") * n, st.text(ANY_CHAR, max_size=4), st.integers(500, 1_600))
)
document = text | st.builds(lambda t: {"text": t}, text) | st.sampled_from([{"txt": "x"}, 3, None])
number = st.none() | st.integers(-5, 80) | st.sampled_from([10**12, 2**70, -(2**70)])
deadline = st.none() | st.floats(1e-6, 1.0) | st.sampled_from([0, -1, 1e308, 5.0, 1e-300, "1"])
requests = st.fixed_dictionaries(
    {"query": text, "documents": st.lists(document, max_size=MAX_DOCS + 4)},
    optional={
        "top_n": number,
        "k": number,
        "deadline": deadline,
        "preset": st.sampled_from(["realtime", "enterprise", "research", "nope", ""]),
        "return_documents": st.booleans(),
    },
)


def _flaky(call: int) -> BaseException | None:
    return BackendUnavailable("flaky backend") if call % 5 == 0 else None


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    from integration.reliability.conftest import start_server

    llm = ScriptedScorer(lambda q, t: float(len(t) % 7), latency=0.001, fail=_flaky)
    srv = start_server(
        Funnel(llm=llm, k=6, deadline=1.0, name="enterprise"),
        max_documents=MAX_DOCS,
        max_chars_per_doc=MAX_CHARS,
        max_body_bytes=256 * 1024,
        max_deadline=5.0,
        max_concurrent=2,
        max_queued=8,
    )
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=20) as c:
        yield c


def _post(client: httpx.Client, path: str, body: Any) -> httpx.Response:
    # ensure_ascii: lone surrogates travel as \\udXXX escapes, which is valid JSON.
    raw = json.dumps(body, ensure_ascii=True, allow_nan=True)
    return client.post(path, content=raw, headers={"Content-Type": "application/json"})


def _final_body(response: httpx.Response) -> dict[str, Any]:
    events = []
    for block in response.text.replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "event" in fields and "data" in fields:
            events.append((fields["event"], fields["data"]))
    kinds = [kind for kind, _ in events]
    assert kinds and kinds[-1] == "final" and kinds.count("final") == 1, kinds
    assert kinds[0] == "fast" or kinds == ["final"], kinds
    return dict(json.loads(events[-1][1]))


def _check_ranking(body: dict[str, Any], request: dict[str, Any]) -> None:
    n = len(request["documents"])
    top_n = request.get("top_n")
    indexes = [r["index"] for r in body["results"]]
    assert len(set(indexes)) == len(indexes)
    assert set(indexes) <= set(range(n))
    assert len(indexes) == (n if top_n is None else min(top_n, n))
    scores = [r["relevance_score"] for r in body["results"]]
    assert all(isinstance(s, (int, float)) and math.isfinite(s) for s in scores)
    assert all(a >= b for a, b in itertools.pairwise(scores))
    prov = body["llmrerank"]
    assert prov["degraded"] == bool(prov["reasons"])
    if request.get("return_documents", True):
        for r in body["results"]:
            doc = request["documents"][r["index"]]
            assert r["document"] == (doc if isinstance(doc, dict) else {"text": doc})


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(request=requests, stream=st.booleans())
def test_any_request_is_a_clear_4xx_or_a_complete_ranking(
    client: httpx.Client, request: dict[str, Any], stream: bool
) -> None:
    path = "/v1/rerank/stream" if stream else "/v1/rerank"
    response = _post(client, path, request)
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        body = response.json()
        assert body["message"], body
        assert response.status_code in (400, 413, 422), body
        return
    assert response.status_code == 200
    _check_ranking(_final_body(response) if stream else response.json(), request)


@pytest.mark.parametrize(
    "raw",
    [
        '{"query": "a", "documents": ["a"], "deadline": NaN}',
        '{"query": "a", "documents": ["a"], "deadline": Infinity}',
        '{"query": "a", "documents": ["a"], "k": 1e400}',
        '{"query": "a", "documents": ["a"], "top_n": -Infinity}',
        '{"query": "\\ud800", "documents": ["\\udfff", "\\u0000"]',
        '{"query": "a", "documents": [' + '"a",' * 10 + "]}",
        "[" * 5_000 + "]" * 5_000,
        '{"query": "a", "documents": "not a list"}',
        "\xff\xfe{",
    ],
)
@pytest.mark.parametrize("path", ["/v1/rerank", "/v1/rerank/stream"])
def test_malformed_json_is_a_4xx(client: httpx.Client, path: str, raw: str) -> None:
    response = client.post(
        path,
        content=raw.encode("utf-8", "surrogatepass"),
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.json()["message"]


def test_lone_surrogates_and_controls_rank_and_come_back_as_sent(client: httpx.Client) -> None:
    docs = ["\ud800 broken pair", "nul\x00byte", "plain apple", "\u202eright-to-left", ""]
    response = _post(client, "/v1/rerank", {"query": "apple \udfff", "documents": docs})
    assert response.status_code == 200, response.text
    body = response.json()
    assert sorted(r["index"] for r in body["results"]) == list(range(len(docs)))
    for r in body["results"]:
        assert r["document"]["text"] == docs[r["index"]]
