"""RedisScoreCache against a real redis-server: keys, values, batching, TTL, secrets, and every way
a Redis can fail (down, killed mid-load, paused, garbage on the wire, corrupt values) while the
funnel keeps ranking on time."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid

import pytest
from llmrerank import Candidate, Funnel
from llmrerank.budget import Deadline
from llmrerank.cache_redis import RedisScoreCache, redact_url, split_password
from llmrerank.errors import CacheUnavailable, ConfigError
from llmrerank.testing import ScriptedScorer
from llmrerank.testing_servers import FaultServer, RedisServer, free_port

pytestmark = pytest.mark.integration
pytest.importorskip("redis", reason="the Redis cache tests need llmrerank[redis]")

FP = "llm:model-a(prompt=v1)"
DOCS = [f"document {i} about apples and pears number {i}" for i in range(20)]


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


def _warnings(caplog: pytest.LogCaptureFixture, needle: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "llmrerank" and r.levelno >= logging.WARNING and needle in r.getMessage()
    ]


def _commandstat(server: RedisServer, command: str) -> int:
    stats = server.client().info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_scores_round_trip_bit_identical_in_one_mget(redis_server: RedisServer) -> None:
    cache = RedisScoreCache(redis_server.url, prefix=_prefix())
    scores = [0.1 + 0.2, -1e-300, 1 / 3, 12345.678901234567, -0.0] + [float(i) for i in range(15)]
    await cache.aput_many(FP, "q", DOCS, scores)
    mget_before = _commandstat(redis_server, "mget")
    got = await cache.aget_many(FP, "q", [*DOCS, "not stored"], deadline=Deadline.after(1))
    assert _commandstat(redis_server, "mget") == mget_before + 1  # one round trip for 21 texts
    assert got[:-1] == scores and got[-1] is None
    assert all(
        math.copysign(1, a) == math.copysign(1, b) for a, b in zip(got[:-1], scores, strict=True)
    )  # type: ignore[arg-type]
    assert cache.get_many(FP, "q", DOCS[:2]) == scores[:2]  # the blocking path reads the same
    assert (cache.hits, cache.misses) == (22, 1)
    await cache.aclose()


async def test_keys_of_two_fingerprints_or_two_prefixes_never_collide(
    redis_server: RedisServer,
) -> None:
    prefix = _prefix()
    cache = RedisScoreCache(redis_server.url, prefix=prefix)
    other = "llm:model-a(prompt=v2)"
    await cache.aput_many(FP, "q", ["text"], [1.0])
    await cache.aput_many(other, "q", ["text"], [2.0])
    assert cache.key(FP, "q", "text") != cache.key(other, "q", "text")
    dl = Deadline.after(1)
    assert await cache.aget_many(FP, "q", ["text"], deadline=dl) == [1.0]
    assert await cache.aget_many(other, "q", ["text"], deadline=dl) == [2.0]
    assert await cache.aget_many("llm:model-b(prompt=v1)", "q", ["text"], deadline=dl) == [None]
    assert await cache.aget_many(FP, "other q", ["text"], deadline=dl) == [None]
    # length-prefixed parts: moving a character between query and text is another key
    assert cache.key(FP, "ab", "c") != cache.key(FP, "a", "bc")
    elsewhere = RedisScoreCache(redis_server.url, prefix=_prefix())  # another deployment
    assert await elsewhere.aget_many(FP, "q", ["text"], deadline=dl) == [None]
    keys = sorted(k.decode() for k in redis_server.client().scan_iter(match=prefix + "*"))
    assert len(keys) == 2 and all(k.startswith(prefix) for k in keys)
    assert len({k.split(":")[1] for k in keys}) == 2  # a fingerprint tag each
    assert cache.clear(other) == 1
    assert await cache.aget_many(FP, "q", ["text"], deadline=dl) == [1.0]
    await cache.aclose()
    await elsewhere.aclose()


async def test_every_key_has_the_ttl(redis_server: RedisServer) -> None:
    cache = RedisScoreCache(redis_server.url, prefix=_prefix(), ttl=60)
    await cache.aput_many(FP, "q", ["a", "b"], [1.0, 2.0])
    cache.put_many(FP, "q", ["c"], [3.0])
    client = redis_server.client()
    for text in ("a", "b", "c"):
        assert 0 < client.pttl(cache.key(FP, "q", text)) <= 60_000
    forever = RedisScoreCache(redis_server.url, prefix=_prefix(), ttl=None)
    await forever.aput_many(FP, "q", ["a"], [1.0])
    assert client.pttl(forever.key(FP, "q", "a")) == -1  # bounded by maxmemory instead
    await cache.aclose()
    await forever.aclose()


async def test_a_corrupt_value_is_ignored_logged_and_overwritten(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    cache = RedisScoreCache(redis_server.url, prefix=_prefix())
    client = redis_server.client()
    scorer = ScriptedScorer(name="corrupt")
    funnel = Funnel(llm=scorer, k=3, cache=cache, deadline=2.0)
    docs = ["apples pears", "apples", "nothing here"]
    first = await funnel.arerank("apples pears", docs)
    await cache.aflush()
    bad_key = cache.key(scorer.fingerprint, "apples pears", "apples")
    client.set(bad_key, b"\xff not a float")
    client.set(cache.key(scorer.fingerprint, "apples pears", "apples pears"), b"nan")
    caplog.set_level(logging.WARNING, logger="llmrerank")
    again = await funnel.arerank("apples pears", docs)
    assert _warnings(caplog, "not scores ignored")
    assert cache.corrupt == 2
    by_text = {r.text: r for r in again}
    assert not by_text["apples"].cached and not by_text["apples pears"].cached
    assert by_text["nothing here"].cached
    assert [r.llm_score for r in again] == [r.llm_score for r in first]  # re-scored, same
    assert again.info["cache"] == "ok" and not again.degraded
    await cache.aflush()
    assert client.get(bad_key) == repr(by_text["apples"].llm_score).encode()  # overwritten
    await cache.aclose()


async def test_password_is_a_secret_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    from redis_support import need_redis_server

    need_redis_server()
    secret = "s3cret-" + uuid.uuid4().hex
    with RedisServer(password=secret) as server:
        caplog.set_level(logging.DEBUG, logger="llmrerank")
        url = f"redis://:{secret}@127.0.0.1:{server.port}/0"
        cache = RedisScoreCache(url, prefix=_prefix())  # a password in the URL is taken out
        assert secret not in cache.url and secret not in repr(cache)
        assert secret not in str(cache.status())
        await cache.aput_many(FP, "q", ["a"], [1.5])
        assert await cache.aget_many(FP, "q", ["a"], deadline=Deadline.after(1)) == [1.5]
        wrong = RedisScoreCache(server.url, password="wrong-" + secret, prefix=_prefix())
        with pytest.raises(CacheUnavailable):
            await wrong.aget_many(FP, "q", ["a"], deadline=Deadline.after(1))
        assert _warnings(caplog, "unavailable")  # the auth failure is reported...
        assert secret not in caplog.text  # ...without the password
        await cache.aclose()
        await wrong.aclose()
    assert split_password(f"unix:///run/redis.sock?db=1&password={secret}")[0] == (
        "unix:///run/redis.sock?db=1"
    )
    assert redact_url(f"rediss://user:{secret}@h:6380/2") == "rediss://user@h:6380/2"
    with pytest.raises(ConfigError) as info:
        RedisScoreCache(f"http://:{secret}@h/")
    assert secret not in str(info.value)


async def test_down_redis_costs_one_warning_and_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from redis_support import need_redis_server

    need_redis_server()
    caplog.set_level(logging.INFO, logger="llmrerank")
    port = free_port()
    cache = RedisScoreCache(f"redis://127.0.0.1:{port}/0", prefix=_prefix(), retry_after=0.2)
    funnel = Funnel(llm=ScriptedScorer(name="down"), k=5, cache=cache, deadline=0.5)
    for _ in range(30):
        t0 = time.monotonic()
        ranking = await funnel.arerank("apples", DOCS)
        assert time.monotonic() - t0 < 0.5 + 0.05
        assert sorted(ranking.ids) == sorted(str(i) for i in range(20))
        assert ranking.info["cache"] == "unavailable" and not ranking.degraded
        assert ranking.llm_scored == 5
    assert len(_warnings(caplog, "unavailable")) == 1  # one outage, one warning
    assert cache.skipped > 0  # most requests did not even try the network
    with RedisServer(port=port):
        await asyncio.sleep(0.25)  # past retry_after: the next request probes
        ranking = await funnel.arerank("apples", DOCS)
        assert ranking.info["cache"] == "ok"
        await cache.aflush()
        ranking = await funnel.arerank("apples", DOCS)
        assert ranking.info["cache_hits"] == 5 and cache.available
        assert _warnings(caplog, "is back")
        await cache.aclose()


async def test_paused_redis_lookup_times_out_within_the_deadline(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llmrerank")
    cache = RedisScoreCache(own_redis.url, prefix=_prefix(), timeout=0.05)
    funnel = Funnel(llm=ScriptedScorer(name="slow"), k=5, cache=cache, deadline=0.3)
    warm = await funnel.arerank("apples", DOCS)
    assert warm.info["cache"] == "ok"
    own_redis.client().execute_command("CLIENT", "PAUSE", "1500", "ALL")  # Redis hangs
    t0 = time.monotonic()
    ranking = await funnel.arerank("apples", DOCS)
    elapsed = time.monotonic() - t0
    assert ranking.info["cache"] == "unavailable" and len(ranking) == 20
    assert elapsed < 0.3 + 0.05
    assert len(_warnings(caplog, "unavailable")) == 1  # a 30 ms budget that ran out: an outage
    for _ in range(5):  # skipped now, at no cost
        t0 = time.monotonic()
        assert (await funnel.arerank("apples", DOCS)).info["cache"] == "unavailable"
        assert time.monotonic() - t0 < 0.02
    assert len(_warnings(caplog, "unavailable")) == 1
    fresh = RedisScoreCache(own_redis.url, prefix=_prefix(), timeout=0.05)
    t0 = time.monotonic()
    with pytest.raises(CacheUnavailable):  # a short deadline gives a shorter lookup budget
        await fresh.aget_many(FP, "q", ["a"], deadline=Deadline.after(0.1))
    assert time.monotonic() - t0 < 0.04
    await cache.aclose()
    await fresh.aclose()


async def test_garbage_on_the_wire_is_an_outage_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="llmrerank")
    with FaultServer() as http:  # an HTTP server where Redis should be
        cache = RedisScoreCache(f"redis://127.0.0.1:{http.port}/0", prefix=_prefix())
        funnel = Funnel(llm=ScriptedScorer(name="garbage"), k=4, cache=cache, deadline=1.0)
        ranking = await funnel.arerank("apples", DOCS)
        assert ranking.info["cache"] == "unavailable" and ranking.llm_scored == 4
        assert len(ranking) == 20 and not ranking.degraded
        assert len(_warnings(caplog, "unavailable")) == 1


async def test_redis_killed_mid_load_every_response_complete_and_on_time(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llmrerank")
    cache = RedisScoreCache(own_redis.url, prefix=_prefix(), retry_after=0.2)
    scorer = ScriptedScorer(latency=0.02, name="killed")
    funnel = Funnel(llm=scorer, k=8, cache=cache, deadline=0.4, concurrency=4)
    queries = [f"apples {i}" for i in range(6)]
    seen: list[tuple[float, str, int]] = []
    stop = asyncio.Event()

    async def client(n: int) -> None:
        j = 0
        while not stop.is_set():
            query = queries[(n + j) % len(queries)]
            j += 1
            t0 = time.monotonic()
            ranking = await funnel.arerank(query, DOCS)
            seen.append((time.monotonic() - t0, ranking.info.get("cache", "?"), len(ranking)))
            assert sorted(ranking.ids, key=int) == [str(i) for i in range(20)]
            await asyncio.sleep(0.02)

    async def chaos() -> None:
        await asyncio.sleep(0.3)
        own_redis.kill()  # SIGKILL: connections drop mid-request
        await asyncio.sleep(0.5)
        await asyncio.to_thread(own_redis.start)  # back, empty, on the same port
        await asyncio.sleep(0.6)
        stop.set()

    await asyncio.gather(*(client(n) for n in range(4)), chaos())
    statuses = [s for _, s, _ in seen]
    assert len(seen) > 40 and all(n == 20 for _, _, n in seen)
    assert max(t for t, _, _ in seen) < 0.4 + 0.1, sorted(t for t, _, _ in seen)[-5:]
    assert "unavailable" in statuses and statuses[-1] == "ok"
    assert len(_warnings(caplog, "unavailable")) == 1
    assert _warnings(caplog, "is back")
    await cache.aflush()
    after = await funnel.arerank(queries[-1], DOCS)  # scored after the restart: hits again
    assert after.info["cache_hits"] == 8
    await cache.aclose()


def test_sync_facade_and_blocking_protocol(redis_server: RedisServer) -> None:
    cache = RedisScoreCache(redis_server.url, prefix=_prefix())
    funnel = Funnel(llm=ScriptedScorer(name="sync"), k=3, cache=cache, deadline=2.0)
    docs = [Candidate(id=f"d{i}", text=t) for i, t in enumerate(DOCS[:6])]
    first = funnel.rerank("apples", docs)
    for _ in range(50):
        if cache.get_many(first.info["llm_scorer"], "apples", [r.text for r in first[:3]]) == [
            r.llm_score for r in first[:3]
        ]:
            break
        time.sleep(0.01)
    second = funnel.rerank("apples", docs)
    assert [r.cached for r in second[:3]] == [True] * 3
    assert [r.llm_score for r in second] == [r.llm_score for r in first]
    down = RedisScoreCache(f"redis://127.0.0.1:{free_port()}/0", prefix=_prefix())
    assert down.get_many(FP, "q", ["a", "b"]) == [None, None]
    down.put_many(FP, "q", ["a"], [1.0])  # never raises
    assert not down.available
