"""The engine: stage 1 on every candidate -> top-k -> stage 2 (the LLM) under a deadline.

``Funnel.arerank`` (async), ``Funnel.rerank`` (sync, safe in Jupyter and inside a running loop)
and ``Funnel.astream`` (the fast ranking at once, partial updates, the final ranking) all run
the same coroutine. Whatever fails, every input candidate comes back exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from ._sync import run_sync
from .breaker import CircuitBreaker
from .budget import Deadline, LatencyEstimate, choose_k
from .cache import ScoreCache
from .errors import BackendError, CacheUnavailable, CircuitOpen, InputError
from .prompts import instruction_scope
from .scorers.base import Scorer, scorer_batch_size, scorer_concurrency
from .scorers.retriever_fusion import RetrieverFusionScorer
from .scoring import Fusion, final_order
from .types import Candidate, Ranking, RankingUpdate, ScoredCandidate, Stage, UpdateKind

if TYPE_CHECKING:
    from .presets import Preset

__all__ = ["CandidateLike", "Funnel", "normalize_candidates"]

logger = logging.getLogger("llmrerank")

CandidateLike = Candidate | str | Mapping[str, Any]

DEFAULT_MAX_TEXT_CHARS = 8_000
MAX_INSTRUCTION_CHARS = 2_000
"""The longest task instruction a funnel or request may give."""
"""Texts longer than this are cut (for scoring only; the candidate comes back whole)."""

_ASSEMBLY_MARGIN = 0.005
"""Seconds kept back from the deadline to fuse and build the final ranking."""
_SKIP_AFTER = 3
"""Latency observations before the estimate may decide that the LLM cannot reach its depth."""
_PROBE_EVERY = 10.0
_PROBE_SKIPS = 8
"""An LLM judged out of reach still runs once ``_PROBE_SKIPS`` requests have skipped it and
``_PROBE_EVERY`` seconds have passed since it last ran, so its estimate stays current (at most one
request in 8, and one per 10 s, pays for the probe)."""

_BACKGROUND: set[asyncio.Future[Any]] = set()
"""Background cache writes in flight (held so they are not collected mid-way)."""

_CONTROL = {c: " " for c in range(32) if chr(c) not in "\n\t"} | {127: " "}


def _clean_text(text: str, max_chars: int) -> tuple[str, bool]:
    """Text as scorers see it: control characters blanked, lone surrogates replaced, cut to
    ``max_chars`` at a word boundary when possible. Returns (text, was_truncated)."""
    if not text.isprintable():
        text = text.translate(_CONTROL)
        text = text.encode("utf-8", "replace").decode("utf-8")
        text = unicodedata.normalize("NFC", text)
    if len(text) <= max_chars:
        return text, False
    cut = text[:max_chars]
    space = cut.rfind(" ", max_chars - 200)
    return (cut[:space] if space > 0 else cut), True


def normalize_candidates(candidates: Sequence[CandidateLike]) -> list[Candidate]:
    """Accept Candidates, plain strings (id = position) or mappings with ``text`` (and ``id``)."""
    if isinstance(candidates, (str, bytes)) or not isinstance(candidates, Sequence):
        raise InputError(
            f"candidates must be a sequence (list) of Candidate, str or dict, "
            f"got {type(candidates).__name__}"
        )
    out: list[Candidate] = []
    seen: dict[str, int] = {}
    for i, c in enumerate(candidates):
        if isinstance(c, Candidate):
            cand = c
        elif isinstance(c, str):
            cand = Candidate(id=str(i), text=c)
        elif isinstance(c, Mapping):
            if "text" not in c:
                raise InputError(f"candidate {i} is a mapping without a 'text' key")
            meta = c.get("metadata") or {}
            cand = Candidate(
                id=str(c.get("id", i)),
                text=c["text"],
                metadata=meta,
                retrieval_score=c.get("retrieval_score", c.get("score")),
            )
        else:
            raise InputError(
                f"candidate {i} has type {type(c).__name__}; expected Candidate, str or dict"
            )
        if not isinstance(cand.text, str):
            raise InputError(
                f"candidate {i} (id {cand.id!r}) has text of type {type(cand.text).__name__}; "
                f"text must be str (decode bytes first)"
            )
        if not isinstance(cand.id, str):
            raise InputError(f"candidate {i} has a non-string id {cand.id!r}")
        rs = cand.retrieval_score
        if rs is not None and (
            isinstance(rs, bool) or not isinstance(rs, (int, float)) or not math.isfinite(rs)
        ):
            raise InputError(
                f"candidate {i} (id {cand.id!r}) has retrieval_score {rs!r}; "
                "it must be a finite number or None"
            )
        if cand.id in seen:
            raise InputError(
                f"duplicate candidate id {cand.id!r} at positions {seen[cand.id]} and {i}; "
                "ids must be unique within a request"
            )
        seen[cand.id] = i
        out.append(cand)
    return out


def _validate_query(query: object) -> str:
    if not isinstance(query, str):
        raise InputError(f"query must be a str, got {type(query).__name__}")
    if not query.strip():
        raise InputError("query is empty; give a non-empty question or search string")
    return query


@dataclass
class _State:
    """Mutable bookkeeping of one request."""

    query: str
    cands: list[Candidate]
    start: float
    fast: list[float | None]
    stage1: Stage = "fast"
    window: list[int] = field(default_factory=list)
    fuse_depth: int = 0
    """The answered prefix the LLM needs before it is fused: ``Fusion.min_depth``, capped at a
    window fixed in advance (an explicit ``k``, or every candidate there is)."""
    llm: dict[int, float] = field(default_factory=dict)
    cached: set[int] = field(default_factory=set)
    to_store: list[int] = field(default_factory=list)
    """New LLM scores for an async cache, written in one batch when the LLM stage ends."""
    settled: set[int] = field(default_factory=set)
    """Window candidates whose LLM answer came back unusable (malformed, refused): done, unscored."""
    reasons: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def reason(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)


class Funnel:
    """A two-stage reranker with a hard deadline.

    Args:
        fast: the first-stage scorer, run on every candidate (default:
            :class:`~llmrerank.scorers.retriever_fusion.RetrieverFusionScorer`, the retriever's
            ranking fused with BM25 over the candidates).
        llm: the second-stage scorer, run on the top ``k`` only; ``None`` ranks by ``fast`` alone.
        k: how many candidates the LLM scores; ``None`` chooses k from the latency estimate and
            the time left (between ``k_min`` and ``k_max``).
        deadline: default seconds per request; ``None`` for no deadline.
        concurrency: the most LLM calls in flight at once (further bounded by the scorer's
            ``max_concurrency``).
        fusion: how stage scores combine (:class:`~llmrerank.scoring.Fusion`).
        cache: a :class:`~llmrerank.cache.ScoreCache` for LLM scores, or ``None``.
        breaker: the LLM backend's circuit breaker (one per funnel by default).
        max_text_chars: texts are cut to this length for scoring (the candidate comes back whole).
        name: a label for provenance (the preset's name when built from one).
        input_ranked: the candidates come in their retriever's ranking, best first (the
            default: what LangChain and LlamaIndex retrievers and rerank-API clients send). Say
            ``False`` when their order carries no meaning: the fast stage then ignores input
            positions (retrieval scores still count). Per request: ``rerank(...,
            input_ranked=...)``.
        instruction: the task instruction for LLM scorers whose profile takes one (Qwen3-Reranker
            style, see :mod:`llmrerank.prompts`); each request may give its own. ``None`` keeps
            the profile's default. A scorer that takes no instruction is an :class:`InputError`.
    """

    def __init__(
        self,
        fast: Scorer | None = None,
        llm: Scorer | None = None,
        *,
        k: int | None = 20,
        k_min: int = 3,
        k_max: int = 50,
        deadline: float | None = None,
        concurrency: int = 8,
        fusion: Fusion | None = None,
        cache: ScoreCache | None = None,
        breaker: CircuitBreaker | None = None,
        max_text_chars: int = DEFAULT_MAX_TEXT_CHARS,
        name: str = "custom",
        input_ranked: bool = True,
        instruction: str | None = None,
    ) -> None:
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise InputError(f"k must be a non-negative int or None (budget-aware), got {k!r}")
        if not 0 <= k_min <= k_max:
            raise InputError(f"need 0 <= k_min <= k_max, got k_min={k_min}, k_max={k_max}")
        if concurrency < 1:
            raise InputError(f"concurrency must be at least 1, got {concurrency!r}")
        if max_text_chars < 1:
            raise InputError(f"max_text_chars must be positive, got {max_text_chars!r}")
        if deadline is not None:
            Deadline.after(deadline)  # validates
        if not isinstance(input_ranked, bool):
            raise InputError(f"input_ranked must be True or False, got {input_ranked!r}")
        self.fast: Scorer = fast if fast is not None else RetrieverFusionScorer()
        self.input_ranked = input_ranked
        self.llm = llm
        self.k, self.k_min, self.k_max = k, k_min, k_max
        self.deadline = deadline
        self.concurrency = concurrency
        self.fusion = fusion or Fusion()
        self.cache = cache
        self.breaker = breaker or CircuitBreaker(name=llm.fingerprint if llm else "llm")
        self.max_text_chars = max_text_chars
        self.name = name
        self.latency = LatencyEstimate()
        self._last_llm_call = -math.inf  # monotonic time the LLM stage last called the scorer
        self._skips = 0  # requests that skipped the LLM since it last ran (_out_of_reach)
        self.instruction = self._check_instruction(instruction)

    @classmethod
    def from_preset(
        cls,
        preset: str | Preset,
        *,
        llm: Scorer | Literal["default"] | None = "default",
        fast: Scorer | None = None,
        **overrides: Any,
    ) -> Funnel:
        """A funnel configured by a scenario preset (``realtime``, ``enterprise``, ``research``).

        ``llm="default"`` uses the embedded CPU model; pass any Scorer, or ``None`` for none.
        """
        from .presets import get_preset

        return get_preset(preset).build(llm=llm, fast=fast, **overrides)

    def __repr__(self) -> str:
        llm = self.llm.fingerprint if self.llm else None
        return (
            f"Funnel(name={self.name!r}, fast={self.fast.fingerprint!r}, llm={llm!r}, "
            f"k={self.k!r}, deadline={self.deadline!r}, fusion={self.fusion.fingerprint!r})"
        )

    # ------------------------------------------------------------------ public entry points

    async def arerank(
        self,
        query: str,
        candidates: Sequence[CandidateLike],
        *,
        k: int | None = None,
        deadline: float | None = None,
        input_ranked: bool | None = None,
        instruction: str | None = None,
    ) -> Ranking:
        """Rank ``candidates`` for ``query``; returns within ``deadline`` seconds (plus a few ms).

        ``input_ranked`` overrides the funnel's setting for this request (see :class:`Funnel`);
        ``instruction`` replaces the funnel's task instruction for this request.
        """
        return await self._run(
            query,
            candidates,
            k=k,
            deadline=deadline,
            emit=None,
            input_ranked=input_ranked,
            instruction=instruction,
        )

    def rerank(
        self,
        query: str,
        candidates: Sequence[CandidateLike],
        *,
        k: int | None = None,
        deadline: float | None = None,
        input_ranked: bool | None = None,
        instruction: str | None = None,
    ) -> Ranking:
        """Synchronous :meth:`arerank`; safe in Jupyter and from inside a running event loop."""
        return run_sync(
            self.arerank(
                query,
                candidates,
                k=k,
                deadline=deadline,
                input_ranked=input_ranked,
                instruction=instruction,
            )
        )

    async def astream(
        self,
        query: str,
        candidates: Sequence[CandidateLike],
        *,
        k: int | None = None,
        deadline: float | None = None,
        input_ranked: bool | None = None,
        instruction: str | None = None,
    ) -> AsyncIterator[RankingUpdate]:
        """Yield the ``fast`` ranking at once, ``partial`` rankings as LLM scores land, then
        ``final``. Closing the iterator early cancels the pending work."""
        queue: asyncio.Queue[RankingUpdate | BaseException] = asyncio.Queue()
        task = asyncio.ensure_future(
            self._run(
                query,
                candidates,
                k=k,
                deadline=deadline,
                emit=queue.put_nowait,
                input_ranked=input_ranked,
                instruction=instruction,
            )
        )

        def _done(t: asyncio.Future[Ranking]) -> None:
            if not t.cancelled() and t.exception() is not None:
                queue.put_nowait(cast(BaseException, t.exception()))

        task.add_done_callback(_done)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.kind == "final":
                    return
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    def as_langchain_compressor(self, **kwargs: Any) -> Any:
        """This funnel as a LangChain ``BaseDocumentCompressor`` (needs ``llmrerank[langchain]``)."""
        from ._optional import require

        module = require("langchain_llmrerank", extra="langchain", feature="the LangChain adapter")
        return module.LLMRerankCompressor(funnel=self, **kwargs)

    def as_llamaindex_postprocessor(self, **kwargs: Any) -> Any:
        """This funnel as a LlamaIndex node postprocessor (needs ``llmrerank[llamaindex]``)."""
        from ._optional import require

        module = require(
            "llamaindex_llmrerank", extra="llamaindex", feature="the LlamaIndex adapter"
        )
        return module.LLMRerankPostprocessor(funnel=self, **kwargs)

    # ------------------------------------------------------------------ the engine

    def _check_instruction(self, instruction: str | None) -> str | None:
        if instruction is None:
            return None
        if not isinstance(instruction, str) or not instruction.strip():
            raise InputError("instruction must be a non-empty string (or None for the default)")
        if len(instruction) > MAX_INSTRUCTION_CHARS:
            raise InputError(
                f"instruction is {len(instruction)} characters; at most {MAX_INSTRUCTION_CHARS}"
            )
        if self.llm is not None and not getattr(self.llm, "takes_instruction", False):
            raise InputError(
                f"the LLM scorer {self.llm.fingerprint} takes no instruction; select a profile "
                "that does (e.g. profile='qwen3-reranker')"
            )
        return instruction

    async def _run(
        self,
        query: str,
        candidates: Sequence[CandidateLike],
        *,
        k: int | None,
        deadline: float | None,
        emit: Callable[[RankingUpdate], None] | None,
        input_ranked: bool | None = None,
        instruction: str | None = None,
    ) -> Ranking:
        chosen = self._check_instruction(instruction) if instruction is not None else None
        with instruction_scope(chosen if chosen is not None else self.instruction):
            return await self._run_scoped(
                query, candidates, k=k, deadline=deadline, emit=emit, input_ranked=input_ranked
            )

    async def _run_scoped(
        self,
        query: str,
        candidates: Sequence[CandidateLike],
        *,
        k: int | None,
        deadline: float | None,
        emit: Callable[[RankingUpdate], None] | None,
        input_ranked: bool | None = None,
    ) -> Ranking:
        start = time.monotonic()
        if input_ranked is None:
            input_ranked = self.input_ranked
        elif not isinstance(input_ranked, bool):
            raise InputError(f"input_ranked must be True, False or None, got {input_ranked!r}")
        query = _validate_query(query)
        cands = normalize_candidates(candidates)
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise InputError(f"k must be a non-negative int, got {k!r}")
        dl = Deadline.after(deadline if deadline is not None else self.deadline)
        if deadline is None and self.deadline is None:
            dl = Deadline.never()

        state = _State(query=query, cands=cands, start=start, fast=[None] * len(cands))
        state.info.update(
            funnel=self.name,
            fast_scorer=self.fast.fingerprint,
            llm_scorer=self.llm.fingerprint if self.llm else None,
            fusion=self.fusion.fingerprint,
            deadline_s=deadline if deadline is not None else self.deadline,
            input_ranked=input_ranked,
        )
        if not cands:
            ranking = self._assemble(state, [], "final")
            if emit:
                emit(RankingUpdate("final", ranking, time.monotonic() - start))
            return ranking

        texts: list[str] = []
        truncated = 0
        for c in cands:
            text, cut = _clean_text(c.text, self.max_text_chars)
            truncated += cut
            texts.append(text)
        if truncated:
            logger.warning(
                "%d candidate text(s) longer than %d characters were cut for scoring",
                truncated,
                self.max_text_chars,
            )
            state.info["truncated"] = truncated

        await self._stage_fast(state, texts, dl, input_ranked)
        fast_order = self._fast_order(state)
        if emit:
            emit(RankingUpdate("fast", self._assemble(state, fast_order, "fast"), _since(start)))

        eligible = [i for i in fast_order if texts[i].strip()]
        if self.llm is not None:
            k_req = k if k is not None else self.k  # None: budget-aware
            k_eff = self._choose_k(k_req, dl, len(eligible))
            state.window = eligible[:k_eff]
            # min_depth guards against a window the deadline cut short; a window the caller
            # fixed (k) or one that holds every candidate counts as deep enough once answered
            fixed = k_eff if k_req is not None else len(eligible)
            state.fuse_depth = min(self.fusion.min_depth, fixed)
            await self._stage_llm(state, texts, dl, emit, fast_order)

        ranking = self._assemble(state, fast_order, "final")
        if emit:
            emit(RankingUpdate("final", ranking, _since(start)))
        return ranking

    async def _stage_fast(
        self, state: _State, texts: list[str], dl: Deadline, input_ranked: bool
    ) -> None:
        t0 = time.monotonic()
        try:
            by_candidate = getattr(self.fast, "ascore_candidates", None)
            if by_candidate is not None and getattr(self.fast, "uses_input_order", False):
                call = by_candidate(
                    state.query, state.cands, deadline=dl, input_ranked=input_ranked, texts=texts
                )
            elif by_candidate is not None:
                call = by_candidate(state.query, state.cands, deadline=dl)
            else:
                call = self.fast.ascore(state.query, texts, deadline=dl)
            scores = await asyncio.wait_for(call, timeout=dl.timeout())
            if len(scores) != len(texts):
                raise BackendError(
                    f"fast scorer returned {len(scores)} scores for {len(texts)} texts"
                )
            bad = 0
            for i, s in enumerate(scores):
                if s is not None and not (isinstance(s, (int, float)) and math.isfinite(s)):
                    bad += 1
                    s = None
                state.fast[i] = None if s is None else float(s)
            if bad:
                logger.warning(
                    "fast scorer returned %d non-finite score(s); treated as unscored", bad
                )
        except (asyncio.TimeoutError, Exception) as exc:
            state.stage1 = "input"
            state.fast = [None] * len(texts)
            state.reason("fast_stage_failed")
            state.errors.append(f"fast: {type(exc).__name__}: {exc}"[:300])
            logger.warning(
                "fast stage %s failed (%s); falling back to the input order",
                self.fast.fingerprint,
                type(exc).__name__,
            )
        state.timings["fast"] = time.monotonic() - t0

    def _fast_order(self, state: _State) -> list[int]:
        """Fast-stage order; where the fast stage gave nothing, the retrieval score, then input."""

        def key(i: int) -> tuple[float, float, int]:
            f = state.fast[i]
            r = state.cands[i].retrieval_score
            return (
                -(f if f is not None else -math.inf),
                -(r if r is not None else -math.inf),
                i,
            )

        return sorted(range(len(state.cands)), key=key)

    def _out_of_reach(self, state: _State, todo: int, dl: Deadline) -> bool:
        """Whether the latency estimate says the LLM cannot answer the depth it needs to be
        fused (``state.fuse_depth``, candidates served from the cache counting) before the
        deadline. Then it is not called at all: the fast order would stand anyway. Decided only
        once the estimate holds a few observations; a probe now and then (``_PROBE_SKIPS``,
        ``_PROBE_EVERY``) runs the LLM anyway so that the estimate follows the backend's speed."""
        need = state.fuse_depth - (len(state.window) - todo)
        per = self.latency.per_candidate
        if need <= 0 or not dl.is_finite or per is None:
            return False
        if self.latency.observations < _SKIP_AFTER:
            return False
        if self._skips >= _PROBE_SKIPS and time.monotonic() - self._last_llm_call >= _PROBE_EVERY:
            return False
        assert self.llm is not None
        reach = choose_k(
            dl.remaining(),
            per,
            concurrency=scorer_concurrency(self.llm, self.concurrency),
            k_min=0,
            k_max=todo,
            safety=1.0,
        )
        return reach < need

    def _choose_k(self, k: int | None, dl: Deadline, n: int) -> int:
        if k is None:
            k = self.k
        if k is None:
            assert self.llm is not None
            conc = scorer_concurrency(self.llm, self.concurrency)
            k = choose_k(
                dl.remaining(),
                self.latency.per_candidate,
                concurrency=conc,
                k_min=self.k_min,
                k_max=self.k_max,
            )
        return min(k, n)

    async def _stage_llm(
        self,
        state: _State,
        texts: list[str],
        dl: Deadline,
        emit: Callable[[RankingUpdate], None] | None,
        fast_order: list[int],
    ) -> None:
        llm = self.llm
        assert llm is not None
        t0 = time.monotonic()
        state.timings["llm"] = 0.0
        if not state.window:
            return
        fp = llm.fingerprint
        todo = list(state.window)

        if self.cache is not None:
            await self._cache_lookup(state, texts, todo, fp, dl)
            state.info["cache_hits"] = len(state.cached)
            state.info["cache_misses"] = len(todo) - len(state.cached)
            todo = [i for i in todo if i not in state.cached]
        if not todo:
            state.timings["llm"] = time.monotonic() - t0
            return

        if self._out_of_reach(state, len(todo), dl):
            # its scores could not be fused (Fusion.min_depth): spend no time on them
            state.reason("deadline")
            state.info["llm_skipped"] = "depth_out_of_reach"
            state.timings["llm"] = time.monotonic() - t0
            self._skips += 1
            return
        self._last_llm_call = time.monotonic()
        self._skips = 0

        if not self.breaker.allow():
            state.reason("circuit_open")
            state.errors.append(f"llm: circuit open for {fp}")
            state.timings["llm"] = time.monotonic() - t0
            return

        size = scorer_batch_size(llm)
        chunks = [todo[j : j + size] for j in range(0, len(todo), size)]
        sem = asyncio.Semaphore(scorer_concurrency(llm, self.concurrency))
        stage_dl = dl.earlier(_ASSEMBLY_MARGIN)

        async def score_chunk(chunk: list[int]) -> tuple[list[int], list[float | None]]:
            async with sem:
                if self.breaker.state == "open":
                    raise CircuitOpen(f"circuit open for {fp}")
                c0 = time.monotonic()
                scores = await llm.ascore(state.query, [texts[i] for i in chunk], deadline=stage_dl)
                if len(scores) != len(chunk):
                    raise BackendError(
                        f"LLM scorer returned {len(scores)} scores for {len(chunk)} texts"
                    )
                # per text the scorer answered: a call cut short by the deadline (``0 of 2
                # scored`` in no time) would otherwise teach the estimate that texts are free,
                # and the budget-aware k would then ask for k_max
                answered = sum(1 for s in scores if s is not None)
                if answered:
                    self.latency.observe(time.monotonic() - c0, answered)
                return chunk, scores

        tasks = {asyncio.ensure_future(score_chunk(c)) for c in chunks}
        pending = tasks
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=stage_dl.timeout(), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:  # the deadline passed
                    break
                landed = False
                for task in done:
                    landed |= self._collect(state, task, texts)
                if landed and emit:
                    emit(
                        RankingUpdate(
                            "partial",
                            self._assemble(state, fast_order, "partial"),
                            _since(state.start),
                        )
                    )
        finally:
            if pending:
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            self._store_in_background(state, texts, fp)
        if pending:
            state.reason("deadline")
            logger.info(
                "deadline reached: LLM scored %d of %d candidates",
                len(state.llm),
                len(state.window),
            )
        state.timings["llm"] = time.monotonic() - t0

    async def _cache_lookup(
        self, state: _State, texts: list[str], todo: list[int], fp: str, dl: Deadline
    ) -> None:
        """Cache hits into ``state``. An async cache (Redis) is awaited under a timeout taken
        from the deadline; whatever a cache does, ranking goes on (``info["cache"]`` says how
        the lookup went: ``ok``, ``unavailable`` or ``error``)."""
        cache = self.cache
        assert cache is not None
        wanted = [texts[i] for i in todo]
        aget = getattr(cache, "aget_many", None)
        try:
            if aget is not None:  # the cache bounds its own wait; the deadline is a backstop
                hits = await asyncio.wait_for(
                    aget(fp, state.query, wanted, deadline=dl), timeout=dl.timeout()
                )
            else:
                hits = cache.get_many(fp, state.query, wanted)
            if len(hits) != len(todo):
                raise ValueError(f"{len(hits)} answers for {len(todo)} lookups")
        except CacheUnavailable:  # the cache logged it, once per outage
            state.info["cache"] = "unavailable"
            return
        except (asyncio.TimeoutError, Exception) as exc:  # a broken cache never breaks ranking
            logger.warning(
                "score cache lookup failed (%s); continuing without it", type(exc).__name__
            )
            state.info["cache"] = "error"
            return
        state.info["cache"] = "ok"
        for i, s in zip(todo, hits, strict=True):
            if s is not None:
                state.llm[i] = s
                state.cached.add(i)

    def _store_in_background(self, state: _State, texts: list[str], fp: str) -> None:
        """One batched write of the request's new scores to an async cache; the ranking does
        not wait for it (also when the request was cancelled: what was scored is kept)."""
        cache = self.cache
        if cache is None or not state.to_store:
            return
        landed, state.to_store = state.to_store, []
        aput = getattr(cache, "aput_many", None)
        if aput is None:
            return
        task = asyncio.ensure_future(
            aput(fp, state.query, [texts[i] for i in landed], [state.llm[i] for i in landed])
        )
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)

    def _collect(self, state: _State, task: asyncio.Future[Any], texts: list[str]) -> bool:
        """Record one finished chunk; returns whether any score landed."""
        if task.cancelled():
            return False
        exc = task.exception()
        if exc is not None:
            reason = exc.reason if isinstance(exc, BackendError) else "backend_error"
            state.reason(reason)
            msg = f"llm: {type(exc).__name__}: {exc}"[:300]
            if msg not in state.errors:
                state.errors.append(msg)
                logger.warning("LLM stage: %s", msg)
            if not isinstance(exc, CircuitOpen):
                self.breaker.record_failure()
            return False
        chunk, scores = task.result()
        self.breaker.record_success()
        explained: dict[int, str] = getattr(scores, "reasons", {})
        landed: list[int] = []
        bad = 0
        for j, (i, s) in enumerate(zip(chunk, scores, strict=True)):
            if s is None:
                why = explained.get(j, "deadline")
                state.reason(why)
                if why != "deadline":
                    state.settled.add(i)
                continue
            if not (isinstance(s, (int, float)) and math.isfinite(s)):
                bad += 1
                state.settled.add(i)
                continue
            state.llm[i] = float(s)
            landed.append(i)
        if bad:
            state.reason("malformed_output")
            logger.warning("LLM scorer returned %d non-finite score(s); treated as unscored", bad)
        if landed and self.cache is not None and hasattr(self.cache, "aput_many"):
            state.to_store.extend(landed)
        elif landed and self.cache is not None and self.llm is not None:
            try:
                self.cache.put_many(
                    self.llm.fingerprint,
                    state.query,
                    [texts[i] for i in landed],
                    [state.llm[i] for i in landed],
                )
            except Exception as exc:
                logger.warning("score cache store failed (%s); continuing without it", exc)
        return bool(landed)

    def _assemble(self, state: _State, fast_order: list[int], kind: UpdateKind) -> Ranking:
        window = _answered_prefix(state) if kind != "fast" else []
        depth = len(window)
        if depth < state.fuse_depth:
            window = []  # too shallow to fuse: the fast order stands (Fusion.min_depth)
        in_window = set(window)
        rest = [i for i in fast_order if i not in in_window]
        if window:
            fused, tail = self.fusion.fuse(
                [state.fast[i] for i in window],
                [state.llm.get(i) for i in window],
                [state.fast[i] for i in rest],
            )
            order = final_order(window, fused, rest, state.fast)
            score_of = dict(zip(window, fused, strict=True)) | dict(zip(rest, tail, strict=True))
        else:
            order = rest
            score_of = {
                i: (f if (f := state.fast[i]) is not None else -float(r))
                for r, i in enumerate(order)
            }
        results = tuple(
            ScoredCandidate(
                candidate=state.cands[i],
                rank=rank,
                score=score_of[i],
                stage="llm" if i in in_window and i in state.llm else state.stage1,
                fast_score=state.fast[i],
                llm_score=state.llm.get(i),
                cached=i in state.cached,
            )
            for rank, i in enumerate(order)
        )
        timings = dict(state.timings)
        timings["total"] = _since(state.start)
        info = dict(state.info)
        # which scale ``score`` is on: fused z-scores, or the fast scorer's own (no window)
        info["score_scale"] = "fused" if window else "fast"
        if kind != "fast" and self.llm is not None:
            info["llm_depth"] = depth  # the answered prefix of the window
            info["llm_fused"] = bool(window)
        if state.errors:
            info["errors"] = list(state.errors)
        return Ranking(
            query=state.query,
            results=results,
            degraded=bool(state.reasons),
            reasons=tuple(state.reasons),
            timings=timings,
            k=len(state.window),
            llm_scored=len(state.llm),
            info=info,
        )


def _answered_prefix(state: _State) -> list[int]:
    """The window as deep as the LLM got: its longest prefix (in fast order) whose candidates
    all have an LLM answer (a score, or an unusable answer). A candidate scored past the first
    one still waiting (deadline, a failed request) keeps its fast-stage place, so a window cut
    short by the deadline ranks like a smaller, complete window instead of letting a few LLM
    scores push candidates below ones the LLM never saw (measured: docs/benchmarks/drop_in.md)."""
    depth = 0
    for i in state.window:
        if i not in state.llm and i not in state.settled:
            break
        depth += 1
    return state.window[:depth]


def _since(start: float) -> float:
    return time.monotonic() - start
