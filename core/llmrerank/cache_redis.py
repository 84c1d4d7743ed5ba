"""A score cache in Redis, shared by every process and machine of a deployment (``llmrerank[redis]``).

Keys are ``{prefix}{tag}:{cache_key}``: the deployment's prefix, a short hash of the scorer
fingerprint (so one scorer's scores can be listed or cleared) and the same BLAKE2b key over
(fingerprint, query, text) as the other caches. Values are the score as text (``repr`` of the
float, so a score read back is bit-identical). Each request costs one ``MGET`` for its lookups and
one pipeline of ``SET ... PX ttl`` for its new scores.

**Bounded memory.** Every key carries a TTL (``ttl``, default 7 days); the hard bound is Redis'
own ``maxmemory`` with an eviction policy (``allkeys-lru`` for a Redis that holds only caches,
``volatile-lru`` when it holds other data too). A score takes about 220 bytes of Redis memory
(measured: docs/benchmarks/serve_scaling.md), so ``maxmemory 256mb`` holds about 1.2 million.

**A Redis that fails never fails a ranking.** A lookup waits at most ``timeout`` seconds and at
most ``deadline_share`` of the time the request has left; past that, or on any connection,
protocol or authentication error, the lookup raises
:class:`~llmrerank.errors.CacheUnavailable` and the funnel ranks without the cache
(``Ranking.info["cache"] == "unavailable"``). A timeout counts as a failure when the lookup
had at least 5 ms (a request with almost no time left proves nothing about Redis). The first
failure logs one warning; then the
cache is skipped without a network call for ``retry_after`` seconds, after which one request
probes it; the first success logs that Redis is back. Writes run in the background
(:meth:`aput_many` never raises). A value that is not a finite float (a corrupt or foreign key)
is a miss, logged, and overwritten when the candidate is scored again.

**Secrets.** The password is a :class:`pydantic.SecretStr` (or taken out of the URL and kept as
one); ``repr``, ``status()`` and every log line show the URL without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from pydantic import SecretStr

from ._optional import require
from .budget import Deadline
from .cache import cache_key
from .errors import CacheUnavailable, ConfigError

__all__ = ["RedisScoreCache", "redact_url", "split_password"]

logger = logging.getLogger("llmrerank")

_SCHEMES = ("redis", "rediss", "unix")
_OUTAGE_BUDGET = 0.005
"""A lookup that times out with at least this budget (or the whole timeout) marks an outage."""


def split_password(url: str) -> tuple[str, SecretStr | None]:
    """``url`` without its password (user info or ``?password=``), and the password apart."""
    parts = urlsplit(url)
    password: str | None = None
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, sep, secret = userinfo.partition(":")
        if sep:
            password = secret
            netloc = f"{user}@{host}" if user else host
    query = parse_qsl(parts.query, keep_blank_values=True)
    kept = [(k, v) for k, v in query if k != "password"]
    for k, v in query:
        if k == "password":
            password = v
    if password is None:
        return url, None
    query_text = urlencode(kept)
    if netloc:
        clean = urlunsplit((parts.scheme, netloc, parts.path, query_text, parts.fragment))
    else:  # unix:///path: urlunsplit would drop the empty authority
        clean = f"{parts.scheme}://{parts.path}" + (f"?{query_text}" if query_text else "")
    return clean, SecretStr(unquote(password))


def redact_url(url: str) -> str:
    """``url`` with any password removed (for logs, ``repr`` and health answers)."""
    return split_password(url)[0]


def _fingerprint_tag(fingerprint: str) -> str:
    return hashlib.blake2b(fingerprint.encode("utf-8", "surrogatepass"), digest_size=6).hexdigest()


class RedisScoreCache:
    """LLM scores in Redis, shared by processes and machines. Implements
    :class:`~llmrerank.cache.ScoreCache` (blocking) and :class:`~llmrerank.cache.AsyncScoreCache`
    (what the funnel uses).

    Args:
        url: ``redis://[user@]host:port/db``, ``rediss://...`` (TLS) or ``unix:///path.sock``.
            A password in the URL is taken out of it and kept as a secret.
        password: the password (``AUTH``), a ``SecretStr`` or a string; beats one in the URL.
        prefix: prepended to every key: one per deployment (or per environment) sharing a Redis.
        ttl: seconds a score is kept (``None`` or 0: until evicted by ``maxmemory``).
        timeout: the longest a lookup waits (seconds), whatever the deadline.
        deadline_share: a lookup also waits at most this share of the request's time left.
        write_timeout: the longest a background write waits.
        retry_after: seconds the cache is skipped after a failure before Redis is probed again.
        ssl_ca_certs: a CA bundle for ``rediss://`` servers with a private CA.
    """

    backend = "redis"

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        password: SecretStr | str | None = None,
        prefix: str = "llmrerank:",
        ttl: float | None = 7 * 24 * 3600,
        timeout: float = 0.05,
        deadline_share: float = 0.1,
        write_timeout: float = 0.5,
        retry_after: float = 1.0,
        ssl_ca_certs: str | None = None,
    ) -> None:
        require("redis", extra="redis", feature="RedisScoreCache")
        scheme = urlsplit(url).scheme
        if scheme not in _SCHEMES:
            raise ConfigError(
                f"a Redis cache URL starts with redis://, rediss:// or unix://, got "
                f"{redact_url(url)!r}"
            )
        if ttl is not None and ttl < 0:
            raise ConfigError(f"ttl must be positive seconds, 0 or None, got {ttl!r}")
        if not timeout > 0 or not write_timeout > 0 or retry_after < 0:
            raise ConfigError("timeout and write_timeout must be positive, retry_after >= 0")
        if not 0 < deadline_share <= 1:
            raise ConfigError(f"deadline_share must be in (0, 1], got {deadline_share!r}")
        self.url, url_password = split_password(url)
        if isinstance(password, str):
            password = SecretStr(password)
        self._password: SecretStr | None = password if password is not None else url_password
        self.prefix = prefix
        self.ttl = ttl if ttl else None
        self.timeout = float(timeout)
        self.deadline_share = float(deadline_share)
        self.write_timeout = float(write_timeout)
        self.retry_after = float(retry_after)
        self.ssl_ca_certs = ssl_ca_certs
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self.corrupt = 0
        self.skipped = 0
        self.outages = 0
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._sync: Any = None
        self._async: dict[int, tuple[asyncio.AbstractEventLoop, Any]] = {}
        self._pending: set[asyncio.Task[Any]] = set()

    def __repr__(self) -> str:
        return f"RedisScoreCache(url={self.url!r}, prefix={self.prefix!r}, ttl={self.ttl!r})"

    # ------------------------------------------------------------------ clients

    def _client_kwargs(self) -> dict[str, Any]:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        kwargs: dict[str, Any] = {
            "socket_timeout": max(self.timeout, self.write_timeout),
            "socket_connect_timeout": max(self.timeout, self.write_timeout),
            "retry": Retry(NoBackoff(), 0),  # no retries: a miss is cheaper than a wait
            "health_check_interval": 0,
        }
        if self._password is not None:
            kwargs["password"] = self._password.get_secret_value()
        if self.ssl_ca_certs is not None:
            kwargs["ssl_ca_certs"] = self.ssl_ca_certs
        return kwargs

    def _async_client(self) -> Any:
        """One ``redis.asyncio`` client per event loop (its connections belong to that loop)."""
        import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        loop = asyncio.get_running_loop()
        entry = self._async.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        for key, (other, _client) in list(self._async.items()):
            if other.is_closed():
                del self._async[key]
        kwargs = self._client_kwargs()
        kwargs["retry"] = Retry(NoBackoff(), 0)
        client = redis.asyncio.Redis.from_url(self.url, **kwargs)
        self._async[id(loop)] = (loop, client)
        return client

    def _sync_client(self) -> Any:
        if self._sync is None:
            import redis

            kwargs = self._client_kwargs()
            kwargs["socket_timeout"] = self.timeout
            kwargs["socket_connect_timeout"] = self.timeout
            self._sync = redis.Redis.from_url(self.url, **kwargs)
        return self._sync

    # ------------------------------------------------------------------ health

    @property
    def available(self) -> bool:
        """False while the cache is skipped after a failure (until Redis answers again)."""
        with self._lock:
            return self._down_since is None

    def _may_try(self) -> bool:
        """Closed: yes. After a failure: no, except one probe every ``retry_after`` seconds."""
        with self._lock:
            if self._down_since is None:
                return True
            now = time.monotonic()
            if now >= self._retry_at:
                self._retry_at = now + self.retry_after
                return True
            self.skipped += 1
            return False

    def _failed(self, exc: BaseException, op: str) -> None:
        what = "timed out" if isinstance(exc, (asyncio.TimeoutError, TimeoutError)) else str(exc)
        with self._lock:
            self.errors += 1
            now = time.monotonic()
            self._retry_at = now + self.retry_after
            first = self._down_since is None
            if first:
                self._down_since = now
                self.outages += 1
        if first:
            logger.warning(
                "Redis score cache %s unavailable (%s on %s: %s); ranking continues without it, "
                "retrying every %.3g s",
                self.url,
                type(exc).__name__,
                op,
                what[:200],
                self.retry_after,
            )
        else:
            logger.debug("Redis score cache %s still unavailable (%s)", self.url, what[:200])

    def _succeeded(self, started: float) -> None:
        """An operation that began at ``started`` answered. One that began before the outage
        was declared (an answer already in flight when Redis died) proves nothing: under load
        it made the cache flap between "back" and "unavailable"."""
        with self._lock:
            since = self._down_since
            if since is not None and started < since:
                return
            self._down_since = None
        if since is not None:
            logger.warning(
                "Redis score cache %s is back after %.1f s; using it again",
                self.url,
                time.monotonic() - since,
            )

    def status(self) -> dict[str, Any]:
        """For ``/healthz``: where the cache is (no password) and how it fares."""
        return {
            "backend": self.backend,
            "url": self.url,
            "prefix": self.prefix,
            "ttl_s": self.ttl,
            "available": self.available,
            "hits": self.hits,
            "misses": self.misses,
            "errors": self.errors,
            "outages": self.outages,
            "corrupt": self.corrupt,
        }

    # ------------------------------------------------------------------ keys and values

    def key(self, fingerprint: str, query: str, text: str) -> str:
        """The Redis key of one score."""
        return f"{self.prefix}{_fingerprint_tag(fingerprint)}:{cache_key(fingerprint, query, text)}"

    def _decode(self, keys: Sequence[str], raw: Any) -> list[float | None]:
        if not isinstance(raw, list) or len(raw) != len(keys):
            raise CacheUnavailable(
                f"MGET of {len(keys)} keys answered {type(raw).__name__} "
                f"of length {len(raw) if isinstance(raw, list) else '-'}"
            )
        out: list[float | None] = []
        bad: list[str] = []
        for key, value in zip(keys, raw, strict=True):
            score: float | None = None
            if value is not None:
                try:
                    text = value.decode("ascii") if isinstance(value, bytes) else str(value)
                    score = float(text)
                except (ValueError, UnicodeDecodeError):
                    score = None
                if score is None or not math.isfinite(score):
                    score = None
                    bad.append(key)
            out.append(score)
        hits = sum(s is not None for s in out)
        with self._lock:
            self.hits += hits
            self.misses += len(out) - hits
            self.corrupt += len(bad)
        if bad:
            logger.warning(
                "Redis score cache: %d value(s) that are not scores ignored (treated as misses, "
                "overwritten when scored), e.g. under %s",
                len(bad),
                bad[0],
            )
        return out

    def _encode(self, score: float) -> str:
        return repr(float(score))

    def _lookup_budget(self, deadline: Deadline | None) -> float:
        if deadline is None:
            return self.timeout
        return max(0.0, min(self.timeout, self.deadline_share * deadline.remaining()))

    # ------------------------------------------------------------------ async protocol

    async def aget_many(
        self,
        fingerprint: str,
        query: str,
        texts: Sequence[str],
        *,
        deadline: Deadline | None = None,
    ) -> list[float | None]:
        """Scores for ``texts`` (``None`` for a miss) in one ``MGET``, within the budget.

        Raises :class:`CacheUnavailable` when Redis cannot answer in time (logged once per
        outage) or while it is skipped after a failure."""
        if not texts:
            return []
        if not self._may_try():
            raise CacheUnavailable(f"Redis score cache {self.url} is skipped after a failure")
        budget = self._lookup_budget(deadline)
        if budget < 0.0005:
            raise CacheUnavailable("no time left for a cache lookup")
        keys = [self.key(fingerprint, query, t) for t in texts]
        started = time.monotonic()
        try:
            raw = await asyncio.wait_for(self._async_client().mget(keys), timeout=budget)
            out = self._decode(keys, raw)
        except (asyncio.TimeoutError, TimeoutError) as exc:
            if budget >= min(self.timeout, _OUTAGE_BUDGET):
                self._failed(exc, "lookup")
            else:  # the request had almost no time left: not a sign of an outage
                self._release_probe()
            raise CacheUnavailable(
                f"Redis lookup took longer than {budget * 1000:.1f} ms"
            ) from None
        except Exception as exc:  # connection, protocol, auth errors, garbage answers
            self._failed(exc, "lookup")
            raise CacheUnavailable(f"Redis lookup failed: {type(exc).__name__}") from None
        self._succeeded(started)
        return out

    def _release_probe(self) -> None:
        with self._lock:
            if self._down_since is not None:
                self._retry_at = time.monotonic()

    async def aput_many(
        self, fingerprint: str, query: str, texts: Sequence[str], scores: Sequence[float]
    ) -> None:
        """Store scores in one pipeline of ``SET key value PX ttl``; never raises."""
        if not texts:
            return
        task = asyncio.current_task()
        if task is not None:
            self._pending.add(task)
        try:
            if not self._may_try():
                return
            px = int(self.ttl * 1000) if self.ttl else None
            started = time.monotonic()
            pipe = self._async_client().pipeline(transaction=False)
            for text, score in zip(texts, scores, strict=True):
                pipe.set(self.key(fingerprint, query, text), self._encode(score), px=px)
            try:
                await asyncio.wait_for(pipe.execute(), timeout=self.write_timeout)
            except Exception as exc:
                self._failed(exc, "store")
                return
            finally:
                with contextlib.suppress(Exception):
                    await pipe.reset()
            self._succeeded(started)
        finally:
            if task is not None:
                self._pending.discard(task)

    async def aflush(self) -> None:
        """Wait for this event loop's background writes (tests and shutdown)."""
        await asyncio.sleep(0)  # writes scheduled a moment ago start (and register) first
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        mine = [t for t in self._pending if t.get_loop() is loop and t is not me]
        if mine:
            await asyncio.gather(*mine, return_exceptions=True)

    async def aclose(self) -> None:
        """Close this event loop's client (after its pending writes)."""
        await self.aflush()
        loop = asyncio.get_running_loop()
        entry = self._async.pop(id(loop), None)
        if entry is not None:
            await entry[1].aclose()

    # ------------------------------------------------------------------ blocking protocol

    def get_many(self, fingerprint: str, query: str, texts: Sequence[str]) -> list[float | None]:
        """Blocking lookup (at most ``timeout`` s); all misses when Redis is unavailable."""
        if not texts:
            return []
        if not self._may_try():
            return [None] * len(texts)
        keys = [self.key(fingerprint, query, t) for t in texts]
        started = time.monotonic()
        try:
            out = self._decode(keys, self._sync_client().mget(keys))
        except Exception as exc:
            self._failed(exc, "lookup")
            return [None] * len(texts)
        self._succeeded(started)
        return out

    def put_many(
        self, fingerprint: str, query: str, texts: Sequence[str], scores: Sequence[float]
    ) -> None:
        """Blocking store in one pipeline; never raises."""
        if not texts or not self._may_try():
            return
        px = int(self.ttl * 1000) if self.ttl else None
        started = time.monotonic()
        try:
            with self._sync_client().pipeline(transaction=False) as pipe:
                for text, score in zip(texts, scores, strict=True):
                    pipe.set(self.key(fingerprint, query, text), self._encode(score), px=px)
                pipe.execute()
        except Exception as exc:
            self._failed(exc, "store")
            return
        self._succeeded(started)

    def clear(self, fingerprint: str | None = None) -> int:
        """Delete this prefix's scores (or one scorer's); returns how many. Blocking (SCAN)."""
        pattern = self.prefix + (_fingerprint_tag(fingerprint) + ":" if fingerprint else "") + "*"
        client = self._sync_client()
        deleted = 0
        batch: list[Any] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(client.unlink(*batch))
        return deleted

    def close(self) -> None:
        """Close the blocking client (async clients close with their loop or :meth:`aclose`)."""
        if self._sync is not None:
            self._sync.close()
            self._sync = None
