"""A first stage (or stand-alone reranker) behind a hosted or self-hosted ``/rerank`` endpoint.

One wire format covers the common providers: a JSON ``POST`` of ``{"model", "query",
"documents": [str, ...], "top_n"}`` answered by ``{"results": [{"index", "relevance_score"},
...]}`` (extra response fields are ignored). That is Cohere's v2 rerank API, Jina's v1 rerank API,
Together's Cohere-compatible rerank, and vLLM's ``/rerank``, ``/v1/rerank`` (Jina-style) and
``/v2/rerank`` (Cohere-style) routes. The providers differ in the path, the environment variable
holding the key, and the name of the per-document truncation option; :data:`PROVIDERS` holds
those differences.

Timeouts derive from the deadline (capped by ``timeout``). Retries happen only for retryable
failures (5xx, 408, 429, connection errors, a per-request timeout that left deadline time) and
only while the deadline leaves time for the wait: a 429's ``Retry-After``, else exponential
backoff with jitter. The API key is a
pydantic ``SecretStr``; it is sent in the ``Authorization`` header and never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import SecretStr

from .._optional import require
from ..budget import Deadline
from ..errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    InputError,
    MalformedOutput,
    RateLimited,
)
from .base import Scores

if TYPE_CHECKING:
    import httpx

__all__ = ["PROVIDERS", "RerankAPIScorer", "RerankProvider"]

logger = logging.getLogger("llmrerank")


@dataclass(frozen=True, slots=True)
class RerankProvider:
    """How one provider spells the common ``/rerank`` format."""

    name: str
    base_url: str | None
    """Default base URL; ``None`` means the caller must give one (self-hosted servers)."""
    path: str
    api_key_env: str
    key_required: bool
    truncation_field: str | None
    """The request field that caps tokens per document, if the provider has one."""
    extra: Mapping[str, Any]
    """Fixed request fields (e.g. Jina's ``return_documents: false`` to shrink responses)."""


PROVIDERS: dict[str, RerankProvider] = {
    "cohere": RerankProvider(
        "cohere", "https://api.cohere.com", "/v2/rerank", "COHERE_API_KEY", True,
        "max_tokens_per_doc", {},
    ),
    "jina": RerankProvider(
        "jina", "https://api.jina.ai", "/v1/rerank", "JINA_API_KEY", True, None,
        {"return_documents": False},
    ),
    "together": RerankProvider(
        "together", "https://api.together.xyz", "/v1/rerank", "TOGETHER_API_KEY", True, None,
        {"return_documents": False},
    ),
    "vllm": RerankProvider(
        "vllm", None, "/v1/rerank", "VLLM_API_KEY", False, "truncate_prompt_tokens", {},
    ),
}  # fmt: skip


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


class RerankAPIScorer:
    """Scores texts with a ``/rerank`` endpoint (Cohere, Jina, Together, vLLM).

    Args:
        provider: ``"cohere"``, ``"jina"``, ``"together"`` or ``"vllm"`` (see :data:`PROVIDERS`).
        model: the rerank model name (e.g. ``"rerank-v3.5"``, ``"jina-reranker-v2-base-multilingual"``,
            or the model a vLLM server serves).
        base_url: overrides the provider's URL (required for ``vllm``); ``path`` the route.
        api_key: the key; by default read from the provider's environment variable
            (``COHERE_API_KEY``, ``JINA_API_KEY``, ``TOGETHER_API_KEY``, ``VLLM_API_KEY``).
        timeout: the longest one HTTP request may take (the deadline may cut it shorter).
        max_retries: retries after the first attempt, for retryable failures only.
        max_documents: documents per request (Cohere recommends at most 1,000); larger calls are
            split into concurrent requests of this size.
        max_concurrency: requests in flight at once for one call.
        max_tokens_per_doc: the provider's per-document truncation, where it has one.
        backoff: the first retry's wait in seconds (doubled each retry, with jitter), unless the
            server's ``Retry-After`` says otherwise.
        headers: extra request headers (never logged).
        client: an ``httpx.AsyncClient`` to use instead of the scorer's own.
    """

    def __init__(
        self,
        provider: str = "cohere",
        *,
        model: str,
        base_url: str | None = None,
        path: str | None = None,
        api_key: SecretStr | str | None = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        max_documents: int = 1000,
        max_concurrency: int = 4,
        max_tokens_per_doc: int | None = None,
        backoff: float = 0.25,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        require("httpx", extra="rerank-api", feature="RerankAPIScorer")
        if provider not in PROVIDERS:
            raise ConfigError(
                f"unknown rerank provider {provider!r}; choose one of {sorted(PROVIDERS)}"
            )
        spec = PROVIDERS[provider]
        if not isinstance(model, str) or not model.strip():
            raise InputError("model must name the rerank model (a non-empty string)")
        url = base_url or spec.base_url
        if not url:
            raise ConfigError(f"provider {provider!r} needs base_url= (e.g. http://localhost:8000)")
        if timeout <= 0 or max_retries < 0 or max_documents < 1 or max_concurrency < 1:
            raise InputError(
                "timeout must be positive, max_retries non-negative, max_documents and "
                "max_concurrency at least 1"
            )
        if max_tokens_per_doc is not None and spec.truncation_field is None:
            raise ConfigError(f"provider {provider!r} has no per-document truncation option")
        if api_key is None:
            env = os.environ.get(spec.api_key_env)
            api_key = SecretStr(env) if env else None
        elif isinstance(api_key, str):
            api_key = SecretStr(api_key)
        if api_key is None and spec.key_required:
            raise ConfigError(
                f"the {provider} rerank API needs an API key: set {spec.api_key_env} or pass "
                "api_key="
            )
        self.provider = spec
        self.model = model
        full = url.rstrip("/") + (path or spec.path)
        parts = urlsplit(full)
        # user:password in the URL goes as basic auth: the URL itself is logged and fingerprinted
        self._url_auth: tuple[str, str] | None = None
        if parts.username is not None or parts.password is not None:
            self._url_auth = (unquote(parts.username or ""), unquote(parts.password or ""))
            host = parts.hostname or ""
            if parts.port:
                host += f":{parts.port}"
            full = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
        self.url = full
        self._api_key: SecretStr | None = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_documents = max_documents
        self.batch_size = max_documents
        self.max_concurrency = max_concurrency
        self.max_tokens_per_doc = max_tokens_per_doc
        self.backoff = backoff
        self._headers = dict(headers or {})
        self._client = client
        self._own_clients: dict[int, httpx.AsyncClient] = {}

    @property
    def fingerprint(self) -> str:
        trunc = f",max_tokens={self.max_tokens_per_doc}" if self.max_tokens_per_doc else ""
        return f"rerank-api:{self.provider.name}:{self.model}({self.url}{trunc})"

    def __repr__(self) -> str:
        return f"RerankAPIScorer({self.fingerprint!r})"

    # ------------------------------------------------------------------ HTTP

    def _http(self) -> httpx.AsyncClient:
        """The client for the running event loop (an httpx pool belongs to one loop)."""
        if self._client is not None:
            return self._client
        import httpx

        loop = id(asyncio.get_running_loop())
        client = self._own_clients.get(loop)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(limits=httpx.Limits(max_connections=self.max_concurrency))
            self._own_clients = {loop: client}
        return client

    async def aclose(self) -> None:
        """Close the scorer's own HTTP client (not one passed in)."""
        clients, self._own_clients = list(self._own_clients.values()), {}
        for client in clients:
            await client.aclose()

    def _request_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        headers.update(self._headers)
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        return headers

    def _body(self, query: str, documents: Sequence[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "query": query,
            "documents": list(documents),
            "top_n": len(documents),
        }
        body.update(self.provider.extra)
        if self.max_tokens_per_doc is not None and self.provider.truncation_field:
            body[self.provider.truncation_field] = self.max_tokens_per_doc
        return body

    async def _post_once(self, body: dict[str, Any], deadline: Deadline) -> Any:
        import httpx

        left = deadline.timeout(cap=self.timeout)
        if left is not None and left <= 0:
            raise BackendTimeout("the deadline passed before the rerank request could start")
        try:
            response = await self._http().post(
                self.url,
                auth=self._url_auth or httpx.USE_CLIENT_DEFAULT,
                json=body,
                headers=self._request_headers(),
                timeout=httpx.Timeout(left if left is not None else self.timeout),
            )
        except httpx.TimeoutException as exc:
            timeout_error = BackendTimeout(f"rerank request timed out ({type(exc).__name__})")
            timeout_error.retryable = not deadline.expired  # only the per-request cap was hit
            raise timeout_error from None
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"rerank endpoint unreachable: {type(exc).__name__}") from None
        status = response.status_code
        if status == 429:
            raise RateLimited(
                "rerank endpoint answered 429 (rate limited)",
                retry_after=_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500 or status == 408:
            raise BackendUnavailable(f"rerank endpoint answered {status}")
        if status in (401, 403):
            raise BackendError(
                f"rerank endpoint refused the credentials ({status}); check the API key "
                f"({self.provider.api_key_env})"
            )
        if status >= 400:
            raise BackendError(f"rerank endpoint answered {status}: {response.text[:200]}")
        try:
            return response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise MalformedOutput("rerank endpoint answered with a body that is not JSON") from None

    async def _post(self, body: dict[str, Any], deadline: Deadline) -> Any:
        """One request with retries for retryable failures while the deadline allows."""
        attempt = 0
        while True:
            try:
                return await self._post_once(body, deadline)
            except BackendError as exc:
                if not exc.retryable or attempt >= self.max_retries:
                    raise
                hinted = getattr(exc, "retry_after", None)
                wait = (
                    hinted
                    if hinted is not None
                    else self.backoff * 2**attempt * random.uniform(0.5, 1.0)
                )
                if wait >= deadline.remaining():
                    raise
                attempt += 1
                logger.info(
                    "%s: %s; retry %d of %d in %.2fs",
                    self.fingerprint,
                    exc,
                    attempt,
                    self.max_retries,
                    wait,
                )
                await asyncio.sleep(wait)

    @staticmethod
    def _parse(payload: Any, n: int) -> list[float | None]:
        """One score per document; a document without a usable result stays ``None``."""
        results = payload.get("results") if isinstance(payload, dict) else None
        if not isinstance(results, list):
            raise MalformedOutput("rerank response has no 'results' list")
        scores: list[float | None] = [None] * n
        bad = 0
        for item in results:
            index = item.get("index") if isinstance(item, dict) else None
            score = item.get("relevance_score") if isinstance(item, dict) else None
            if (
                isinstance(index, int)
                and not isinstance(index, bool)
                and 0 <= index < n
                and isinstance(score, (int, float))
                and not isinstance(score, bool)
                and math.isfinite(score)
            ):
                scores[index] = float(score)
            else:
                bad += 1
        if bad:
            logger.warning("rerank response held %d unusable result(s); not scored", bad)
        if results and all(s is None for s in scores):
            raise MalformedOutput("rerank response held no usable result")
        return scores

    # ------------------------------------------------------------------ protocol

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        scores = Scores([None] * len(texts))
        todo = [i for i, t in enumerate(texts) if t.strip()]  # empty texts: not scored
        if not todo:
            return scores
        chunks = [todo[j : j + self.max_documents] for j in range(0, len(todo), self.max_documents)]
        sem = asyncio.Semaphore(self.max_concurrency)

        async def one(chunk: list[int]) -> None:
            async with sem:
                payload = await self._post(self._body(query, [texts[i] for i in chunk]), deadline)
            for i, s in zip(chunk, self._parse(payload, len(chunk)), strict=True):
                scores[i] = s
                if s is None:
                    scores.reasons[i] = "malformed_output"

        if len(chunks) == 1:
            await one(chunks[0])
            return scores
        outcomes = await asyncio.gather(*(one(c) for c in chunks), return_exceptions=True)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if len(failures) == len(chunks):
            raise failures[0]
        for chunk, outcome in zip(chunks, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                reason = outcome.reason if isinstance(outcome, BackendError) else "backend_error"
                scores.reasons.update(dict.fromkeys(chunk, reason))
        if failures:  # the other requests' scores still count
            logger.warning(
                "%s: %d of %d rerank requests failed (%s); their texts are not scored",
                self.fingerprint,
                len(failures),
                len(chunks),
                failures[0],
            )
        return scores
