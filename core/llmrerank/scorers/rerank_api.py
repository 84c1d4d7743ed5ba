"""A fast stage or an LLM stage behind a hosted or self-hosted rerank or scoring endpoint.

Three wire formats cover the common servers and providers:

- ``"rerank"``: a JSON ``POST`` of ``{"model", "query", "documents": [str, ...], "top_n"}``
  answered by ``{"results": [{"index", "relevance_score"}, ...]}`` (extra fields ignored). That is
  Cohere's v2 rerank API, Jina's v1 rerank API, Together's Cohere-compatible rerank, Infinity's
  ``/rerank`` and vLLM's ``/rerank``, ``/v1/rerank`` (Jina-style) and ``/v2/rerank`` routes;
- ``"score"``: vLLM's ``/v1/score`` (pooling runner): ``{"model", "text_1": query, "text_2":
  [documents]}`` answered by ``{"data": [{"index", "score"}, ...]}``;
- ``"tei"``: Hugging Face text-embeddings-inference ``/rerank``: ``{"query", "texts": [...]}``
  answered by a list ``[{"index", "score"}, ...]``.

The providers differ in the format, the path, the environment variable holding the key, and the
name of the per-document truncation option; :data:`PROVIDERS` holds those differences.

The scorer works in either funnel slot. In the ``llm`` slot it is the LLM stage: scoring
endpoints serve reranker LLMs such as Qwen3-Reranker on vLLM's pooling runner (docs/backends.md).
With a literal :class:`~llmrerank.prompts.Profile` (``profile="qwen3-reranker"``) the query and
each document are sent already wrapped in that model's prompt: the query carries everything
before the text (system turn, instruction, query), each document the text and the assistant
prefix, which is how a pooling server concatenates the pair for such a model.

HTTP goes through the shared transport (:mod:`llmrerank.scorers._http`): pooled connections, the
deadline as each request's timeout, cancellation with the funnel, retries (tenacity) only for
retryable failures and only while the deadline leaves time, a circuit breaker per endpoint, the
API key as a pydantic ``SecretStr`` (never logged) and credentials removed from URLs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import SecretStr

from .._optional import require
from ..budget import Deadline
from ..errors import BackendError, BackendTimeout, ConfigError, InputError, MalformedOutput
from ..prompts import Profile, _short_hash, current_instruction, get_profile, sanitize_text
from ._http import HttpTransport, redact_url
from .base import Scores

if TYPE_CHECKING:
    import httpx

__all__ = ["PROVIDERS", "RerankAPIScorer", "RerankProvider", "WireFormat"]

logger = logging.getLogger("llmrerank")

WireFormat = Literal["rerank", "score", "tei"]

_TEXT_SLOT = "\x00LLMRERANK_TEXT\x00"


@dataclass(frozen=True, slots=True)
class RerankProvider:
    """How one provider spells its scoring request."""

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
    format: WireFormat = "rerank"


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
    "vllm-score": RerankProvider(
        "vllm-score", None, "/v1/score", "VLLM_API_KEY", False, "truncate_prompt_tokens", {},
        "score",
    ),
    "tei": RerankProvider(
        "tei", None, "/rerank", "TEI_API_KEY", False, None,
        {"raw_scores": False, "return_text": False, "truncate": True}, "tei",
    ),
    "infinity": RerankProvider(
        "infinity", None, "/rerank", "INFINITY_API_KEY", False, None,
        {"return_documents": False},
    ),
}  # fmt: skip


class RerankAPIScorer:
    """Scores texts with a rerank or scoring endpoint (see the module docstring).

    Args:
        provider: ``"cohere"``, ``"jina"``, ``"together"``, ``"vllm"`` (``/v1/rerank``),
            ``"vllm-score"`` (``/v1/score``), ``"tei"`` or ``"infinity"`` (see
            :data:`PROVIDERS`).
        model: the model name (e.g. ``"rerank-v3.5"``, or the model a server serves).
        base_url: overrides the provider's URL (required for self-hosted servers); several URLs
            are replicas (each request goes to the healthy one with the fewest in flight).
            ``path`` overrides the route.
        api_key: the key; by default read from the provider's environment variable
            (``COHERE_API_KEY``, ``JINA_API_KEY``, ``TOGETHER_API_KEY``, ``VLLM_API_KEY``,
            ``TEI_API_KEY``, ``INFINITY_API_KEY``).
        timeout: the longest one HTTP request may take (the deadline may cut it shorter).
        max_retries: retries after the first attempt, for retryable failures only.
        max_documents: documents per request (Cohere recommends at most 1,000); larger calls are
            split into concurrent requests of this size. Also the funnel's batch size.
        max_concurrency: requests in flight at once.
        max_tokens_per_doc: the provider's per-document truncation, where it has one.
        backoff: the first retry's wait in seconds (doubled each retry, with jitter), unless the
            server's ``Retry-After`` says otherwise.
        profile: a literal model profile (``"qwen3-reranker"``, ...): query and documents are
            sent wrapped in that model's prompt; part of the fingerprint.
        server_instruction: vLLM only, for a server started with a score template
            (``--chat-template .../qwen3_reranker.jinja``) that formats the pair itself: send the
            funnel's or request's instruction as the request's ``instruction`` field instead of
            a profile (give one or the other).
        breaker_threshold / breaker_reset: each endpoint's circuit breaker settings.
        headers: extra request headers (never logged).
        client: an ``httpx.AsyncClient`` to use instead of the scorer's own.
        transport: an ``httpx.AsyncBaseTransport`` for the scorer's own clients (tests).
    """

    def __init__(
        self,
        provider: str = "cohere",
        *,
        model: str,
        base_url: str | Sequence[str] | None = None,
        path: str | None = None,
        api_key: SecretStr | str | None = None,
        timeout: float = 30.0,
        max_retries: int = 2,
        max_documents: int = 1000,
        max_concurrency: int = 4,
        max_tokens_per_doc: int | None = None,
        backoff: float = 0.25,
        profile: str | Profile | None = None,
        server_instruction: bool = False,
        breaker_threshold: int = 3,
        breaker_reset: float = 10.0,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        require("httpx", extra="rerank-api", feature="RerankAPIScorer")
        if provider not in PROVIDERS:
            raise ConfigError(
                f"unknown rerank provider {provider!r}; choose one of {sorted(PROVIDERS)}"
            )
        spec = PROVIDERS[provider]
        if not isinstance(model, str) or not model.strip():
            raise InputError("model must name the rerank model (a non-empty string)")
        urls = [base_url] if isinstance(base_url, str) else list(base_url or [])
        if not urls and spec.base_url:
            urls = [spec.base_url]
        if not urls:
            raise ConfigError(f"provider {provider!r} needs base_url= (e.g. http://localhost:8000)")
        if timeout <= 0 or max_retries < 0 or max_documents < 1 or max_concurrency < 1:
            raise InputError(
                "timeout must be positive, max_retries non-negative, max_documents and "
                "max_concurrency at least 1"
            )
        if max_tokens_per_doc is not None and spec.truncation_field is None:
            raise ConfigError(f"provider {provider!r} has no per-document truncation option")
        self.profile = get_profile(profile) if profile is not None else None
        if self.profile is not None and self.profile.chat != "literal":
            raise ConfigError(
                f"profile {self.profile.name!r} needs the model's chat template; a scoring "
                "endpoint takes literal prompts only (e.g. profile='qwen3-reranker')"
            )
        if server_instruction and (profile is not None or spec.format == "tei"):
            raise ConfigError(
                "server_instruction=True is for a vLLM server that formats the pair with its own "
                "score template: give it without profile=, to provider 'vllm' or 'vllm-score'"
            )
        if server_instruction and spec.name not in ("vllm", "vllm-score"):
            raise ConfigError("server_instruction=True needs provider 'vllm' or 'vllm-score'")
        self.server_instruction = server_instruction
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
        self.path = path or spec.path
        roots = [u.strip().rstrip("/") for u in urls]
        if len(set(roots)) != len(roots):
            raise ConfigError(
                f"base_url lists the same server twice: {[redact_url(r) for r in roots]}"
            )
        self.url = redact_url(roots[0]) + self.path
        self._api_key: SecretStr | None = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_documents = max_documents
        self.batch_size = max_documents
        self.max_concurrency = max_concurrency
        self.max_tokens_per_doc = max_tokens_per_doc
        self.backoff = backoff
        self._http = HttpTransport(
            roots,
            name=f"rerank-api:{spec.name}:{model}",
            extra="rerank-api",
            feature="RerankAPIScorer",
            api_key=api_key,
            api_key_env=spec.api_key_env,
            headers=headers,
            max_concurrency=max_concurrency,
            request_timeout=timeout,
            connect_timeout=min(timeout, 5.0),
            max_retries=max_retries,
            backoff=backoff,
            breaker_threshold=breaker_threshold,
            breaker_reset=breaker_reset,
            client=client,
            transport=transport,
        )
        self.stats = self._http.stats

    @property
    def fingerprint(self) -> str:
        trunc = f",max_tokens={self.max_tokens_per_doc}" if self.max_tokens_per_doc else ""
        prof = f":{self.profile.fingerprint}" if self.profile is not None else ""
        if self.server_instruction:
            instruction = current_instruction()
            prof += f":server-instr:{_short_hash(instruction)}" if instruction else ":server-instr"
        return f"rerank-api:{self.provider.name}:{self.model}({self.url}{trunc}){prof}"

    @property
    def takes_instruction(self) -> bool:
        """Whether the profile takes a task instruction (Qwen3-Reranker's does)."""
        return self.server_instruction or (
            self.profile is not None and self.profile.takes_instruction
        )

    def __repr__(self) -> str:
        return f"RerankAPIScorer({self.fingerprint!r})"

    def endpoint_stats(self) -> list[dict[str, Any]]:
        """Per endpoint: URL (credentials removed), requests sent, outstanding, breaker state."""
        return self._http.endpoint_stats()

    async def aclose(self) -> None:
        """Close the scorer's own HTTP client (not one passed in)."""
        await self._http.aclose()

    # ------------------------------------------------------------------ wire format

    def _wrap(self, query: str, documents: Sequence[str]) -> tuple[str, list[str]]:
        """Query and documents in the profile's prompt (unchanged without a profile)."""
        profile = self.profile
        if profile is None:
            return query, list(documents)
        head, _, tail = profile.render(query, _TEXT_SLOT).partition(_TEXT_SLOT)
        clean = sanitize_text if profile.sanitize else str
        return head, [clean(d) + tail for d in documents]

    def _body(self, query: str, documents: Sequence[str]) -> dict[str, Any]:
        query, docs = self._wrap(query, documents)
        fmt = self.provider.format
        body: dict[str, Any]
        if fmt == "score":
            body = {"model": self.model, "text_1": query, "text_2": docs}
        elif fmt == "tei":
            body = {"query": query, "texts": docs}
        else:
            body = {"model": self.model, "query": query, "documents": docs, "top_n": len(docs)}
        body.update(self.provider.extra)
        if self.server_instruction and (instruction := current_instruction()) is not None:
            body["instruction"] = instruction
        if self.max_tokens_per_doc is not None and self.provider.truncation_field:
            body[self.provider.truncation_field] = self.max_tokens_per_doc
        return body

    def _parse(self, payload: Any, n: int) -> list[float | None]:
        fmt = self.provider.format
        if fmt == "score":
            items = payload.get("data") if isinstance(payload, dict) else None
            return _read_scores(items, n, "score", "score response has no 'data' list")
        if fmt == "tei":
            return _read_scores(payload, n, "score", "TEI rerank response is not a list")
        results = payload.get("results") if isinstance(payload, dict) else None
        return _read_scores(results, n, "relevance_score", "rerank response has no 'results' list")

    # ------------------------------------------------------------------ protocol

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        scores = Scores([None] * len(texts))
        todo = [i for i, t in enumerate(texts) if t.strip()]  # empty texts: not scored
        if not todo:
            return scores
        chunks = [todo[j : j + self.max_documents] for j in range(0, len(todo), self.max_documents)]

        async def one(chunk: list[int]) -> None:
            request = self._http.post(
                self.path, self._body(query, [texts[i] for i in chunk]), deadline
            )
            try:  # waiting for a request slot and the retries count against the deadline too
                payload = await asyncio.wait_for(request, deadline.timeout())
            except asyncio.TimeoutError:
                raise BackendTimeout(
                    f"{self.fingerprint}: not scored before the deadline"
                ) from None
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


def _read_scores(items: Any, n: int, field: str, missing: str) -> list[float | None]:
    """One score per document from ``[{"index", field}, ...]``; a document without a usable
    result stays ``None``."""
    if not isinstance(items, list):
        raise MalformedOutput(missing)
    scores: list[float | None] = [None] * n
    bad = 0
    for item in items:
        index = item.get("index") if isinstance(item, dict) else None
        score = item.get(field) if isinstance(item, dict) else None
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
        logger.warning("scoring response held %d unusable result(s); not scored", bad)
    if items and all(s is None for s in scores):
        raise MalformedOutput("scoring response held no usable result")
    return scores
