"""Several ``llmrerank serve`` processes sharing one real Redis: a ranking scored by one is a cache
hit in another with identical scores; ``--workers 2`` (started from the sample deployment config,
docs/deploy/llmrerank.toml) loads a funnel per worker and sums ``/metrics`` over them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from llmrerank.testing_servers import RedisServer, free_port
from redis_support import redis_server_fixture

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest.importorskip("uvicorn", reason="the serve tests need llmrerank[serve]")
pytest.importorskip("redis", reason="the Redis cache tests need llmrerank[redis]")

REPO = Path(__file__).resolve().parents[3]
SAMPLE = REPO / "docs" / "deploy" / "llmrerank.toml"
DOCS = [f"passage {i}: apples pears and plums, variety {i % 7}" for i in range(30)]
QUERY = "apples and plums variety 3"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    yield from redis_server_fixture()


class ServeProcess:
    """``python -m llmrerank.cli serve ...`` on a free port, output to a file, stopped by SIGINT."""

    def __init__(self, tmp: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"serve-{self.port}.log"
        cmd = [sys.executable, "-m", "llmrerank.cli", "serve", "--port", str(self.port), *args]
        full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, env=full_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 120.0) -> dict[str, object]:
        t0 = time.monotonic()
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2)
                if r.status_code == 200:
                    health: dict[str, object] = httpx.get(f"{self.url}/healthz", timeout=2).json()
                    return health
            except httpx.TransportError:
                pass
            assert time.monotonic() - t0 < timeout, "the server did not come up:\n" + self.output()
            time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> str:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        return self.output()


def _rerank(url: str) -> dict[str, object]:
    r = httpx.post(
        f"{url}/v1/rerank", json={"query": QUERY, "documents": DOCS, "deadline": 5}, timeout=10
    )
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(rf"{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


def test_two_serve_processes_share_scores_through_redis(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"serve-{uuid.uuid4().hex[:8]}:"
    common = ["--llm", "scripted", "--cache", redis_server.url, "--cache-prefix", prefix]
    a = ServeProcess(tmp_path, *common, "--no-demo", "--preset", "enterprise")
    # b: the sample deployment config as shipped (2 workers, enterprise, demo off), with this
    # machine's address, the scripted LLM and the test's Redis given as flags (flags beat files)
    b = ServeProcess(tmp_path, "--config", str(SAMPLE), "--host", "127.0.0.1", *common)
    try:
        health_a = a.wait_ready()
        health_b = b.wait_ready()
        assert health_a["workers"] == 1 and health_b["workers"] == 2
        cache_b = health_b["cache"]
        assert isinstance(cache_b, dict)
        assert cache_b["backend"] == "redis" and cache_b["available"] is True
        assert cache_b["prefix"] == prefix

        first = _rerank(a.url)
        prov = first["llmrerank"]
        assert isinstance(prov, dict)
        assert prov["cache"] == "ok" and prov["cache_hits"] == 0 and prov["llm_scored"] == 20
        time.sleep(0.2)  # a's write runs in the background, after its answer
        answers = [_rerank(b.url) for _ in range(6)]  # whichever worker of b answers
        for again in answers:
            prov_b = again["llmrerank"]
            assert isinstance(prov_b, dict)
            assert prov_b["cache_hits"] == 20 and prov_b["cache_misses"] == 0
            assert again["results"] == [
                {**r, "cached": r["stage"] == "llm"}  # type: ignore[dict-item]
                for r in first["results"]  # type: ignore[union-attr]
            ]
        # the kernel spreads new connections over the workers' SO_REUSEPORT sockets
        pids = {httpx.get(f"{b.url}/healthz", timeout=5).json()["pid"] for _ in range(16)}
        assert len(pids) == 2
        metrics = httpx.get(f"{b.url}/metrics", timeout=5).text
        # summed over b's two workers, whichever one answered the scrape
        assert _metric(metrics, "llmrerank_workers") == 2
        assert (
            _metric(metrics, "llmrerank_requests_total", endpoint="/v1/rerank", status="200") == 6
        )
        assert _metric(metrics, "llmrerank_cache_hits_total") == 6 * 20
        assert _metric(metrics, "llmrerank_rankings_total") == 6
    finally:
        a.stop()
        out_b = b.stop()
    ready = set(re.findall(r"llmrerank serve ready \(pid (\d+)\)", out_b))
    assert len(ready) == 2, out_b  # each worker built and loaded its funnel before serving


def test_a_dead_worker_is_replaced_and_leaves_the_summed_metrics(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, "--llm", "scripted", "--no-demo", "--workers", "2")
    try:
        serve.wait_ready()
        pids: set[int] = set()
        t0 = time.monotonic()
        while len(pids) < 2 and time.monotonic() - t0 < 60:  # both started (new connections)
            pids.add(httpx.get(f"{serve.url}/healthz", timeout=5).json()["pid"])
            if _metric(httpx.get(f"{serve.url}/metrics", timeout=5).text, "llmrerank_workers") < 2:
                time.sleep(0.2)
        assert len(pids) == 2
        with httpx.Client(base_url=serve.url) as client:  # one keep-alive connection
            lat = []
            for _ in range(21):
                t0 = time.monotonic()
                client.get("/healthz")
                lat.append(time.monotonic() - t0)
        # TCP_NODELAY on the workers' sockets: without it Nagle + delayed ACK cost ~40 ms each
        assert sorted(lat)[10] < 0.02, lat
        victim = pids.pop()
        os.kill(victim, signal.SIGKILL)  # a crash: no shutdown hook runs
        t0 = time.monotonic()
        while True:
            seen = {httpx.get(f"{serve.url}/healthz", timeout=5).json()["pid"] for _ in range(8)}
            workers = _metric(
                httpx.get(f"{serve.url}/metrics", timeout=5).text, "llmrerank_workers"
            )
            if victim not in seen and len(seen) == 2 and workers == 2:
                break
            assert time.monotonic() - t0 < 60, (seen, workers, serve.output())
            time.sleep(0.3)
        assert _rerank(serve.url)["llmrerank"]["llm_scored"] == 20  # type: ignore[index]
    finally:
        out = serve.stop()
    assert f"worker {victim} exited" in out
    assert serve.proc.returncode == 0, out


def test_workers_on_a_taken_port_fail_clearly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "llmrerank.cli", "serve", "--llm", "none", "--no-demo",
             "--workers", "2", "--port", str(port)],
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
    assert proc.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr
