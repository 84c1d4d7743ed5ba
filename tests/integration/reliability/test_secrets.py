"""Secrets never appear in logs, errors, provenance, responses or cassettes.

Every component that takes an API key gets a distinctive secret (as ``SecretStr``): the server's
settings (``llm_api_key``), the OpenAI-compatible scorer and the rerank-API scorer where they are
installed. Each is driven through success and failure paths with every logger at DEBUG (httpx
and httpcore included); then the captured log text, the exceptions (str, repr and the formatted
traceback), provenance, HTTP responses and the subprocess's output are scanned for the secret.
Finally every file under ``tests/cassettes/`` is scanned for the known test secrets and for any
recorded credential header.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import httpx
import pytest
from llmrerank import Funnel, LLMRerankError
from llmrerank.serve import ServeSettings
from llmrerank.serve.settings import load_settings
from llmrerank.testing import ScriptedScorer
from pydantic import SecretStr
from reliability_support import FaultProxy

pytestmark = pytest.mark.integration

SECRET = "sk-reliability-Zq81-never-log-me-4d2e7b"
URL_SECRET = "pw-in-url-Xk93-never-log-me"
KNOWN_TEST_SECRETS = [
    SECRET,
    URL_SECRET,
    # The keys other test modules start their servers with (they must not reach cassettes).
    "sk-llmrerank-cassette-secret-5f3c9a1e",
    "sk-llmrerank-test-never-log-this-0123456789",
]
CASSETTES = Path(__file__).resolve().parents[2] / "cassettes"
CREDENTIAL_HEADERS = {"authorization", "x-api-key", "api-key", "proxy-authorization", "cookie"}
CANDIDATES = [
    "Paris is the capital of France.",
    "Bananas are yellow.",
    "France is a country in Europe whose capital is Paris.",
]


def _exception_text(exc: BaseException) -> str:
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


def assert_no_secret(*texts: Any) -> None:
    for text in texts:
        blob = text if isinstance(text, str) else json.dumps(text, default=repr)
        for secret in (SECRET, URL_SECRET):
            assert secret not in blob, (
                f"secret leaked: ...{blob[max(0, blob.find(secret) - 200) :][:400]}"
            )


@pytest.fixture
def debug_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger at DEBUG; the fixture's text includes formatted tracebacks."""
    caplog.set_level(logging.DEBUG)
    for name in ("llmrerank", "httpx", "httpcore", "uvicorn", "uvicorn.error"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def _log_text(caplog: pytest.LogCaptureFixture) -> str:
    records = [f"{r.name} {r.levelname} {r.getMessage()} {r.args!r}" for r in caplog.records]
    return caplog.text + "\n".join(records)


# ---------------------------------------------------------------------- the server's settings


def test_server_settings_hide_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServeSettings(llm_api_key=SecretStr(SECRET), demo=False)
    assert settings.llm_api_key is not None
    assert settings.llm_api_key.get_secret_value() == SECRET
    assert_no_secret(
        repr(settings), str(settings), settings.model_dump_json(), str(settings.model_dump())
    )

    monkeypatch.setenv("LLMRERANK_LLM_API_KEY", SECRET)
    from_env = load_settings()
    assert from_env.llm_api_key is not None
    assert from_env.llm_api_key.get_secret_value() == SECRET
    assert_no_secret(repr(from_env))

    config = tmp_path / "serve.toml"
    config.write_text(f'llm_api_key = "{SECRET}"\nport = 99999999\n')
    with pytest.raises(LLMRerankError) as err:  # a bad setting next to the key
        load_settings(config)
    assert "port" in str(err.value)
    assert_no_secret(_exception_text(err.value))


def test_served_responses_and_logs_hide_the_key(
    serve: Any, debug_logs: pytest.LogCaptureFixture
) -> None:
    llm = ScriptedScorer(latency=0.001, fail=lambda n: LLMRerankError("x") if n == 2 else None)
    server = serve(Funnel(llm=llm, k=3, deadline=2.0), llm_api_key=SecretStr(SECRET))
    bodies = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for method, path, body in [
            ("GET", "/healthz", None),
            ("GET", "/metrics", None),
            ("GET", "/openapi.json", None),
            ("POST", "/v1/rerank", {"query": "capital of France", "documents": CANDIDATES}),
            ("POST", "/v1/rerank/stream", {"query": "capital", "documents": CANDIDATES}),
            ("POST", "/v1/rerank", {"query": "", "documents": CANDIDATES}),  # 422
            ("POST", "/v1/rerank", {"query": "x", "documents": CANDIDATES, "preset": "nope"}),
            ("GET", "/nowhere", None),  # 404
        ]:
            response = client.request(method, path, json=body)
            bodies.append(response.text)
            assert response.status_code < 500
    assert_no_secret(*bodies, _log_text(debug_logs), repr(server.state.settings))


def test_the_cli_never_prints_the_key(tmp_path: Path) -> None:
    """``llmrerank serve`` at DEBUG with the key in the environment: a configuration error, then a
    server with an unreachable LLM endpoint answering a request (degraded)."""
    from reliability_support import free_port

    env = {**os.environ, "LLMRERANK_LLM_API_KEY": SECRET, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "llmrerank", "serve", "--log-level", "debug", "--no-demo"]
    bad = subprocess.run(
        [*cmd, "--llm", "openai"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2
    assert "llm_endpoints" in bad.stderr
    assert_no_secret(bad.stdout, bad.stderr)

    port, dead = free_port(), free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                *cmd,
                "--llm",
                "openai",
                "--llm-endpoint",
                f"http://user:{URL_SECRET}@127.0.0.1:{dead}/v1",
                "--llm-model",
                "smollm2",
                "--port",
                str(port),
                "--deadline",
                "2",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        answered = None
        for _ in range(300):
            if proc.poll() is not None:
                break
            try:
                answered = httpx.post(
                    f"http://127.0.0.1:{port}/v1/rerank",
                    json={"query": "capital of France", "documents": CANDIDATES},
                    timeout=10,
                )
                break
            except httpx.TransportError:
                time.sleep(0.1)
        if proc.poll() is None:
            assert answered is not None and answered.status_code == 200, answered
            body = answered.json()
            assert body["llmrerank"]["degraded"]
            assert sorted(r["index"] for r in body["results"]) == [0, 1, 2]
            assert_no_secret(answered.text)
        else:  # no OpenAI-compatible backend installed: a clear error, still without the key
            assert proc.returncode == 2
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=20)
    assert_no_secret(log.read_text(errors="replace"))


# ---------------------------------------------------------------------- scorers taking a key


def _openai_scorer(url: str, **kw: Any) -> Any:
    module = pytest.importorskip("llmrerank.scorers.llm_openai", reason="llm_openai not installed")
    return module.OpenAILLMScorer(url, "fake", method="judgement", api_key=SecretStr(SECRET), **kw)


def _fault_server(fault: str) -> Any:
    servers = pytest.importorskip("llmrerank.testing_servers", reason="llm_openai not installed")
    return servers.FaultServer(fault, retry_after=0.05)


@pytest.mark.parametrize("fault", ["ok", "5xx", "429", "garbage", "no_logprobs", "drop", "refused"])
async def test_openai_scorer_hides_the_key(
    fault: str, debug_logs: pytest.LogCaptureFixture
) -> None:
    from reliability_support import free_port

    texts: list[Any] = []
    if fault == "refused":
        scorer = _openai_scorer(f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
        texts += await _drive(scorer)
    else:
        with (
            _fault_server(fault) as upstream,
            FaultProxy(upstream.url.rsplit("/v1", 1)[0]) as proxy,
        ):
            scorer = _openai_scorer(proxy.root + "/v1", max_retries=1)
            texts += await _drive(scorer)
            sent = {h.get("authorization") for h in proxy.seen_headers}
            assert f"Bearer {SECRET}" in sent, "the key was not even sent"
    assert_no_secret(*texts, _log_text(debug_logs))


async def _drive(scorer: Any) -> list[Any]:
    """A funnel request and a direct call; returns every text a user could see."""
    from llmrerank import Deadline

    texts: list[Any] = [repr(scorer), str(scorer)]
    try:
        ranking = await Funnel(llm=scorer, k=3, deadline=3.0).arerank(
            "capital of France", CANDIDATES
        )
        assert sorted(ranking.ids) == ["0", "1", "2"]
        texts.append(ranking.provenance())
        try:
            await scorer.ascore("capital", CANDIDATES, deadline=Deadline.after(3.0))
        except LLMRerankError as exc:
            texts.append(_exception_text(exc))
    finally:
        if hasattr(scorer, "aclose"):
            await scorer.aclose()
    return texts


def _url_with_password(port: int) -> str:
    return f"http://user:{URL_SECRET}@127.0.0.1:{port}"


async def test_a_password_in_the_openai_base_url_is_not_logged(
    debug_logs: pytest.LogCaptureFixture,
) -> None:
    from reliability_support import free_port

    with _fault_server("5xx") as upstream:
        port = int(upstream.url.rsplit(":", 1)[1].split("/")[0])
        texts = await _drive(_openai_scorer(_url_with_password(port) + "/v1", max_retries=0))
        texts += await _drive(
            _openai_scorer(_url_with_password(free_port()) + "/v1", max_retries=0)
        )
    assert_no_secret(*texts, _log_text(debug_logs))


async def test_rerank_api_scorer_hides_the_key(debug_logs: pytest.LogCaptureFixture) -> None:
    module = pytest.importorskip("llmrerank.scorers.rerank_api", reason="rerank_api not installed")
    from llmrerank import Deadline
    from reliability_support import free_port

    texts: list[Any] = []
    for url in [f"http://127.0.0.1:{free_port()}", _url_with_password(free_port())]:
        scorer = module.RerankAPIScorer(
            "vllm", model="m", base_url=url, api_key=SecretStr(SECRET), max_retries=0
        )
        texts += [repr(scorer), str(scorer)]
        ranking = await Funnel(fast=scorer, k=0).arerank("capital", CANDIDATES)
        assert ranking.degraded
        texts.append(ranking.provenance())
        with pytest.raises(LLMRerankError) as err:
            await scorer.ascore("capital", CANDIDATES, deadline=Deadline.after(2.0))
        texts.append(_exception_text(err.value))
    assert_no_secret(*texts, _log_text(debug_logs))


# ---------------------------------------------------------------------- cassettes


def test_no_cassette_holds_a_secret_or_a_credential_header() -> None:
    yaml = pytest.importorskip("yaml")
    files = [p for p in CASSETTES.rglob("*") if p.is_file()] if CASSETTES.exists() else []
    for path in files:
        text = path.read_text(errors="replace")
        for secret in KNOWN_TEST_SECRETS:
            assert secret not in text, f"{path} holds a test secret"
        assert "Bearer " not in text, f"{path} holds a bearer token"
        if path.suffix in (".yaml", ".yml"):
            data = yaml.safe_load(text) or {}
            for interaction in data.get("interactions", []):
                for part in ("request", "response"):
                    names = {h.lower() for h in (interaction.get(part, {}).get("headers") or {})}
                    assert not names & CREDENTIAL_HEADERS, f"{path}: {names & CREDENTIAL_HEADERS}"
    if not files:
        pytest.skip("no cassettes recorded yet")
