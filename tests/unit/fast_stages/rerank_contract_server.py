"""A contract-test server for the ``/rerank`` wire formats, run by the tests on 127.0.0.1.

It implements the documented request and response schemas, not any provider's model:

- Cohere v2 (``POST /v2/rerank``): request ``{model, query, documents: [str], top_n?,
  max_tokens_per_doc?}``; response ``{id, results: [{index, relevance_score}], meta:
  {api_version: {version: "2"}, billed_units: {search_units}}}``.
- Jina v1 (``POST /v1/rerank``, also Together's Cohere-compatible route): request ``{model, query,
  documents: [str | {text}], top_n?, return_documents?}``; response ``{model, usage:
  {total_tokens}, results: [{index, relevance_score, document?: {text}}]}``.
- vLLM (``POST /rerank``, ``/v1/rerank``, ``/v2/rerank`` on a ``flavor="vllm"`` server): request
  ``{model?, query, documents, top_n? (0 = all), truncate_prompt_tokens?}``; response ``{id,
  model, usage: {total_tokens}, results: [{index, document: {text}, relevance_score}]}``.

- vLLM score (``POST /score``, ``/v1/score`` on a ``flavor="score"`` server): request ``{model?,
  text_1: str, text_2: [str]}``; response ``{id, object: "list", model, data: [{index, object:
  "score", score}], usage}`` in document order.
- TEI (``POST /rerank`` on a ``flavor="tei"`` server): request ``{query, texts: [str], raw_scores?,
  return_text?, truncate?}``; response ``[{index, score}]`` sorted by score.

Results come sorted by relevance, cut to ``top_n``. The relevance score is the fraction of query
words found in the document: deterministic, so tests can assert the order. ``faults`` scripts
failures (status, headers, body, delay) for the next requests; ``requests`` records what came in.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def overlap(query: str, text: str) -> float:
    words = set(query.lower().split())
    found = set(text.lower().split()) & words
    return len(found) / max(1, len(words))


@dataclass
class Fault:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None
    delay: float = 0.0


class RerankContractServer:
    """``flavor`` picks the response shape; ``api_key`` (if set) must come as a Bearer token."""

    def __init__(self, flavor: str = "cohere", api_key: str | None = None) -> None:
        if flavor not in ("cohere", "jina", "vllm", "score", "tei"):
            raise ValueError(flavor)
        self.flavor = flavor
        self.api_key = api_key
        self.faults: deque[Fault] = deque()
        self.requests: list[dict[str, Any]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RerankContractServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ schema

    def routes(self) -> set[str]:
        if self.flavor == "cohere":
            return {"/v2/rerank"}
        if self.flavor == "jina":
            return {"/v1/rerank"}
        if self.flavor == "score":
            return {"/score", "/v1/score"}
        if self.flavor == "tei":
            return {"/rerank"}
        return {"/rerank", "/v1/rerank", "/v2/rerank"}

    def respond(self, body: Any) -> tuple[int, Any]:
        if not isinstance(body, dict):
            return 400, {"message": "body must be a JSON object"}
        if self.flavor == "score":
            query, docs = body.get("text_1"), body.get("text_2")
            if not isinstance(query, str) or not isinstance(docs, list) or not docs:
                return 400, {"message": "text_1 must be a string and text_2 a non-empty list"}
            if not all(isinstance(d, str) for d in docs):
                return 400, {"message": "text_2 must hold strings"}
            return 200, {
                "id": f"score-{uuid.uuid4().hex}",
                "object": "list",
                "model": body.get("model") or "served-model",
                "data": [
                    {"index": i, "object": "score", "score": overlap(query, d)}
                    for i, d in enumerate(docs)
                ],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        if self.flavor == "tei":
            query, docs = body.get("query"), body.get("texts")
            if not isinstance(query, str) or not isinstance(docs, list) or not docs:
                return 422, {"error": "query must be a string and texts a non-empty list"}
            ranked = sorted(
                ((i, overlap(query, d)) for i, d in enumerate(docs)), key=lambda x: (-x[1], x[0])
            )
            return 200, [{"index": i, "score": sc} for i, sc in ranked]
        model = body.get("model")
        if self.flavor not in ("vllm", "tei", "score") and not isinstance(model, str):
            return 400, {"message": "model is required"}
        query = body.get("query")
        docs = body.get("documents")
        if not isinstance(query, str) or not query:
            return 400, {"message": "query must be a non-empty string"}
        if not isinstance(docs, list) or not docs:
            return 400, {"message": "documents must be a non-empty list"}
        texts: list[str] = []
        for d in docs:
            if isinstance(d, str):
                texts.append(d)
            elif self.flavor != "cohere" and isinstance(d, dict) and isinstance(d.get("text"), str):
                texts.append(d["text"])
            else:
                return 400, {"message": "documents must be strings"}
        top_n = body.get("top_n", len(texts))
        if not isinstance(top_n, int) or top_n < 0 or (top_n == 0 and self.flavor != "vllm"):
            return 400, {"message": "top_n must be a positive integer"}
        top_n = len(texts) if top_n == 0 else min(top_n, len(texts))
        scored = sorted(
            ((i, overlap(query, t)) for i, t in enumerate(texts)), key=lambda x: (-x[1], x[0])
        )[:top_n]
        tokens = sum(len(t.split()) for t in texts) + len(query.split()) * len(texts)
        if self.flavor == "cohere":
            return 200, {
                "id": str(uuid.uuid4()),
                "results": [{"index": i, "relevance_score": s} for i, s in scored],
                "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
            }
        with_docs = self.flavor == "vllm" or bool(body.get("return_documents", True))
        results = []
        for i, s in scored:
            item: dict[str, Any] = {"index": i, "relevance_score": s}
            if with_docs:
                item["document"] = {"text": texts[i]}
            results.append(item)
        out: dict[str, Any] = {
            "model": model or "served-model",
            "usage": {"total_tokens": tokens},
            "results": results,
        }
        if self.flavor == "vllm":
            out["id"] = f"rerank-{uuid.uuid4().hex}"
        return 200, out

    # ------------------------------------------------------------------ HTTP

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(
                self, status: int, payload: Any, headers: dict[str, str] | None = None
            ) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                server.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                fault = server.faults.popleft() if server.faults else None
                if fault is not None:
                    if fault.delay:
                        time.sleep(fault.delay)
                    if fault.status != 200 or fault.body is not None:
                        payload = (fault.body or json.dumps({"message": "fault"})).encode()
                        self._send(fault.status, payload, fault.headers)
                        return
                if self.path not in server.routes():
                    self._send(404, {"message": f"no route {self.path}"})
                    return
                if server.api_key is not None and (
                    self.headers.get("Authorization") != f"Bearer {server.api_key}"
                ):
                    self._send(401, {"message": "invalid api token"})
                    return
                status, payload = server.respond(body)
                self._send(status, payload)

        return Handler
