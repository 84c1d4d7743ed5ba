"""``llmrerank serve`` as a user starts it: a subprocess, settings from flags, environment and a
config file, bound to 127.0.0.1, stopped by Ctrl-C."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("uvicorn", reason="the serve tests need llmrerank[serve]")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_serve_reads_flags_env_and_config_file(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text('preset = "research"\nmax_documents = 3\nretry_after = 7\n')
    port = _free_port()
    env = {
        **os.environ,
        "LLMRERANK_PRESET": "realtime",  # the environment beats the config file
        "LLMRERANK_CACHE": str(tmp_path / "cache"),  # a fresh demo-corpus cache: built here
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    cmd = [
        sys.executable,
        "-m",
        "llmrerank.cli",
        "serve",
        "--llm",
        "none",
        "--port",
        str(port),
        "--config",
        str(config),
        "--deadline",
        "3",
        "--demo-corpus-size",
        "300",
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        t0 = time.monotonic()
        while True:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                health = httpx.get(f"{url}/healthz", timeout=1).json()
                break
            except httpx.TransportError:
                assert time.monotonic() - t0 < 90, "the server did not come up"
                time.sleep(0.2)
        assert health["status"] == "ok"
        assert health["preset"] == "realtime"
        assert health["llm_scorer"] is None
        assert health["deadline_s"] == 3.0  # the flag
        assert health["demo_corpus"] == 300
        assert list((tmp_path / "cache" / "demo").glob("stdlib-*.json"))
        r = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a", "b", "c", "d"]})
        assert r.status_code == 413 and "at most 3" in r.json()["message"]  # the config file
        r = httpx.post(
            f"{url}/v1/rerank", json={"query": "open a file", "documents": ["a file", "b"]}
        )
        assert r.status_code == 200 and r.json()["results"][0]["index"] == 0
        assert "llmrerank demo" in httpx.get(f"{url}/").text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, out


def test_cli_serve_rejects_bad_settings_clearly(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LLMRERANK_MAX_QUEUED": "-1"}
    proc = subprocess.run(
        [sys.executable, "-m", "llmrerank.cli", "serve", "--llm", "none", "--no-demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "max_queued" in proc.stderr and "greater than or equal to 0" in proc.stderr
    missing = tmp_path / "nope.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "llmrerank.cli", "serve", "--config", str(missing)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr
