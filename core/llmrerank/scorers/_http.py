"""The one HTTP transport of the HTTP scorers (OpenAI-compatible LLM servers, ``/rerank`` and
scoring endpoints).

- **Pool**: one ``httpx.AsyncClient`` per event loop (an httpx pool belongs to one loop), with a
  semaphore bounding requests in flight.
- **Endpoints**: one or more server roots; each request goes to the healthy one with the fewest
  requests outstanding, each has its own :class:`~llmrerank.breaker.CircuitBreaker`.
- **Deadline**: each request's timeout comes from the :class:`~llmrerank.budget.Deadline`
  (capped by ``request_timeout``); cancelling the caller cancels the request (httpx closes that
  connection, so the server sees the client go away), and a cancelled half-open trial reopens the
  breaker instead of staying reserved.
- **Retries** (tenacity): only for retryable failures (connection errors, 5xx, 408, 429 honouring
  ``Retry-After``, a per-request timeout that left deadline time) and only while the deadline
  leaves time for the wait.
- **Credentials**: the API key is a pydantic ``SecretStr`` sent as a Bearer header;
  ``user:password`` in a URL goes as basic auth and is removed from every URL that is shown
  (:func:`redact_url`). Neither is ever logged or put in an error message.

Failures map onto the error tree: refused/dropped connections and 5xx ->
:class:`BackendUnavailable`; 429 -> :class:`RateLimited`; the deadline -> :class:`BackendTimeout`;
401/403 and other 4xx -> :class:`BackendError` (not retried); a body that is not JSON ->
:class:`MalformedOutput`.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import logging
import math
import random
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import SecretStr

from .._optional import require
from ..breaker import CircuitBreaker
from ..budget import Deadline
from ..errors import (
    BackendError,
    BackendTimeout,
    BackendUnavailable,
    CircuitOpen,
    ConfigError,
    MalformedOutput,
    RateLimited,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpTransport", "describe", "redact_url", "retry_after", "url_auth"]

logger = logging.getLogger("llmrerank")

MIN_ATTEMPT_SECONDS = 0.02
"""A retry is not started with less time than this left before the deadline."""


def redact_url(url: str) -> str:
    """The URL without user:password, for messages and fingerprints."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def url_auth(url: str) -> tuple[str, str] | None:
    """Basic-auth credentials written into a URL (``http://user:pw@host``), if any."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return None
    return unquote(parts.username or ""), unquote(parts.password or "")


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def describe(exc: Exception) -> str:
    """A transport error in words (never the URL, which may carry credentials)."""
    name = type(exc).__name__
    if name == "ConnectError":
        return "connection refused or unreachable"
    if name in ("RemoteProtocolError", "ReadError"):
        return "the server closed the connection mid-request"
    return f"{name}"


def error_text(resp: httpx.Response) -> str:
    """A short, single-line excerpt of an error body."""
    try:
        body = resp.json()
        if isinstance(body, dict):
            err = body.get("error", body.get("detail", body.get("message", body)))
            if isinstance(err, dict):
                err = err.get("message", err)
            return " ".join(str(err).split())[:200]
    except ValueError:
        pass
    return " ".join(resp.text.split())[:200]


@dataclass
class Endpoint:
    """One server root: its health (circuit breaker) and its load (requests outstanding)."""

    root: str
    """The root without credentials (paths are appended to it)."""
    breaker: CircuitBreaker
    auth: tuple[str, str] | None = field(default=None, repr=False)
    """``user:password`` from the URL, sent as a header so the URL never carries (or logs) it."""
    outstanding: int = 0
    requests: int = 0

    @property
    def display(self) -> str:
        return self.root


@dataclass
class _LoopState:
    """What must not cross event loops: the HTTP client and the semaphore."""

    client: httpx.AsyncClient
    semaphore: asyncio.Semaphore
    setup_lock: asyncio.Lock
    own: bool = True


class HttpTransport:
    """Pooled JSON-over-HTTP to one or more replicas with breakers, retries and the deadline.

    Args:
        roots: server roots (``http://host:8000``); paths given to :meth:`post` are appended.
        name: what the scorer calls itself in log lines (no credentials).
        api_key: sent as ``Authorization: Bearer``; ``api_key_env`` names where it came from in
            the 401/403 message.
        headers: extra request headers (never logged).
        client: an ``httpx.AsyncClient`` to use instead of the transport's own (not closed).
        transport: an ``httpx.AsyncBaseTransport`` for the transport's own clients (tests).
    """

    def __init__(
        self,
        roots: Sequence[str],
        *,
        name: str,
        extra: str,
        feature: str,
        api_key: SecretStr | None = None,
        api_key_env: str = "",
        headers: Mapping[str, str] | None = None,
        max_concurrency: int = 16,
        request_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_retries: int = 2,
        backoff: float = 0.05,
        breaker_threshold: int = 3,
        breaker_reset: float = 10.0,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._httpx = require("httpx", extra=extra, feature=feature)
        self._tenacity = require("tenacity", extra=extra, feature=f"retries of {feature}")
        if not roots:
            raise ConfigError("no server URL given")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency!r}")
        if request_timeout <= 0 or connect_timeout <= 0:
            raise ConfigError("request_timeout and connect_timeout must be positive")
        if max_retries < 0 or backoff < 0:
            raise ConfigError("max_retries and backoff must not be negative")
        self.name = name
        self.api_key_env = api_key_env
        self._api_key = api_key
        self._headers = dict(headers or {})
        self.max_concurrency = max_concurrency
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self._client = client
        self._transport = transport
        self.endpoints = [
            Endpoint(
                root=redact_url(r),
                breaker=CircuitBreaker(
                    breaker_threshold, breaker_reset, name=f"{redact_url(r)} ({name})"
                ),
                auth=url_auth(r),
            )
            for r in roots
        ]
        self._rotation = itertools.count()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._loops_lock = threading.Lock()
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "failures": 0}

    @property
    def has_key(self) -> bool:
        return self._api_key is not None

    @property
    def in_flight(self) -> int:
        return sum(e.outstanding for e in self.endpoints)

    def endpoint_stats(self) -> list[dict[str, Any]]:
        """Per endpoint: URL (credentials removed), requests sent, outstanding, breaker state."""
        return [
            {
                "url": e.display,
                "requests": e.requests,
                "outstanding": e.outstanding,
                "breaker": e.breaker.state,
            }
            for e in self.endpoints
        ]

    # ------------------------------------------------------------------ lifecycle

    def _request_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        headers.update(self._headers)
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        return headers

    def state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        with self._loops_lock:
            state = self._loops.get(loop)
            if state is None or state.client.is_closed:
                httpx = self._httpx
                if self._client is not None:
                    client, own = self._client, False
                else:
                    limits = httpx.Limits(
                        max_connections=self.max_concurrency + 4,
                        max_keepalive_connections=self.max_concurrency + 4,
                    )
                    client = httpx.AsyncClient(
                        limits=limits,
                        timeout=httpx.Timeout(self.request_timeout, connect=self.connect_timeout),
                        transport=self._transport,
                        trust_env=False,
                    )
                    own = True
                state = _LoopState(
                    client, asyncio.Semaphore(self.max_concurrency), asyncio.Lock(), own
                )
                self._loops[loop] = state
            return state

    async def aclose(self) -> None:
        """Close this event loop's own HTTP client (not one passed in)."""
        loop = asyncio.get_running_loop()
        with self._loops_lock:
            state = self._loops.pop(loop, None)
        if state is not None and state.own:
            await state.client.aclose()

    def timeout(self, seconds: float | None) -> httpx.Timeout:
        total = self.request_timeout if seconds is None else seconds
        timeout: httpx.Timeout = self._httpx.Timeout(
            total, connect=min(total, self.connect_timeout)
        )
        return timeout

    # ------------------------------------------------------------------ requests

    async def probe(
        self, verb: str, path: str, body: dict[str, Any] | None, deadline: Deadline
    ) -> Any:
        """A detection request to the first endpoint that answers: the JSON, or None on 4xx.
        Raises :class:`BackendUnavailable` / :class:`BackendTimeout` when no endpoint answers."""
        httpx = self._httpx
        client = self.state().client
        last: BackendError | None = None
        for ep in self.endpoints:
            timeout = deadline.timeout(cap=self.request_timeout)
            if timeout is not None and timeout <= 0:
                raise BackendTimeout("deadline passed while detecting the server")
            try:
                resp = await asyncio.wait_for(
                    client.request(
                        verb,
                        ep.root + path,
                        json=body,
                        headers=self._request_headers(),
                        auth=ep.auth or httpx.USE_CLIENT_DEFAULT,
                        timeout=self.timeout(timeout),
                    ),
                    timeout,
                )
            except (asyncio.TimeoutError, httpx.TimeoutException):
                last = BackendTimeout(f"{ep.display}: no answer before the deadline")
                continue
            except httpx.TransportError as exc:
                last = BackendUnavailable(f"{ep.display}: {describe(exc)}")
                continue
            if resp.status_code >= 500:
                last = BackendUnavailable(f"{ep.display}: HTTP {resp.status_code}")
                continue
            if resp.status_code >= 400:
                return None
            try:
                return resp.json()
            except ValueError:
                return None
        assert last is not None
        raise last

    def _pick(self, tried: set[int]) -> tuple[int, Endpoint]:
        """The healthy endpoint with the fewest requests outstanding (untried ones first)."""
        n = len(self.endpoints)
        start = next(self._rotation) % n
        order = sorted(
            range(n),
            key=lambda i: (i in tried, self.endpoints[i].outstanding, (i - start) % n),
        )
        for i in order:
            if self.endpoints[i].breaker.allow():
                return i, self.endpoints[i]
        raise CircuitOpen(f"{self.name}: every endpoint's circuit is open")

    async def post(self, path: str, payload: dict[str, Any], deadline: Deadline) -> Any:
        """POST JSON to ``{root}{path}`` with retries; returns the decoded JSON."""
        tenacity = self._tenacity
        tried: set[int] = set()

        def stop(rs: Any) -> bool:
            left = deadline.remaining()
            return bool(left < rs.upcoming_sleep + MIN_ATTEMPT_SECONDS)

        def wait(rs: Any) -> float:
            exc = rs.outcome.exception() if rs.outcome is not None else None
            delay = self.backoff * (2 ** (rs.attempt_number - 1)) * random.uniform(0.5, 1.0)
            if isinstance(exc, RateLimited) and exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            return float(delay)

        def before_sleep(rs: Any) -> None:
            self.stats["retries"] += 1
            exc = rs.outcome.exception() if rs.outcome is not None else None
            logger.debug("%s: retrying after %s (attempt %d)", self.name, exc, rs.attempt_number)

        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(
                lambda e: isinstance(e, BackendError) and e.retryable
            ),
            stop=tenacity.stop_after_attempt(self.max_retries + 1) | stop,
            wait=wait,
            before_sleep=before_sleep,
            reraise=True,
        )
        failures: list[BackendError] = []
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        return await self._attempt(path, payload, deadline, tried)
                    except CircuitOpen:
                        raise
                    except BackendError as exc:
                        failures.append(exc)
                        raise
        except CircuitOpen:
            # the breaker opened on this request's own failures: report what failed
            if failures:
                raise failures[-1] from None
            raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(
        self, path: str, payload: dict[str, Any], deadline: Deadline, tried: set[int]
    ) -> Any:
        httpx = self._httpx
        state = self.state()
        await state.semaphore.acquire()
        try:
            timeout = deadline.timeout(cap=self.request_timeout)
            if timeout is not None and timeout <= 0:
                raise BackendTimeout(f"{self.name}: deadline passed before the request")
            # from here on the breaker may have reserved its half-open trial for this request:
            # every path below reports back to it
            index, ep = self._pick(tried)
            tried.add(index)
            ep.outstanding += 1
            ep.requests += 1
            self.stats["requests"] += 1
            try:
                resp = await state.client.post(
                    ep.root + path,
                    json=payload,
                    headers=self._request_headers(),
                    auth=ep.auth or httpx.USE_CLIENT_DEFAULT,
                    timeout=self.timeout(timeout),
                )
                data = self._decode(ep, resp)
            except httpx.TimeoutException:
                ep.breaker.record_failure()
                self.stats["failures"] += 1
                error = BackendTimeout(f"{ep.display}: no answer before the deadline")
                error.retryable = not deadline.expired  # only the per-request cap was hit
                raise error from None
            except httpx.TransportError as exc:
                ep.breaker.record_failure()
                self.stats["failures"] += 1
                raise BackendUnavailable(f"{ep.display}: {describe(exc)}") from None
            except BackendError:
                ep.breaker.record_failure()
                self.stats["failures"] += 1
                raise
            except asyncio.CancelledError:
                # cancelled by the caller (the funnel's deadline): the half-open trial, if this
                # was one, must not stay reserved
                if ep.breaker.state == "half_open":
                    ep.breaker.record_failure()
                raise
            finally:
                ep.outstanding -= 1
            ep.breaker.record_success()
            return data
        finally:
            state.semaphore.release()

    def _decode(self, ep: Endpoint, resp: httpx.Response) -> Any:
        status = resp.status_code
        if status == 429:
            after = retry_after(resp.headers.get("Retry-After"))
            hint = f"; retry after {after:g} s" if after is not None else ""
            raise RateLimited(f"{ep.display}: rate limited (HTTP 429){hint}", retry_after=after)
        if status >= 500 or status == 408:
            raise BackendUnavailable(f"{ep.display}: HTTP {status} {error_text(resp)}".rstrip())
        if status in (401, 403):
            where = f" (read from ${self.api_key_env} unless given)" if self.api_key_env else ""
            raise BackendError(
                f"{ep.display}: HTTP {status}: not authorised; check the API key{where}"
            )
        if status >= 400:
            raise BackendError(
                f"{ep.display}: HTTP {status}: the server refused the request: {error_text(resp)}"
            )
        try:
            return resp.json()
        except ValueError:
            raise MalformedOutput(f"{ep.display}: the response is not valid JSON") from None
