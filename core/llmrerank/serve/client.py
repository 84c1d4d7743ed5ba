"""Call a running ``llmrerank serve`` from Python: :func:`astream_rerank` (Server-Sent Events)
and :func:`arerank` (one JSON answer). Both return llmrerank's own types, so code written against
:meth:`Funnel.astream` / :meth:`Funnel.arerank` works against a server too.

Results are identified by their position in ``documents``: ``Candidate.id`` is ``str(index)``;
with ``top_n`` a ranking holds only the best ``top_n``.

Errors: a rejected request (400, 413, 422) raises :class:`~llmrerank.errors.InputError` with the
server's message; a busy server (503) raises :class:`~llmrerank.errors.RateLimited` with
``retry_after``; anything else :class:`~llmrerank.errors.BackendUnavailable`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from typing import Any

from .._optional import require
from ..errors import BackendUnavailable, InputError, MalformedOutput, RateLimited
from ..types import Candidate, Ranking, RankingUpdate, ScoredCandidate

__all__ = ["arerank", "astream_rerank", "ranking_from_body"]

_PROVENANCE = ("degraded", "reasons", "timings", "k", "llm_scored")


def ranking_from_body(query: str, body: dict[str, Any]) -> Ranking:
    """A :class:`Ranking` from a ``/v1/rerank`` response body (or one stream event's data)."""
    try:
        prov = dict(body.get("llmrerank") or {})
        results = []
        for rank, r in enumerate(body["results"]):
            document = r.get("document")
            text = document.get("text", "") if isinstance(document, dict) else ""
            scores = r.get("scores") or {}
            results.append(
                ScoredCandidate(
                    candidate=Candidate(
                        id=str(r["index"]),
                        text=text if isinstance(text, str) else "",
                        metadata={"index": r["index"], "document": document},
                    ),
                    rank=rank,
                    # the fused score (older servers sent it as relevance_score)
                    score=float(scores.get("fused", r["relevance_score"])),
                    stage=r.get("stage", "fast"),
                    fast_score=scores.get("fast"),
                    llm_score=scores.get("llm"),
                    cached=bool(r.get("cached", False)),
                )
            )
        return Ranking(
            query=query,
            results=tuple(results),
            degraded=bool(prov.get("degraded", False)),
            reasons=tuple(prov.get("reasons", ())),
            timings=dict(prov.get("timings", {})),
            k=int(prov.get("k", 0)),
            llm_scored=int(prov.get("llm_scored", 0)),
            info={k: v for k, v in prov.items() if k not in _PROVENANCE},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedOutput(f"not a rerank response: {exc!r}") from exc


def _payload(
    query: str,
    documents: Sequence[str | dict[str, Any]],
    top_n: int | None,
    preset: str | None,
    deadline: float | None,
    k: int | None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"query": query, "documents": list(documents)}
    for name, value in (("top_n", top_n), ("preset", preset), ("deadline", deadline), ("k", k)):
        if value is not None:
            payload[name] = value
    return payload


def _raise_for(status: int, text: str, headers: Any) -> None:
    try:
        message = str(json.loads(text).get("message", text))
    except (ValueError, AttributeError):
        message = text[:500]
    if status in (400, 413, 422):
        raise InputError(f"the server rejected the request ({status}): {message}")
    if status in (429, 503):
        retry = headers.get("retry-after")
        raise RateLimited(
            f"the server is busy ({status}): {message}",
            retry_after=float(retry) if retry and retry.replace(".", "", 1).isdigit() else None,
        )
    raise BackendUnavailable(f"the server answered {status}: {message}")


async def astream_rerank(
    base_url: str,
    query: str,
    documents: Sequence[str | dict[str, Any]],
    *,
    top_n: int | None = None,
    preset: str | None = None,
    deadline: float | None = None,
    k: int | None = None,
    timeout: float | None = 60.0,
    client: Any | None = None,
) -> AsyncIterator[RankingUpdate]:
    """Yield the server's ``fast``, ``partial`` and ``final`` rankings as they arrive.

    Leaving the loop early closes the connection, and the server cancels the work. ``client``
    is an optional ``httpx.AsyncClient`` to reuse (connection pooling, auth, proxies).
    """
    httpx = require("httpx", extra="serve", feature="the llmrerank serve client")
    httpx_sse = require(
        "httpx_sse", extra="serve", feature="the stream client", package="httpx-sse"
    )
    url = base_url.rstrip("/") + "/v1/rerank/stream"
    async with AsyncExitStack() as stack:
        if client is None:
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout))
        try:
            source = await stack.enter_async_context(
                httpx_sse.aconnect_sse(
                    client, "POST", url, json=_payload(query, documents, top_n, preset, deadline, k)
                )
            )
            response = source.response
            if response.status_code != 200:
                await response.aread()
                _raise_for(response.status_code, response.text, response.headers)
            async for event in source.aiter_sse():
                if event.event not in ("fast", "partial", "final"):
                    continue
                body = json.loads(event.data)
                elapsed = float((body.get("llmrerank") or {}).get("elapsed", 0.0))
                yield RankingUpdate(event.event, ranking_from_body(query, body), elapsed)
                if event.event == "final":
                    return
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"stream from {url} failed: {type(exc).__name__}: {exc}"
            ) from exc
    raise BackendUnavailable(f"the stream from {url} ended before the final ranking")


async def arerank(
    base_url: str,
    query: str,
    documents: Sequence[str | dict[str, Any]],
    *,
    top_n: int | None = None,
    preset: str | None = None,
    deadline: float | None = None,
    k: int | None = None,
    timeout: float | None = 60.0,
    client: Any | None = None,
) -> Ranking:
    """``POST /v1/rerank`` and return the final :class:`Ranking`."""
    httpx = require("httpx", extra="serve", feature="the llmrerank serve client")
    url = base_url.rstrip("/") + "/v1/rerank"
    async with AsyncExitStack() as stack:
        http: Any = client
        if http is None:
            http = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout))
        try:
            response = await http.post(
                url, json=_payload(query, documents, top_n, preset, deadline, k)
            )
        except httpx.HTTPError as exc:
            raise BackendUnavailable(
                f"request to {url} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if response.status_code != 200:
            _raise_for(response.status_code, response.text, response.headers)
        return ranking_from_body(query, response.json())
