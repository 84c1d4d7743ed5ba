"""LLM scoring through any OpenAI-compatible server: vLLM, llama.cpp, SGLang, TGI, hosted APIs.

Both scoring methods read log-probabilities, never generated prose:

- **judgement** (query-first prompt): one ``max_tokens=1`` completion with ``logprobs``; the
  expected relevance over the label set comes from the first token's top log-probabilities. On
  vLLM the label tokens are requested explicitly (``logprob_token_ids``), so every label's
  full-vocabulary log-probability comes back whatever its rank. A chat-completions mode
  (``api="chat"``, ``top_logprobs``) serves servers that only offer chat.
- **query likelihood** (text-first prompt): the mean log-probability of the query's tokens, read
  from prompt log-probabilities: ``echo=True`` with ``logprobs`` on completions (vLLM,
  llama-cpp-python) or vLLM's ``prompt_logprobs`` extra parameter.

Transport: one pooled ``httpx.AsyncClient`` per event loop, a per-request timeout taken from the
:class:`~llmrerank.budget.Deadline`, a semaphore bounding requests in flight, retries (tenacity)
only for retryable failures (connection errors, 5xx, 429 honouring ``Retry-After``) and only
while the deadline leaves time. When the funnel cancels a call at its deadline the HTTP request is
cancelled with it: httpx closes that connection, so the server sees the client go away.

Several base URLs spread the load: each request goes to the healthy endpoint with the fewest
requests outstanding; each endpoint has its own :class:`~llmrerank.breaker.CircuitBreaker`.

Failures map onto the error tree: connection refused, a dropped connection or a 5xx ->
:class:`BackendUnavailable`; 429 -> :class:`RateLimited` (``retry_after``); the deadline ->
:class:`BackendTimeout`; invalid JSON or a response without log-probabilities ->
:class:`MalformedOutput`. A candidate whose label probability mass is too low is not scored
(``None``): the funnel reports it as ``malformed_output`` and keeps its fast-stage place.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import SecretStr

from .._optional import require
from ..budget import Deadline
from ..errors import (
    BackendError,
    BackendTimeout,
    ConfigError,
    MalformedOutput,
)
from ..prompts import JudgementTemplate, Method, Profile, QueryLikelihoodTemplate, get_profile
from ..scoring import mean_logprob
from ._http import HttpTransport
from .base import Scores

if TYPE_CHECKING:
    import httpx

__all__ = ["OpenAILLMScorer", "ServerKind"]

logger = logging.getLogger("llmrerank")

Api = Literal["completions", "chat"]
ServerKind = Literal["auto", "vllm", "llama-cpp-python", "llama.cpp", "generic"]
QLSource = Literal["auto", "echo", "prompt_logprobs"]


class _Throttled:
    """Log a recurring condition once, then at most once per ``interval`` with a count."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            msg += " (%d similar message(s) suppressed)"
            args = (*args, suppressed)
        logger.warning(msg, *args)


@dataclass
class _ServerInfo:
    """What the first use learnt about the server (the same for every replica)."""

    kind: ServerKind = "generic"
    label_token_ids: dict[str, int] = field(default_factory=dict)
    variant_token_ids: list[int] = field(default_factory=list)
    """The labels' single-token spellings (" yes", " Yes", "yes", ...): all are asked for."""
    bos_prefix: str = ""
    """Text put before query-likelihood prompts on llama-cpp-python (see ``_llama_cpp_bos``)."""
    notes: list[str] = field(default_factory=list)


def _root_of(base_url: str) -> str:
    url = base_url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"base_url must be an http(s) URL such as 'http://127.0.0.1:8000/v1', got {base_url!r}"
        )
    if url.endswith("/v1"):
        url = url[: -len("/v1")]
    return url


def _norm_label(token: str) -> str:
    return token.strip().lower()


class OpenAILLMScorer:
    """An LLM scorer for any OpenAI-compatible server (see the module docstring).

    Args:
        base_url: the server's base URL (``http://host:8000/v1`` or ``http://host:8000``), or
            several replicas' URLs: requests go to the healthy one with the fewest in flight.
        model: the served model name (as in ``/v1/models``); part of the fingerprint.
        method: ``"query_likelihood"`` (default: works with small models) or ``"judgement"``.
        api: ``"completions"`` (default) or ``"chat"`` for servers that only offer chat
            (judgement only: chat has no prompt log-probabilities).
        template: a :class:`JudgementTemplate` / :class:`QueryLikelihoodTemplate`; its version is
            part of the fingerprint.
        profile: a model profile (``"qwen3-reranker"``, ``"bge-reranker-v2-gemma"``,
            ``"chat-instruct"``, ``"brief-graded"`` or a :class:`~llmrerank.prompts.Profile`):
            judgement with that model family's prompt, labels and scoring rule (replaces
            ``template``). Literal profiles (chat markup in the prompt) use completions;
            ``chat="model"`` profiles use chat completions (system and user turns).
        server: ``"auto"`` detects vLLM, llama-cpp-python and llama.cpp's own server at first use
            (to validate labels and pick the best request form); ``"generic"`` skips detection.
        ql_source: query likelihood from ``"echo"`` (``echo=True`` + ``logprobs``) or vLLM's
            ``"prompt_logprobs"``; ``"auto"`` picks echo.
        top_logprobs: how many top log-probabilities judgement asks for (hosted OpenAI allows at
            most 5 on completions and 20 on chat).
        min_label_mass: below this probability on the labels, a judgement is malformed (None).
        api_key: the API key; by default read from the environment variable ``api_key_env``.
            Kept as a ``SecretStr``: never logged, never in ``repr`` or error messages.
        api_key_env: the environment variable holding the key (``OPENAI_API_KEY``).
        max_concurrency: requests in flight at most (across all endpoints).
        request_timeout: the longest one request may take, even without a deadline.
        connect_timeout: the longest a TCP/TLS connect may take.
        max_retries: retries after the first attempt (retryable failures only, deadline allowing).
        backoff: the first retry's delay in seconds (doubling, with jitter; ``Retry-After`` wins).
        max_text_chars: texts are cut to this many characters at a word boundary before they go
            into the prompt (about 4 characters per token for English: 2,000 ~ 500 tokens).
        breaker_threshold / breaker_reset: each endpoint's circuit breaker settings.
        transport: an ``httpx.AsyncBaseTransport`` (tests: ``httpx.MockTransport``).
    """

    batch_size = 1

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        *,
        method: Method = "query_likelihood",
        api: Api | None = None,
        template: JudgementTemplate | QueryLikelihoodTemplate | None = None,
        profile: str | Profile | None = None,
        server: ServerKind = "auto",
        ql_source: QLSource = "auto",
        top_logprobs: int = 20,
        min_label_mass: float = 0.05,
        api_key: SecretStr | str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 16,
        request_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        max_retries: int = 2,
        backoff: float = 0.05,
        max_text_chars: int = 2_000,
        breaker_threshold: int = 3,
        breaker_reset: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        require("httpx", extra="openai", feature="the OpenAI-compatible LLM scorer")
        require("tenacity", extra="openai", feature="retries of the OpenAI-compatible LLM scorer")
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ConfigError("base_url is empty; give at least one server URL")
        if not isinstance(model, str) or not model.strip():
            raise ConfigError("model must be the served model's name, as listed by /v1/models")
        if profile is not None:
            if template is not None:
                raise ConfigError("give either profile= or template=, not both")
            template, method = get_profile(profile), "judgement"
            wanted: Api = "chat" if template.chat == "model" else "completions"
            if api is not None and api != wanted:
                raise ConfigError(
                    f"profile {template.name!r} needs api={wanted!r}: "
                    + (
                        "its prompt goes through the model's chat template"
                        if wanted == "chat"
                        else "its prompt holds its own chat markup, sent as one completion prompt"
                    )
                )
            api = wanted
        if api is None:
            api = "completions"
        if method not in ("judgement", "query_likelihood"):
            raise ConfigError(f"method must be 'judgement' or 'query_likelihood', got {method!r}")
        if api not in ("completions", "chat"):
            raise ConfigError(f"api must be 'completions' or 'chat', got {api!r}")
        if api == "chat" and method == "query_likelihood":
            raise ConfigError(
                "query likelihood needs prompt log-probabilities, which chat completions do not "
                "return; use api='completions' or method='judgement'"
            )
        if server not in ("auto", "vllm", "llama-cpp-python", "llama.cpp", "generic"):
            raise ConfigError(f"unknown server kind {server!r}")
        if ql_source not in ("auto", "echo", "prompt_logprobs"):
            raise ConfigError(
                f"ql_source must be 'auto', 'echo' or 'prompt_logprobs', got {ql_source!r}"
            )
        if template is None:
            template = JudgementTemplate() if method == "judgement" else QueryLikelihoodTemplate()
        expected = JudgementTemplate if method == "judgement" else QueryLikelihoodTemplate
        if not isinstance(template, expected):
            raise ConfigError(f"method {method!r} needs a {expected.__name__}")
        if isinstance(template, JudgementTemplate) and len(template.labels) < 2:
            raise ConfigError("a judgement template needs at least two labels")
        if top_logprobs < 1:
            raise ConfigError(f"top_logprobs must be at least 1, got {top_logprobs!r}")
        if not 0.0 <= min_label_mass < 1.0:
            raise ConfigError(f"min_label_mass must be within [0, 1), got {min_label_mass!r}")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be at least 1, got {max_concurrency!r}")
        if request_timeout <= 0 or connect_timeout <= 0:
            raise ConfigError("request_timeout and connect_timeout must be positive")
        if max_retries < 0 or backoff < 0:
            raise ConfigError("max_retries and backoff must not be negative")
        if max_text_chars < 1:
            raise ConfigError(f"max_text_chars must be positive, got {max_text_chars!r}")

        self.model = model
        self.method: Method = method
        self.api: Api = api
        self.template = template
        self.server: ServerKind = server
        self.ql_source: QLSource = ql_source
        self.top_logprobs = top_logprobs
        self.min_label_mass = min_label_mass
        self.max_concurrency = max_concurrency
        self.request_timeout = request_timeout
        self.connect_timeout = connect_timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_text_chars = max_text_chars
        self.api_key_env = api_key_env
        if api_key is None:
            env = os.environ.get(api_key_env) if api_key_env else None
            api_key = SecretStr(env) if env else None
        elif isinstance(api_key, str):
            api_key = SecretStr(api_key)
        self._api_key: SecretStr | None = api_key

        roots = [_root_of(u) for u in urls]
        if len(set(roots)) != len(roots):
            raise ConfigError(f"base_url lists the same server twice: {roots}")
        self._http = HttpTransport(
            roots,
            name=f"openai:{model}",
            extra="openai",
            feature="the OpenAI-compatible LLM scorer",
            api_key=self._api_key,
            api_key_env=api_key_env,
            max_concurrency=max_concurrency,
            request_timeout=request_timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            backoff=backoff,
            breaker_threshold=breaker_threshold,
            breaker_reset=breaker_reset,
            transport=transport,
        )
        self._info: _ServerInfo | None = None
        self._config_error: ConfigError | None = None
        self._query_tokens: OrderedDict[str, int] = OrderedDict()
        self._throttle = _Throttled()
        self.stats: dict[str, int] = self._http.stats  # requests, retries, failures
        self.stats["low_label_mass"] = 0
        """Counters since construction: HTTP requests sent, retries, failed requests, candidates
        whose label probability mass was too low."""

    # ------------------------------------------------------------------ identity

    @property
    def takes_instruction(self) -> bool:
        """Whether the prompt takes a task instruction (a profile such as Qwen3-Reranker's)."""
        return isinstance(self.template, Profile) and self.template.takes_instruction

    @property
    def fingerprint(self) -> str:
        """``openai:<model>:<method>[/chat]:<template fingerprint>``; the URL is not part of it
        (replicas of one model give the same scores)."""
        method = self.method + ("/chat" if self.api == "chat" else "")
        return f"openai:{self.model}:{method}:{self.template.fingerprint}"

    def __repr__(self) -> str:
        urls = [e.display for e in self._http.endpoints]
        key = "set" if self._api_key is not None else "none"
        return (
            f"OpenAILLMScorer(base_url={urls!r}, model={self.model!r}, method={self.method!r}, "
            f"api={self.api!r}, api_key={key})"
        )

    @property
    def server_info(self) -> dict[str, Any]:
        """What the first use detected: server kind, label token ids, notes (empty before)."""
        if self._info is None:
            return {}
        return {
            "kind": self._info.kind,
            "label_token_ids": dict(self._info.label_token_ids),
            "notes": list(self._info.notes),
        }

    @property
    def in_flight(self) -> int:
        """HTTP requests outstanding now, over all endpoints."""
        return self._http.in_flight

    def endpoint_stats(self) -> list[dict[str, Any]]:
        """Per endpoint: URL (credentials removed), requests sent, outstanding, breaker state."""
        return self._http.endpoint_stats()

    # ------------------------------------------------------------------ lifecycle

    async def aclose(self) -> None:
        """Close this event loop's HTTP client (its pooled connections)."""
        await self._http.aclose()

    async def __aenter__(self) -> OpenAILLMScorer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def avalidate(self, deadline: Deadline | None = None) -> dict[str, Any]:
        """Detect the server and validate the label set now instead of at first use.

        Raises :class:`ConfigError` for a label that is not a single token, and
        :class:`BackendError` when no endpoint answers. Returns :attr:`server_info`.
        """
        await self._ensure_setup(deadline or Deadline.after(self.request_timeout))
        return self.server_info

    # ------------------------------------------------------------------ scoring

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        """One score per text (``None``: not scorable); raises the :class:`BackendError` of the
        first failure when no text could be scored."""
        if not texts:
            return []
        await self._ensure_setup(deadline)
        results = await asyncio.gather(
            *(self._score_bounded(query, t, deadline) for t in texts), return_exceptions=True
        )
        scores = Scores()
        errors: list[BaseException] = []
        for j, r in enumerate(results):
            if isinstance(r, BaseException):
                if not isinstance(r, Exception):
                    raise r
                errors.append(r)
                scores.append(None)
                scores.reasons[j] = r.reason if isinstance(r, BackendError) else "backend_error"
            else:
                scores.append(r)
                if r is None:  # answered, but without usable log-probabilities
                    scores.reasons[j] = "malformed_output"
        if errors:
            if all(s is None for s in scores):
                raise errors[0]
            self._throttle.warning(
                "partial",
                "%s: %d of %d texts failed (%s); they keep their fast-stage place",
                self.fingerprint,
                len(errors),
                len(texts),
                type(errors[0]).__name__,
            )
        return scores

    async def _score_bounded(self, query: str, text: str, deadline: Deadline) -> float | None:
        """One text, waiting for a request slot and retries included, within the deadline."""
        try:
            return await asyncio.wait_for(
                self._score_text(query, text, deadline), deadline.timeout()
            )
        except asyncio.TimeoutError:
            raise BackendTimeout(f"{self.fingerprint}: not scored before the deadline") from None

    async def _score_text(self, query: str, text: str, deadline: Deadline) -> float | None:
        text = _cut(text, self.max_text_chars)
        if isinstance(self.template, JudgementTemplate):
            return await self._judge(query, text, self.template, deadline)
        return await self._query_likelihood(query, text, self.template, deadline)

    async def _judge(
        self, query: str, text: str, template: JudgementTemplate, deadline: Deadline
    ) -> float | None:
        info = self._info or _ServerInfo()
        prompt = template.render(query, text)
        restrict = bool(info.variant_token_ids) and info.kind == "vllm"
        ids = info.variant_token_ids
        if self.api == "chat":
            messages = [{"role": "user", "content": prompt}]
            if isinstance(template, Profile):
                messages = [{"role": "user", "content": template.user_turn(query, text)}]
                system = template.system_turn()
                if system is not None:
                    messages.insert(0, {"role": "system", "content": system})
            payload: dict[str, Any] = {
                "model": self.model,
                "messages": messages,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
            }
            if restrict:
                payload["logprob_token_ids"] = ids
            data = await self._post("/chat/completions", payload, deadline)
            top = _chat_top_logprobs(data)
        else:
            payload = {
                "model": self.model,
                "prompt": prompt,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": self.top_logprobs,
            }
            if restrict:
                payload["logprob_token_ids"] = ids
            data = await self._post("/completions", payload, deadline)
            top = _completion_top_logprobs(data)
        return self._expected(top, template)

    def _expected(self, top: Mapping[str, float], template: JudgementTemplate) -> float | None:
        if isinstance(template, Profile) and not template.label_variants:
            # a reranker's profile names its exact label tokens: read those and nothing else
            exact: dict[str, float | None] = {}
            for label in template.labels:
                form = label.strip() if self.api == "chat" else label
                lp = top.get(form)
                exact[label] = lp if lp is not None and math.isfinite(lp) else None
            return self._scored(template, exact)
        # Variants of a label (" yes", "yes", " Yes") add up: chat replies start without a space.
        probs: dict[str, float] = {}
        for token, lp in top.items():
            if lp is None or not math.isfinite(lp):
                continue
            key = _norm_label(token)
            probs[key] = probs.get(key, 0.0) + math.exp(lp)
        label_lp: dict[str, float | None] = {}
        for label in template.labels:
            p = probs.get(_norm_label(label), 0.0)
            label_lp[label] = math.log(p) if p > 0 else None
        return self._scored(template, label_lp)

    def _scored(
        self, template: JudgementTemplate, label_lp: Mapping[str, float | None]
    ) -> float | None:
        score, mass = template.score(label_lp, min_mass=self.min_label_mass)
        if score is None:
            self.stats["low_label_mass"] += 1
            self._throttle.warning(
                "label_mass",
                "%s: the model put %.3f probability on the labels (< %.3f): candidate not "
                "scored (malformed output)",
                self.fingerprint,
                mass,
                self.min_label_mass,
            )
        return score

    async def _query_likelihood(
        self, query: str, text: str, template: QueryLikelihoodTemplate, deadline: Deadline
    ) -> float | None:
        info = self._info or _ServerInfo()
        context, target = template.render(query, text)
        prompt = info.bos_prefix + context + target
        source = self.ql_source
        if source == "auto":
            source = "echo"
        payload: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0.0,
        }
        if source == "echo":
            payload.update(echo=True, logprobs=0)
            data = await self._post("/completions", payload, deadline)
            tokens, logprobs = _echo_prompt_logprobs(data)
        else:
            payload["prompt_logprobs"] = 0
            data = await self._post("/completions", payload, deadline)
            tokens, logprobs = _vllm_prompt_logprobs(data)
        picked = _target_logprobs(tokens, logprobs, len(target))
        if picked is None:
            raise MalformedOutput(
                "the server's prompt log-probabilities do not cover the query's tokens"
            )
        return mean_logprob(picked)

    # ------------------------------------------------------------------ setup at first use

    async def _ensure_setup(self, deadline: Deadline) -> None:
        if self._info is not None:
            return
        if self._config_error is not None:
            raise self._config_error
        state = self._http.state()
        async with state.setup_lock:
            if self._info is not None:
                return
            try:
                self._info = await self._detect(deadline)
            except ConfigError as exc:
                self._config_error = exc  # a setting that cannot work: do not ask again
                raise

    async def _detect(self, deadline: Deadline) -> _ServerInfo:
        info = _ServerInfo(kind="generic" if self.server == "auto" else self.server)
        if self.server == "generic":
            info.notes.append("server detection off: labels not validated")
            return info
        kind = self.server
        tokenize: str | None = None
        if kind in ("auto", "vllm"):
            version = await self._get_json("/version", deadline)
            if isinstance(version, dict) and "version" in version:
                kind, tokenize = "vllm", "vllm"
        if kind in ("auto", "llama-cpp-python"):
            probe = await self._tokenize_llama_cpp_python("", deadline)
            if probe is not None:
                kind, tokenize = "llama-cpp-python", "llama-cpp-python"
        if kind in ("auto", "llama.cpp"):
            probe = await self._post_json("/tokenize", {"content": "a"}, deadline)
            if isinstance(probe, dict) and isinstance(probe.get("tokens"), list):
                kind, tokenize = "llama.cpp", "llama.cpp"
        info.kind = "generic" if kind == "auto" else kind
        if tokenize is None and kind != "auto":
            tokenize = kind if kind in ("vllm", "llama-cpp-python", "llama.cpp") else None

        if isinstance(self.template, JudgementTemplate):
            if tokenize is None:
                info.notes.append("no tokenize endpoint: labels not validated")
                logger.info(
                    "%s: the server has no known tokenize endpoint; label set not validated",
                    self.fingerprint,
                )
            else:
                info.label_token_ids = await self._validate_labels(tokenize, deadline)
                exact = isinstance(self.template, Profile) and not self.template.label_variants
                if info.label_token_ids and info.kind == "vllm":
                    info.variant_token_ids = (
                        sorted(set(info.label_token_ids.values()))
                        if exact
                        else await self._variant_ids(tokenize, deadline)
                    )
        else:
            if info.kind == "llama.cpp" and self.ql_source != "prompt_logprobs":
                raise ConfigError(
                    "llama.cpp's own server (llama-server) returns no prompt log-probabilities "
                    "(no echo), so query likelihood cannot run on it; use method='judgement', "
                    "or serve the model with llama-cpp-python or vLLM"
                )
            if self.ql_source == "prompt_logprobs" and info.kind not in ("vllm", "generic"):
                raise ConfigError(
                    f"ql_source='prompt_logprobs' is a vLLM parameter; this server is {info.kind}"
                )
            if info.kind == "llama-cpp-python":
                info.bos_prefix = await self._llama_cpp_bos(deadline)
                if info.bos_prefix:
                    info.notes.append(
                        f"echo log-probabilities aligned with BOS prefix {info.bos_prefix!r}"
                    )
        logger.info(
            "%s: server detected as %s%s",
            self.fingerprint,
            info.kind,
            f" ({'; '.join(info.notes)})" if info.notes else "",
        )
        return info

    async def _validate_labels(self, tokenize: str, deadline: Deadline) -> dict[str, int]:
        assert isinstance(self.template, JudgementTemplate)
        ids: dict[str, int] = {}
        bad: list[str] = []
        for label in self.template.labels:
            # chat replies start without the space that follows "Relevant:" in completions
            form = label.strip() if self.api == "chat" else label
            tokens = await self._tokenize(tokenize, form, deadline)
            if tokens is None:
                logger.info("%s: tokenize failed; label set not validated", self.fingerprint)
                return {}
            if len(tokens) != 1:
                bad.append(f"{form!r} -> {len(tokens)} tokens {tokens}")
            else:
                ids[label] = tokens[0]
        if bad:
            raise ConfigError(
                "every label must be a single token for the served model's tokenizer; "
                f"these are not: {', '.join(bad)}. Choose labels such as ' yes'/' no' or single "
                "digits with a leading space"
            )
        return ids

    async def _variant_ids(self, tokenize: str, deadline: Deadline) -> list[int]:
        """Token ids of every single-token spelling of every label (with and without the
        leading space, lower and capitalised): the probabilities of all of them add up."""
        assert isinstance(self.template, JudgementTemplate)
        ids: set[int] = set()
        for label in self.template.labels:
            core = label.strip()
            forms = {label, core, core.lower(), core.capitalize()}
            forms |= {" " + f for f in list(forms)}
            for form in sorted(forms):
                tokens = await self._tokenize(tokenize, form, deadline)
                if tokens is not None and len(tokens) == 1:
                    ids.add(tokens[0])
        return sorted(ids)

    async def _tokenize(self, kind: str, text: str, deadline: Deadline) -> list[int] | None:
        if kind == "vllm":
            body = {"model": self.model, "prompt": text, "add_special_tokens": False}
            data = await self._post_json("/tokenize", body, deadline)
        elif kind == "llama-cpp-python":
            return await self._tokenize_llama_cpp_python(text, deadline)
        else:
            data = await self._post_json("/tokenize", {"content": text}, deadline)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens):
            return tokens
        return None

    async def _tokenize_llama_cpp_python(self, text: str, deadline: Deadline) -> list[int] | None:
        """``/extras/tokenize`` (which adds the model's BOS token, when it has one, first)."""
        data = await self._post_json("/extras/tokenize", {"input": text}, deadline)
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list):
            return None
        if text:
            empty = await self._post_json("/extras/tokenize", {"input": ""}, deadline)
            bos = empty.get("tokens") if isinstance(empty, dict) else None
            if isinstance(bos, list) and bos and tokens[: len(bos)] == bos:
                tokens = tokens[len(bos) :]
        return [int(t) for t in tokens]

    async def _llama_cpp_bos(self, deadline: Deadline) -> str:
        """llama-cpp-python (0.3.x) pairs each echoed prompt token with the distribution *after*
        it, unless the prompt starts with the BOS token, which it then drops. Models that add no
        BOS themselves (SmolLM2) get shifted log-probabilities; starting the prompt with the BOS
        token's text restores the alignment. Probe common BOS strings: the one the server drops
        from the echo is the BOS."""
        empty = await self._post_json("/extras/tokenize", {"input": ""}, deadline)
        if isinstance(empty, dict) and empty.get("tokens"):
            return ""  # the model adds BOS itself: aligned already
        for candidate in ("<|im_start|>", "<|begin_of_text|>", "<s>", "<bos>", "<|endoftext|>"):
            tokens = await self._tokenize_llama_cpp_python(candidate, deadline)
            if tokens is None or len(tokens) != 1:
                continue
            body = {
                "model": self.model,
                "prompt": candidate + "a",
                "max_tokens": 1,
                "echo": True,
                "logprobs": 0,
                "temperature": 0.0,
            }
            data = await self._post_json("/v1/completions", body, deadline)
            try:
                echoed, _ = _echo_prompt_logprobs(data)
            except MalformedOutput:
                continue
            if echoed and echoed[0] != candidate:
                return candidate
        logger.warning(
            "%s: llama-cpp-python without a detectable BOS token: its echo log-probabilities are "
            "shifted by one token, query-likelihood scores will be poor",
            self.fingerprint,
        )
        return ""

    async def _get_json(self, path: str, deadline: Deadline) -> Any:
        return await self._probe("GET", path, None, deadline)

    async def _post_json(self, path: str, body: dict[str, Any], deadline: Deadline) -> Any:
        return await self._probe("POST", path, body, deadline)

    async def _probe(
        self, verb: str, path: str, body: dict[str, Any] | None, deadline: Deadline
    ) -> Any:
        """A detection request (server root + ``path``): the JSON, or None on 4xx."""
        return await self._http.probe(verb, path, body, deadline)

    async def _post(self, path: str, payload: dict[str, Any], deadline: Deadline) -> Any:
        """POST to ``/v1{path}`` with retries; returns the decoded JSON."""
        return await self._http.post("/v1" + path, payload, deadline)


# ---------------------------------------------------------------------- response parsing


def _cut(text: str, max_chars: int) -> str:
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = cut.rfind(" ", max(0, max_chars - 100))
    return cut[:space] if space > 0 else cut


def _choice(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise MalformedOutput("the response is not a JSON object")
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise MalformedOutput("the response has no choices")
    choice: dict[str, Any] = choices[0]
    return choice


def _completion_top_logprobs(data: Any) -> dict[str, float]:
    logprobs = _choice(data).get("logprobs")
    top = logprobs.get("top_logprobs") if isinstance(logprobs, dict) else None
    if not isinstance(top, list) or not top or not isinstance(top[0], dict):
        raise MalformedOutput("the completion has no top log-probabilities (logprobs)")
    return {str(k): float(v) for k, v in top[0].items() if isinstance(v, (int, float))}


def _chat_top_logprobs(data: Any) -> dict[str, float]:
    logprobs = _choice(data).get("logprobs")
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        raise MalformedOutput("the chat completion has no log-probabilities (logprobs.content)")
    first = content[0]
    out: dict[str, float] = {}
    entries = first.get("top_logprobs") or []
    for entry in [first, *entries]:
        if isinstance(entry, dict) and isinstance(entry.get("logprob"), (int, float)):
            out[str(entry.get("token", ""))] = float(entry["logprob"])
    if not out:
        raise MalformedOutput("the chat completion has no top log-probabilities")
    return out


def _echo_prompt_logprobs(data: Any) -> tuple[list[str], list[float | None]]:
    """(tokens, log-probabilities) of an ``echo=True`` completion, generated token last."""
    logprobs = _choice(data).get("logprobs")
    if not isinstance(logprobs, dict):
        raise MalformedOutput("the echoed completion has no log-probabilities")
    tokens, lps = logprobs.get("tokens"), logprobs.get("token_logprobs")
    if not isinstance(tokens, list) or not isinstance(lps, list) or len(tokens) != len(lps):
        raise MalformedOutput("the echoed completion's tokens and log-probabilities differ")
    return [str(t) for t in tokens], [
        float(v) if isinstance(v, (int, float)) else None for v in lps
    ]


def _vllm_prompt_logprobs(data: Any) -> tuple[list[str], list[float | None]]:
    """(tokens, log-probabilities) from vLLM's ``prompt_logprobs`` (prompt only), with a
    placeholder for the generated token so both sources read alike."""
    rows = _choice(data).get("prompt_logprobs")
    if not isinstance(rows, list) or not rows:
        raise MalformedOutput("the completion has no prompt_logprobs (is the server vLLM?)")
    tokens: list[str] = []
    lps: list[float | None] = []
    for row in rows:
        if not isinstance(row, dict) or not row:
            tokens.append("")
            lps.append(None)
            continue
        # prompt_logprobs=0: the row holds the prompt token only (its rank may exceed 1)
        entry = next(iter(row.values()))
        if not isinstance(entry, dict):
            raise MalformedOutput("unexpected prompt_logprobs entry")
        tokens.append(str(entry.get("decoded_token") or ""))
        v = entry.get("logprob")
        lps.append(float(v) if isinstance(v, (int, float)) else None)
    return [*tokens, ""], [*lps, None]


def _target_logprobs(
    tokens: Sequence[str], logprobs: Sequence[float | None], target_chars: int
) -> list[float | None] | None:
    """The log-probabilities of the prompt's last tokens covering ``target_chars`` characters.

    The last entry is the generated token and is skipped. Counting from the end means odd
    characters earlier in the passage cannot shift the boundary.
    """
    picked: list[float | None] = []
    covered = 0
    for token, lp in zip(reversed(tokens[:-1]), reversed(logprobs[:-1]), strict=True):
        if covered >= target_chars:
            break
        picked.append(lp)
        covered += len(token)
    if covered < target_chars or not picked:
        return None
    return picked[::-1]
