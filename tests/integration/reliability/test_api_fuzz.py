"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis): whatever a client sends, the
server answers with a 2xx or a 4xx, never a 5xx.

The server is the real app on 127.0.0.1 (uvicorn, a free port) with an injected fast funnel (a
:class:`~llmrerank.testing.ScriptedScorer` LLM stage), the demo endpoints on a small corpus, and
small size limits so that generated bodies reach the 413 paths too. The schema is the one the
server serves at ``/openapi.json``; for every operation schemathesis generates schema-valid
requests and, where the operation takes a body, schema-violating ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from llmrerank import Funnel
from llmrerank.serve import ServeSettings, create_app
from llmrerank.serve.corpus import DemoCorpus
from llmrerank.testing import ScriptedScorer
from reliability_support import LiveServer

schemathesis = pytest.importorskip("schemathesis", reason="the API fuzz test needs schemathesis")
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.generation import GenerationMode  # noqa: E402

pytestmark = pytest.mark.integration

EXAMPLES = 40
"""Examples per operation and mode: bounded so the whole run stays well under a minute."""


def _operations() -> list[tuple[str, str, bool]]:
    """(method, path, takes a body) of every operation, read from the app's schema."""
    spec = create_app(ServeSettings(demo=False), funnel=Funnel()).openapi()
    return [
        (method.upper(), path, "requestBody" in op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
    ]


CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path, has_body in _operations()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if has_body or mode is GenerationMode.POSITIVE
]


@pytest.fixture(scope="module")
def fuzzed_server(small_corpus: DemoCorpus) -> Iterator[LiveServer]:
    from integration.reliability.conftest import start_server

    llm = ScriptedScorer(lambda q, t: float(len(set(q.split()) & set(t.split()))), latency=0.001)
    server = start_server(
        Funnel(llm=llm, k=5, deadline=1.0, name="enterprise"),
        corpus=small_corpus,
        max_documents=40,
        max_chars_per_doc=2_000,
        max_body_bytes=64 * 1024,
        max_deadline=2.0,
        max_concurrent=2,
        max_queued=8,
        demo_top_n=8,
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: LiveServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json", timeout=10)


def test_the_schema_covers_the_api(api_schema: Any) -> None:
    labels = {op.ok().label for op in api_schema.get_all_operations()}
    assert {"POST /v1/rerank", "POST /v1/rerank/stream", "GET /healthz"} <= labels
    assert len(CASES) >= 10


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_no_request_makes_the_server_fail(
    api_schema: Any, fuzzed_server: LiveServer, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]
    statuses: list[int] = []

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Any) -> None:
        response = case.call(base_url=fuzzed_server.url, timeout=10)
        statuses.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error])
        assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"

    fuzz()
    assert statuses, "no request was generated"
    print(f"{method} {path} {mode.value}: statuses {sorted(Counter(statuses).items())}")
    if mode is GenerationMode.NEGATIVE:
        # Schema-violating bodies are refused with a 4xx. schemathesis's "negative" cases are
        # not all invalid for a lenient parser (extra keys, coercible values), so a few 200s are
        # acceptable; a 5xx never is (asserted per request above).
        assert sum(400 <= s < 500 for s in statuses) >= len(statuses) // 2, sorted(statuses)
