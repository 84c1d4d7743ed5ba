"""The ASGI app of ``llmrerank serve``: the rerank API, its Server-Sent-Events stream, health,
metrics and the demo page.

``create_app(settings, funnel=...)`` takes a ready :class:`~llmrerank.Funnel` (tests inject one
with a :class:`~llmrerank.testing.ScriptedScorer`); without one it builds
``Funnel.from_preset(settings.preset)`` with the configured LLM at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from .._optional import require

require("fastapi", extra="serve", feature="llmrerank serve")
require("sse_starlette", extra="serve", feature="llmrerank serve", package="sse-starlette")
require("prometheus_client", extra="serve", feature="llmrerank serve", package="prometheus-client")

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import HTMLResponse, JSONResponse, Response  # noqa: E402
from fastapi.staticfiles import StaticFiles  # noqa: E402
from sse_starlette import EventSourceResponse, ServerSentEvent  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

from ..cache import MemoryScoreCache, ScoreCache, SQLiteScoreCache  # noqa: E402
from ..calibration import relevance_scores  # noqa: E402
from ..errors import ConfigError, InputError, LLMRerankError  # noqa: E402
from ..funnel import Funnel  # noqa: E402
from ..presets import PRESETS, get_preset, is_default_llm  # noqa: E402
from ..scorers.base import Scorer  # noqa: E402
from ..types import Candidate, Ranking, RankingUpdate  # noqa: E402
from .admission import Admission, Overloaded  # noqa: E402
from .corpus import DemoCorpus  # noqa: E402
from .metrics import CONTENT_TYPE_LATEST, ServerMetrics  # noqa: E402
from .schemas import (  # noqa: E402
    CohereV2RerankRequest,
    DemoSearchRequest,
    RerankRequest,
    TEIRerankRequest,
    _Knobs,
    cohere_v2_body,
    dumps,
    ranking_body,
    tei_body,
)
from .settings import ServeSettings  # noqa: E402

__all__ = ["ServerState", "build_cache", "build_funnel", "cache_status", "create_app", "worker_app"]

logger = logging.getLogger("llmrerank")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_ENDPOINTS = frozenset(
    {
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/rerank",
        "/v1/rerank/stream",
        "/v2/rerank",
        "/rerank",
        "/v1/demo/info",
        "/v1/demo/search",
        "/v1/demo/search/stream",
    }
)
_MIN_DEADLINE = 0.001
"""What is left of a deadline that queueing used up: enough for the fast stage only."""


class ApiError(Exception):
    """A client error with its HTTP status and a message that says how to fix the request."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class _JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")


def _error(status: int, kind: str, message: str, **extra: Any) -> _JSON:
    # "message" for Cohere-style clients, "detail" for FastAPI-style ones.
    # "error" for TEI-style clients.
    body = {"type": kind, "message": message, "detail": message, "error": message, **extra}
    return _JSON(body, status_code=status)


@dataclass
class ServerState:
    """What the handlers share: settings, funnels, admission, metrics, the demo corpus."""

    settings: ServeSettings
    funnel: Funnel | None
    corpus: DemoCorpus | None
    admission: Admission
    metrics: ServerMetrics
    funnels: dict[str, Funnel] = field(default_factory=dict)
    streams: set[asyncio.Task[Any]] = field(default_factory=set)
    """Funnel work behind open streams (tests check it empties when clients leave)."""
    ready: bool = False

    def pick(self, preset: str | None) -> Funnel:
        """The funnel for a request: the server's, or one per preset sharing its scorers."""
        base = self.funnel
        if base is None:
            raise ApiError(503, "starting", "the server is still starting; retry shortly")
        if preset is None or preset == base.name:
            return base
        if preset not in PRESETS:
            raise ApiError(
                422,
                "invalid_request",
                f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}",
            )
        if preset not in self.funnels:
            chosen = get_preset(preset)
            # the embedded default runs as each preset runs it (its text cut); one loaded model
            llm = chosen.default_llm() if is_default_llm(base.llm) else base.llm
            self.funnels[preset] = chosen.build(
                llm=llm, fast=base.fast, cache=base.cache, breaker=base.breaker
            )
        return self.funnels[preset]


def _build_llm(settings: ServeSettings) -> Scorer | None:
    if settings.llm == "none":
        return None
    if settings.llm == "scripted":
        from ..testing import ScriptedScorer

        return ScriptedScorer(latency=settings.scripted_latency, name="serve")
    if settings.llm == "openai":
        if not settings.llm_endpoints or not settings.llm_model:
            raise ConfigError(
                "llm = 'openai' needs llm_endpoints (--llm-endpoint URL, repeatable) and "
                "llm_model (--llm-model NAME)"
            )
        module = require(
            "llmrerank.scorers.llm_openai", extra="openai", feature="the OpenAI-compatible backend"
        )
        kwargs: dict[str, Any] = {}
        if settings.llm_api_key is not None:
            kwargs["api_key"] = settings.llm_api_key
        try:
            scorer: Scorer = module.OpenAILLMScorer(
                list(settings.llm_endpoints), settings.llm_model, **kwargs
            )
        except (AttributeError, TypeError) as exc:
            raise ConfigError(f"could not build the OpenAI-compatible scorer: {exc}") from exc
        return scorer
    try:
        return get_preset(settings.preset).default_llm()
    except ImportError as exc:
        raise ConfigError(
            f"the embedded default LLM is not available ({exc}); install llmrerank[local] "
            "or start with --llm none (fast stage only)"
        ) from exc


def build_funnel(settings: ServeSettings) -> Funnel:
    """The server's default funnel: the settings' preset, LLM and overrides."""
    overrides: dict[str, Any] = {}
    if settings.deadline is not None:
        overrides["deadline"] = settings.deadline
    if settings.k is not None:
        overrides["k"] = settings.k
    cache = build_cache(settings)
    if cache is not None:
        overrides["cache"] = cache
    return get_preset(settings.preset).build(llm=_build_llm(settings), **overrides)


def build_cache(settings: ServeSettings) -> ScoreCache | None:
    """The score cache the settings name: in memory, a SQLite file, a shared Redis, or none."""
    where = settings.score_cache
    if where == "none" or (where == "memory" and settings.cache_size == 0):
        return None
    if where == "memory":
        return MemoryScoreCache(settings.cache_size)
    if where.startswith("sqlite://"):
        path = where[len("sqlite://") :]
        if not path:
            raise ConfigError("cache = 'sqlite:///path/to/file.db' needs a path")
        return SQLiteScoreCache(path)
    module = require("llmrerank.cache_redis", extra="redis", feature="the Redis score cache")
    cache: ScoreCache = module.RedisScoreCache(
        where,
        password=settings.cache_password,
        prefix=settings.cache_prefix,
        ttl=settings.cache_ttl or None,
        timeout=settings.cache_timeout,
    )
    return cache


def cache_status(cache: ScoreCache | None) -> dict[str, Any] | None:
    """What ``/healthz`` says of the score cache (never a password)."""
    if cache is None:
        return None
    status = getattr(cache, "status", None)
    if callable(status):
        answer: dict[str, Any] = status()
        return answer
    if isinstance(cache, MemoryScoreCache):
        return {"backend": "memory", "entries": len(cache), "max_entries": cache.max_entries}
    if isinstance(cache, SQLiteScoreCache):
        return {"backend": "sqlite", "path": str(cache.path), "available": cache.available}
    return {"backend": type(cache).__name__}


def worker_app() -> FastAPI:
    """The app of one ``--workers`` process: the settings come from the parent through the
    environment (:data:`llmrerank.serve.cli.WORKER_SETTINGS_ENV`); the funnel and its model are
    built and loaded in this process's start-up, before it accepts connections."""
    from .cli import WORKER_SETTINGS_ENV, configure_logging

    raw = os.environ.get(WORKER_SETTINGS_ENV)
    if not raw:
        raise ConfigError(f"worker_app needs the settings in ${WORKER_SETTINGS_ENV}")
    settings = ServeSettings.model_validate_json(raw)
    configure_logging(settings.log_level)
    return create_app(settings)


class _BodyLimit:
    """Reads a request body up to ``limit`` bytes before the app sees it; 413 beyond.

    After the body, ``receive`` passes through to the server, so a client leaving mid-stream is
    still seen (``http.disconnect``) by the streaming response.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        too_big = _error(
            413,
            "request_too_large",
            f"request body larger than {self.limit} bytes (the server's max_body_bytes); "
            "send fewer or shorter documents",
        )
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await too_big(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await too_big(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class _Metered:
    """Counts every response by endpoint and status, and times it to its last byte."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        endpoint = path if path in _ENDPOINTS else "other"
        status = 500
        t0 = time.monotonic()

        async def metered_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, metered_send)
        finally:
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            self.metrics.latency.labels(endpoint=endpoint).observe(time.monotonic() - t0)


class _StreamResponse(EventSourceResponse):
    """An SSE response that always runs ``on_close`` (close the work, free the slot), even when
    the client left before the first byte."""

    def __init__(self, content: Any, on_close: Callable[[], Awaitable[None]], **kw: Any) -> None:
        super().__init__(content, **kw)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._on_close()


def create_app(
    settings: ServeSettings | None = None,
    *,
    funnel: Funnel | None = None,
    corpus: DemoCorpus | None = None,
) -> FastAPI:
    """The server app. ``funnel`` and ``corpus`` replace what ``settings`` would build."""
    settings = settings or ServeSettings()
    state = ServerState(
        settings=settings,
        funnel=funnel,
        corpus=corpus,
        admission=Admission(settings.max_concurrent, settings.max_queued, settings.retry_after),
        metrics=ServerMetrics(),
    )
    state.admission.on_change = state.metrics.set_load

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.funnel is None:
            state.funnel = await asyncio.to_thread(build_funnel, settings)
        load = getattr(state.funnel.llm, "load", None)
        if callable(load):  # an in-process model: load it now, not on the first request
            await asyncio.to_thread(load)
        if state.corpus is None and settings.demo:
            state.corpus = await asyncio.to_thread(
                DemoCorpus.from_stdlib, settings.demo_corpus_size
            )
        ping = getattr(state.funnel.cache, "aget_many", None)
        if ping is not None:  # a shared cache: say at start-up whether it answers
            from ..budget import Deadline
            from ..errors import CacheUnavailable

            # a failure is logged by the cache, once; requests rank without it until it is back
            with contextlib.suppress(CacheUnavailable):
                await ping("llmrerank:ping", "ping", ["ping"], deadline=Deadline.after(1.0))
        state.ready = True
        state.metrics.worker_up()
        logger.info(
            "llmrerank serve ready (pid %d): %r, cache %s",
            os.getpid(),
            state.funnel,
            (cache_status(state.funnel.cache) or {}).get("backend", "none"),
        )
        yield
        state.ready = False
        for task in list(state.streams):
            task.cancel()
        aclose = getattr(state.funnel.cache, "aclose", None)
        if aclose is not None:
            await aclose()
        state.metrics.worker_down()

    app = FastAPI(
        title="llmrerank",
        summary="LLM reranking with a hard deadline, graceful degradation and streamed results",
        version=_version(),
        lifespan=lifespan,
        default_response_class=_JSON,
    )
    app.state.llmrerank = state
    _install_error_handlers(app, state)
    _install_routes(app, state)
    app.mount("/static", StaticFiles(packages=[("llmrerank.serve", "static")]), name="static")
    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(_Metered, metrics=state.metrics)
    return app


def _version() -> str:
    from .. import __version__

    return __version__


def _cohere_status(request: Request, status: int) -> int:
    """Cohere answers an invalid request with 400 (its SDK raises ``BadRequestError``), so its v2
    route does too; the other routes keep 422."""
    return 400 if status == 422 and request.url.path.rstrip("/").endswith("/v2/rerank") else status


def _install_error_handlers(app: FastAPI, state: ServerState) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors: dict[str, str] = {}
        for e in exc.errors():
            kind = e.get("type", "")
            loc = [str(p) for p in e.get("loc", ()) if p != "body"]
            if kind == "json_invalid":
                return _error(
                    400,
                    "invalid_json",
                    f"the request body is not valid JSON ({e.get('msg')}); send a JSON object",
                )
            if not loc and kind in ("model_attributes_type", "dict_type", "missing"):
                return _error(
                    400,
                    "invalid_json",
                    "the request body must be a JSON object (Content-Type: application/json) "
                    "with 'query' and 'documents'",
                )
            # A union (a document is a string or an object) reports one error per member.
            union = [p for p in loc if p in ("str", "dict[str,any]")]
            path = _loc_text([p for p in loc if p not in union])
            msg = (
                "must be a string or an object with a 'text' field"
                if union
                else str(e.get("msg", "invalid"))
            )
            errors.setdefault(path, msg)
        items = [{"loc": k, "msg": v} for k, v in errors.items()]
        text = "; ".join(f"{k}: {v}" for k, v in list(errors.items())[:5])
        if len(errors) > 5:
            text += f"; and {len(errors) - 5} more"
        status = _cohere_status(request, 422)
        return _error(status, "invalid_request", f"invalid request: {text}", errors=items)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error(_cohere_status(request, exc.status), exc.kind, exc.message)

    @app.exception_handler(LLMRerankError)
    async def rerank_error(request: Request, exc: LLMRerankError) -> Response:
        if isinstance(exc, (InputError, ConfigError)):
            return _error(_cohere_status(request, 422), "invalid_request", str(exc))
        logger.warning("request failed with %s: %s", type(exc).__name__, exc)
        return _error(503, "backend_error", f"{type(exc).__name__}: {exc}")

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> Response:
        state.metrics.rejected.inc()
        response = _error(503, "overloaded", str(exc), retry_after=exc.retry_after)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        response = _error(exc.status_code, "http_error", message)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        logger.exception("internal error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", f"internal error ({type(exc).__name__}); see the log")


def _loc_text(parts: Sequence[str]) -> str:
    """``documents.3.text`` -> ``documents[3].text``."""
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def _check_limits(
    state: ServerState, req: _Knobs, query: str, texts: Sequence[str]
) -> tuple[Funnel, float | None]:
    """Size limits (413), deadline bounds (422); returns the funnel and the deadline to use."""
    s = state.settings
    if len(texts) > s.max_documents:
        raise ApiError(
            413,
            "too_many_documents",
            f"{len(texts)} documents; this server accepts at most {s.max_documents} per request",
        )
    if len(query) > s.max_chars_per_doc:
        raise ApiError(
            413,
            "query_too_long",
            f"query has {len(query)} characters; at most {s.max_chars_per_doc}",
        )
    for i, text in enumerate(texts):
        if len(text) > s.max_chars_per_doc:
            raise ApiError(
                413,
                "document_too_long",
                f"documents[{i}] has {len(text)} characters; this server accepts at most "
                f"{s.max_chars_per_doc} per document (split it into passages)",
            )
    if req.deadline is not None and req.deadline > s.max_deadline:
        raise ApiError(
            422,
            "invalid_request",
            f"deadline {req.deadline} s is beyond this server's max_deadline ({s.max_deadline} s)",
        )
    funnel = state.pick(req.preset)
    if req.instruction is not None and not (
        funnel.llm is not None and getattr(funnel.llm, "takes_instruction", False)
    ):
        raise ApiError(
            422,
            "invalid_request",
            "this server's LLM scorer takes no instruction (its profile has no instruction slot)",
        )
    if req.k is not None and req.k > funnel.k_max * 10:
        raise ApiError(
            422, "invalid_request", f"k={req.k} is too large; at most {funnel.k_max * 10}"
        )
    return funnel, req.deadline if req.deadline is not None else funnel.deadline


def _left(deadline: float | None, waited: float) -> float | None:
    return None if deadline is None else max(deadline - waited, _MIN_DEADLINE)


def _model_name(funnel: Funnel, requested: str | None) -> str:
    return requested or f"llmrerank-{funnel.name}"


def _install_routes(app: FastAPI, state: ServerState) -> None:
    s = state.settings

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness and what this server runs."""
        f = state.funnel
        return {
            "status": "ok" if state.ready else "starting",
            "preset": f.name if f else s.preset,
            "fast_scorer": f.fast.fingerprint if f else None,
            "llm_scorer": f.llm.fingerprint if f and f.llm else None,
            "deadline_s": f.deadline if f else None,
            "running": state.admission.running,
            "queued": state.admission.queued,
            "demo_corpus": len(state.corpus) if state.corpus else 0,
            "cache": cache_status(f.cache) if f else None,
            "pid": os.getpid(),
            "workers": s.workers,
        }

    @app.get("/readyz")
    async def readyz() -> Response:
        """200 once this process has its funnel and model loaded; 503 while starting or
        stopping (a load balancer's readiness check). The score cache does not count: without
        it the service still ranks."""
        if not state.ready:
            return _error(503, "starting", "not ready: starting or shutting down")
        return _JSON({"ready": True, "pid": os.getpid()})

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format."""
        state.metrics.set_load(state.admission.running, state.admission.queued)
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def rerank_input(req: RerankRequest) -> tuple[Funnel, float | None, list[Candidate]]:
        try:
            texts = req.texts()
        except ValueError as exc:
            raise ApiError(422, "invalid_request", str(exc)) from None
        funnel, deadline = _check_limits(state, req, req.query, texts)
        cands = [Candidate(id=str(i), text=t, metadata={"index": i}) for i, t in enumerate(texts)]
        return funnel, deadline, cands

    @app.post("/v1/rerank")
    async def rerank(req: RerankRequest) -> Response:
        """Rerank ``documents`` for ``query`` (the Cohere/Jina request and response format)."""
        funnel, deadline, cands = rerank_input(req)
        request_id = str(uuid.uuid4())
        async with state.admission.slot() as waited:
            ranking = await funnel.arerank(
                req.query,
                cands,
                k=req.k,
                deadline=_left(deadline, waited),
                input_ranked=req.input_ranked,
                instruction=req.instruction,
            )
        state.metrics.observe_ranking(ranking)
        body = ranking_body(
            ranking,
            list(req.documents),
            top_n=req.top_n,
            return_documents=req.return_documents,
            model=_model_name(funnel, req.model),
            request_id=request_id,
            extra={"queue_wait": waited},
        )
        return _JSON(body)

    async def run_rerank(
        req: _Knobs, query: str, texts: list[str]
    ) -> tuple[Funnel, Ranking, dict[str, Any]]:
        """The funnel behind every rerank format: limits, admission, deadline, metrics."""
        funnel, deadline = _check_limits(state, req, query, texts)
        cands = [Candidate(id=str(i), text=t, metadata={"index": i}) for i, t in enumerate(texts)]
        async with state.admission.slot() as waited:
            ranking = await funnel.arerank(query, cands, k=req.k, deadline=_left(deadline, waited))
        state.metrics.observe_ranking(ranking)
        return funnel, ranking, {"queue_wait": waited}

    @app.post("/v2/rerank")
    async def rerank_v2(req: CohereV2RerankRequest) -> Response:
        """Cohere's v2 rerank API: ``results[{index, relevance_score}]``, ``id``, ``meta``."""
        _, ranking, extra = await run_rerank(req, req.query, req.texts())
        body = cohere_v2_body(ranking, top_n=req.top_n, request_id=str(uuid.uuid4()), extra=extra)
        return _JSON(body)

    @app.post("/rerank")
    async def rerank_tei(req: TEIRerankRequest) -> Response:
        """Hugging Face TEI's rerank API: a list of ``{index, score[, text]}``, best first."""
        _, ranking, _extra = await run_rerank(req, req.query, list(req.texts))
        body = tei_body(
            ranking, list(req.texts), raw_scores=req.raw_scores, return_text=req.return_text
        )
        return _JSON(body)

    @app.post("/v1/rerank/stream")
    async def rerank_stream(req: RerankRequest) -> Response:
        """The same request; answers with Server-Sent Events ``fast``, ``partial``..., ``final``.
        A client that disconnects cancels the work."""
        funnel, deadline, cands = rerank_input(req)
        request_id = str(uuid.uuid4())
        documents = list(req.documents)

        def body(update: RankingUpdate, extra: dict[str, Any]) -> dict[str, Any]:
            return ranking_body(
                update.ranking,
                documents,
                top_n=req.top_n,
                return_documents=req.return_documents,
                model=_model_name(funnel, req.model),
                request_id=request_id,
                extra=extra,
            )

        return await _stream(
            state,
            funnel,
            req.query,
            cands,
            req.k,
            deadline,
            body,
            input_ranked=req.input_ranked,
            instruction=req.instruction,
        )

    @app.get("/", response_class=HTMLResponse)
    async def index() -> Response:
        """The demo page (or a pointer to the API when the demo is off)."""
        if state.corpus is None:
            return HTMLResponse(
                "<!doctype html><title>llmrerank</title><p>llmrerank serve: POST /v1/rerank, "
                "POST /v1/rerank/stream, GET /healthz, GET /metrics, GET /docs. "
                "The demo page is off (--no-demo).</p>"
            )
        from importlib.resources import files

        page = files("llmrerank.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    def corpus() -> DemoCorpus:
        if state.corpus is None:
            raise ApiError(404, "demo_disabled", "the demo is off on this server (--no-demo)")
        return state.corpus

    @app.get("/v1/demo/info")
    async def demo_info() -> dict[str, Any]:
        """The demo corpus and the funnel behind the page."""
        c = corpus()
        f = state.pick(None)
        return {
            "corpus_size": len(c),
            "corpus_source": c.source,
            "retrieve_top_n": s.demo_top_n,
            "preset": f.name,
            "presets": ([] if f.name in PRESETS else [f.name]) + list(PRESETS),
            "deadline_s": f.deadline,
            "fast_scorer": f.fast.fingerprint,
            "llm_scorer": f.llm.fingerprint if f.llm else None,
        }

    def demo_input(
        req: DemoSearchRequest,
    ) -> tuple[Funnel, float | None, list[Candidate], dict[str, Any]]:
        c = corpus()
        funnel, deadline = _check_limits(state, req, req.query, [])
        if not req.query.strip():
            raise ApiError(422, "invalid_request", "query is empty; type a few words to search")
        t0 = time.monotonic()
        hits = c.search(req.query, s.demo_top_n)
        retrieval = {
            "corpus_size": len(c),
            "retrieved": len(hits),
            "seconds": time.monotonic() - t0,
        }
        cands = [
            Candidate(
                id=doc.id,
                text=f"{doc.title}: {doc.text}",
                metadata={"index": i, "title": doc.title, "text": doc.text},
                retrieval_score=score,
            )
            for i, (doc, score) in enumerate(hits)
        ]
        return funnel, deadline, cands, retrieval

    def demo_body(
        c: DemoCorpus,
        query: str,
        ranking: Ranking,
        top_n: int,
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        shown = ranking.results[:top_n]
        probs = relevance_scores(ranking)
        # Where each result stood in the fast ranking (the funnel's own fast-stage order), so
        # the page can show how far the LLM moved it.
        fast_order = sorted(
            ranking.results,
            key=lambda r: (
                -(r.fast_score if r.fast_score is not None else -math.inf),
                -(r.candidate.retrieval_score or 0.0),
                r.candidate.metadata["index"],
            ),
        )
        fast_rank = {r.candidate.id: i for i, r in enumerate(fast_order)}
        results = [
            {
                "id": r.candidate.id,
                "index": r.candidate.metadata["index"],
                "title": r.candidate.metadata["title"],
                "text": r.candidate.metadata["text"],
                "relevance_score": p,
                "fast_rank": fast_rank[r.candidate.id],
                "stage": r.stage,
                "scores": {"fused": r.score, "fast": r.fast_score, "llm": r.llm_score},
                "cached": r.cached,
            }
            for r, p in zip(shown, probs, strict=False)
        ]
        summary = c.summary(query, [r.candidate.metadata["text"] for r in shown[:5]])
        return {
            "query": query,
            "results": results,
            "summary": summary,
            "llmrerank": {**ranking.provenance(), **extra},
        }

    @app.post("/v1/demo/search")
    async def demo_search(req: DemoSearchRequest) -> Response:
        """BM25 over the whole demo corpus, then the funnel over the top hits."""
        funnel, deadline, cands, retrieval = demo_input(req)
        async with state.admission.slot() as waited:
            ranking = await funnel.arerank(
                req.query,
                cands,
                k=req.k,
                deadline=_left(deadline, waited),
                input_ranked=req.input_ranked,
                instruction=req.instruction,
            )
        state.metrics.observe_ranking(ranking)
        extra = {"queue_wait": waited, "retrieval": retrieval, "kind": "final"}
        return _JSON(demo_body(corpus(), req.query, ranking, req.top_n, extra))

    @app.post("/v1/demo/search/stream")
    async def demo_search_stream(req: DemoSearchRequest) -> Response:
        """The demo search as Server-Sent Events (what the page consumes)."""
        funnel, deadline, cands, retrieval = demo_input(req)
        c = corpus()

        def body(update: RankingUpdate, extra: dict[str, Any]) -> dict[str, Any]:
            return demo_body(
                c, req.query, update.ranking, req.top_n, {**extra, "retrieval": retrieval}
            )

        return await _stream(
            state,
            funnel,
            req.query,
            cands,
            req.k,
            deadline,
            body,
            input_ranked=req.input_ranked,
            instruction=req.instruction,
        )


async def _stream(
    state: ServerState,
    funnel: Funnel,
    query: str,
    cands: list[Candidate],
    k: int | None,
    deadline: float | None,
    body: Callable[[RankingUpdate, dict[str, Any]], dict[str, Any]],
    *,
    input_ranked: bool | None = None,
    instruction: str | None = None,
) -> Response:
    """Admit, compute the ``fast`` update before answering (so bad input is a 4xx, not an
    event), then stream the rest. The slot is held until the stream ends or the client leaves."""
    admission = state.admission
    waited = await admission.acquire()
    updates: AsyncIterator[RankingUpdate] | None = None
    try:
        updates = funnel.astream(
            query,
            cands,
            k=k,
            deadline=_left(deadline, waited),
            input_ranked=input_ranked,
            instruction=instruction,
        )
        first = await anext(updates)
    except BaseException:
        if updates is not None:
            await updates.aclose()  # type: ignore[attr-defined]
        admission.release()
        raise
    finished = False

    async def events() -> AsyncIterator[ServerSentEvent]:
        nonlocal finished
        task = asyncio.current_task()
        if task is not None:
            state.streams.add(task)
        try:
            update: RankingUpdate | None = first
            n = 0
            while update is not None:
                extra = {"kind": update.kind, "elapsed": update.elapsed, "queue_wait": waited}
                yield ServerSentEvent(data=dumps(body(update, extra)), event=update.kind, id=str(n))
                n += 1
                if update.kind == "final":
                    state.metrics.observe_ranking(update.ranking)
                    finished = True
                    return
                update = await anext(updates, None)
        finally:
            if task is not None:
                state.streams.discard(task)

    async def close() -> None:
        if not finished:
            state.metrics.cancelled.inc()
            logger.info("stream closed before the final ranking; its work was cancelled")
        await updates.aclose()  # type: ignore[attr-defined]
        admission.release()

    return _StreamResponse(events(), on_close=close, ping=15, headers={"Cache-Control": "no-store"})
