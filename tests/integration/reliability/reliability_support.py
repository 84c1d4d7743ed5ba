"""Helpers of the reliability tests: a live server whose event loop tests can inspect, leak
accounting (threads, sockets, file descriptors) and a small demo corpus."""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import uvicorn
from llmrerank.serve.corpus import DemoDoc

SMALL_CORPUS = [
    DemoDoc(str(i), f"demo.doc{i}", text)
    for i, text in enumerate(
        [
            "The json module encodes and decodes JSON documents.",
            "A socket is an endpoint for sending and receiving data across a network.",
            "Threads run concurrently within one process and share its memory.",
            "The asyncio event loop runs coroutines, callbacks and network IO.",
            "Regular expressions match patterns in text.",
            "The decimal module provides exact decimal floating point arithmetic.",
            "A context manager sets up and tears down a resource in a with statement.",
            "Pathlib offers object-oriented filesystem paths.",
            "Logging records events with levels, handlers and formatters.",
            "The heapq module implements a priority queue on a list.",
            "Hash functions from hashlib compute message digests such as SHA-256.",
            "The csv module reads and writes comma separated values.",
        ]
    )
]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LiveServer:
    """uvicorn on a socket bound to a free loopback port, in a thread running its own event
    loop (kept in ``loop`` so tests can count the tasks on it)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="reliability-uvicorn", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self.loop = asyncio.get_running_loop()
            await self.server.serve(sockets=[self.sock])

        asyncio.run(main())

    @property
    def state(self) -> Any:
        return self.app.state.llmrerank

    def start(self, timeout: float = 60.0) -> LiveServer:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread died during start-up")
            if time.monotonic() - t0 > timeout:
                raise TimeoutError("the server did not start")
            time.sleep(0.02)
        return self

    def tasks(self) -> list[str]:
        """Names of the tasks alive on the server's loop (other than the one asking), sorted."""
        assert self.loop is not None

        async def names() -> list[str]:
            me = asyncio.current_task()
            return sorted(_task_name(t) for t in asyncio.all_tasks() if t is not me)

        fut: concurrent.futures.Future[list[str]] = asyncio.run_coroutine_threadsafe(
            names(), self.loop
        )
        return fut.result(timeout=10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()
        assert not self.thread.is_alive(), "the server thread did not stop"


def _task_name(task: asyncio.Task[Any]) -> str:
    coro = task.get_coro()
    return getattr(coro, "__qualname__", None) or repr(coro)


@dataclass(frozen=True)
class Resources:
    """What this process holds: threads, sockets (TCP connections), file descriptors."""

    threads: frozenset[str]
    connections: frozenset[tuple[Any, ...]]
    fds: int

    @classmethod
    def now(cls) -> Resources:
        proc = psutil.Process()
        conns = frozenset((c.laddr, c.raddr, c.status) for c in proc.net_connections(kind="inet"))
        threads = frozenset(f"{t.name}#{t.ident}" for t in threading.enumerate())
        return cls(threads=threads, connections=conns, fds=proc.num_fds())

    def within(self, before: Resources) -> bool:
        """Nothing new since ``before``: no thread, connection or descriptor was left behind
        (closing a pooled connection that existed before is fine)."""
        return (
            self.threads <= before.threads
            and self.connections <= before.connections
            and self.fds <= before.fds
        )


def settle(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``check`` until it holds (sockets in TIME_WAIT and pool threads take a moment)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return check()


# ---------------------------------------------------------------------- fault-injecting proxy

ProxyFault = str
"""What the proxy does with one request: ``pass`` (forward), ``delay`` (forward after
``delay`` seconds), ``5xx`` (answer ``status`` without forwarding), ``429`` (with
``Retry-After``), ``malformed`` (200 with a body that is not JSON), ``truncated`` (the upstream's
JSON cut in half, Content-Length matching, so the HTTP is valid and the JSON is not),
``no_logprobs`` (the upstream's answer with every ``logprobs`` removed), ``drop`` (close the
connection without an answer, as a server killed mid-request does)."""


class FaultProxy:
    """A fault-injecting HTTP proxy on 127.0.0.1 in front of a real server (a test double).

    ``plan`` decides each request's fault: a fault name for every request, or a callable
    ``(n) -> fault`` of the request number (1-based). It records each request's headers
    (``seen_headers``) and counts ``requests`` and ``faults``. Runs its own event loop in a
    thread; forwards with httpx.
    """

    def __init__(
        self,
        upstream: str,
        plan: ProxyFault | Callable[[int], ProxyFault] = "pass",
        *,
        delay: float = 5.0,
        status: int = 503,
        retry_after: float = 1.0,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = plan
        self.delay = delay
        self.status = status
        self.retry_after = retry_after
        self.requests = 0
        self.faults: dict[str, int] = {}
        self.seen_headers: list[dict[str, str]] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        import httpx

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        writers: set[asyncio.StreamWriter] = set()
        async with httpx.AsyncClient(timeout=120) as client:

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writers.add(writer)
                try:
                    while await self._one(reader, writer, client):
                        pass
                except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
                    pass
                finally:
                    writers.discard(writer)
                    writer.close()

            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            async with server:
                await self._stop.wait()
                for w in list(writers):
                    w.close()

    def _fault(self) -> ProxyFault:
        self.requests += 1
        fault = self.plan(self.requests) if callable(self.plan) else self.plan
        if fault != "pass":
            self.faults[fault] = self.faults.get(fault, 0) + 1
        return fault

    async def _one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: Any
    ) -> bool:
        import json as _json

        request_line = await reader.readline()
        if not request_line:
            return False
        method, target, _ = request_line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
        self.seen_headers.append(headers)
        fault = self._fault()
        if fault == "drop":
            writer.transport.abort()
            return False
        if fault == "5xx":
            await _respond(writer, self.status, b'{"error": {"message": "injected by the proxy"}}')
            return True
        if fault == "429":
            extra = {"Retry-After": f"{self.retry_after:g}"}
            await _respond(writer, 429, b'{"error": {"message": "rate limited (proxy)"}}', extra)
            return True
        if fault == "malformed":
            await _respond(writer, 200, b"<html>this is not JSON</html>")
            return True
        if fault == "delay":
            await asyncio.sleep(self.delay)
        forward = {
            k: v for k, v in headers.items() if k not in ("host", "content-length", "connection")
        }
        upstream = await client.request(
            method, self.upstream + target, content=body, headers=forward
        )
        payload = upstream.content
        if fault == "truncated":
            payload = payload[: max(1, len(payload) // 2)]
        elif fault == "no_logprobs":
            try:
                data = _json.loads(payload)
                for choice in data.get("choices", []):
                    choice.pop("logprobs", None)
                payload = _json.dumps(data).encode()
            except ValueError:
                pass
        content_type = upstream.headers.get("content-type", "application/json")
        await _respond(writer, upstream.status_code, payload, {"Content-Type": content_type})
        return True


async def _respond(
    writer: asyncio.StreamWriter, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    lines = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}"]
    headers = {"Content-Type": "application/json", **(headers or {})}
    lines += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
    await writer.drain()


# ---------------------------------------------------------------------- load


@dataclass
class LoadResult:
    """Latencies and outcomes of one load run (every response already checked complete)."""

    latencies: list[float]
    wall: float
    degraded: int = 0
    reasons: dict[str, int] | None = None
    statuses: dict[int, int] | None = None
    funnel_times: list[float] | None = None
    """Each ranking's own ``timings["total"]`` (inside the funnel, without HTTP or queueing)."""
    llm_scored: int = 0
    """Candidates that got an LLM score, over all requests."""

    def percentile(self, q: float, values: list[float] | None = None) -> float:
        xs = sorted(self.latencies if values is None else values)
        if not xs:
            return float("nan")
        i = min(len(xs) - 1, max(0, math.ceil(q / 100 * len(xs)) - 1))  # nearest rank
        return xs[i]

    def summary(self) -> dict[str, Any]:
        n = len(self.latencies)
        return {
            "requests": n,
            "wall_s": round(self.wall, 3),
            "throughput_rps": round(n / self.wall, 2) if self.wall > 0 else None,
            "latency_s": {
                "p50": round(self.percentile(50), 4),
                "p90": round(self.percentile(90), 4),
                "p99": round(self.percentile(99), 4),
                "max": round(max(self.latencies), 4) if n else None,
                "mean": round(sum(self.latencies) / n, 4) if n else None,
            },
            "funnel_time_s": {
                q: round(self.percentile(float(q[1:]), self.funnel_times or []), 4)
                for q in ("p50", "p90", "p99")
            },
            "degraded_rate": round(self.degraded / n, 4) if n else None,
            "llm_scored_total": self.llm_scored,
            "reasons": dict(sorted((self.reasons or {}).items())),
            **({"statuses": self.statuses} if self.statuses else {}),
        }


Outcome = tuple[list[str], dict[str, Any]]
"""What one request returned: the ranked ids and the ranking's provenance."""


async def run_load(
    request: Callable[[int], Any],
    *,
    total: int,
    concurrency: int,
    expected_ids: list[str],
) -> LoadResult:
    """Send ``total`` requests, ``concurrency`` in flight at once; each returns an
    :data:`Outcome`. Asserts every response holds every expected id exactly once."""
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    reasons: dict[str, int] = {}
    degraded = 0
    funnel_times: list[float] = []
    llm_scored: list[int] = []
    expected = sorted(expected_ids)

    async def one(i: int) -> None:
        nonlocal degraded
        async with sem:
            t0 = time.monotonic()
            ids, prov = await request(i)
            latencies.append(time.monotonic() - t0)
        assert sorted(ids) == expected, f"request {i}: ids {ids} are not the candidates"
        funnel_times.append(float(prov["timings"]["total"]))
        llm_scored.append(int(prov.get("llm_scored", 0)))
        if prov.get("degraded"):
            degraded += 1
            for r in prov.get("reasons", []):
                reasons[r] = reasons.get(r, 0) + 1

    t0 = time.monotonic()
    await asyncio.gather(*(one(i) for i in range(total)))
    result = LoadResult(latencies, time.monotonic() - t0, degraded, reasons, None, funnel_times)
    result.llm_scored = sum(llm_scored)
    return result
