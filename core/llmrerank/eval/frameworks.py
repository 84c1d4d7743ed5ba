"""The local model as each framework's LLM, so the framework rerankers run on the same model.

Both wrappers delegate to one :class:`~llmrerank.eval.generation.LocalGenerator` (greedy
``generate``, bounded new tokens). The framework classes are built on first use, so importing
``llmrerank.eval`` needs neither framework.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from .._optional import require
from .generation import LocalGenerator

__all__ = ["langchain_llm", "llamaindex_llm"]


@cache
def _llamaindex_class() -> type[Any]:
    require("llama_index.core", extra="llamaindex", feature="the LlamaIndex baseline")
    from llama_index.core.base.llms.types import (
        CompletionResponse,
        CompletionResponseGen,
        LLMMetadata,
    )
    from llama_index.core.bridge.pydantic import PrivateAttr
    from llama_index.core.llms import CustomLLM
    from llama_index.core.llms.callbacks import llm_completion_callback

    class LocalLlamaIndexLLM(CustomLLM):
        """A LlamaIndex completion LLM over :class:`LocalGenerator`."""

        context_window: int = 8192
        num_output: int = 64
        model_name: str = "smollm2-135m-instruct"
        _generator: LocalGenerator = PrivateAttr()

        def __init__(self, generator: LocalGenerator, **kwargs: Any) -> None:
            super().__init__(num_output=generator.max_new_tokens, **kwargs)
            self._generator = generator

        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(
                context_window=self.context_window,
                num_output=self.num_output,
                model_name=self.model_name,
                is_chat_model=False,
            )

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
            return CompletionResponse(text=self._generator.generate(prompt))

        @llm_completion_callback()
        def stream_complete(
            self, prompt: str, formatted: bool = False, **kwargs: Any
        ) -> CompletionResponseGen:
            text = self._generator.generate(prompt)

            def gen() -> CompletionResponseGen:
                yield CompletionResponse(text=text, delta=text)

            return gen()

    return LocalLlamaIndexLLM


@cache
def _langchain_class() -> type[Any]:
    require("langchain_core", extra="langchain", feature="the LangChain baseline")
    from langchain_core.language_models.llms import LLM
    from pydantic import ConfigDict

    class LocalLangChainLLM(LLM):
        """A LangChain LLM over :class:`LocalGenerator`."""

        model_config = ConfigDict(arbitrary_types_allowed=True)
        generator: Any

        @property
        def _llm_type(self) -> str:
            return "llmrerank-local-generate"

        def _call(
            self,
            prompt: str,
            stop: list[str] | None = None,
            run_manager: Any = None,
            **kwargs: Any,
        ) -> str:
            text = str(self.generator.generate(prompt))
            for s in stop or []:
                text = text.split(s, 1)[0]
            return text

    return LocalLangChainLLM


def llamaindex_llm(generator: LocalGenerator) -> Any:
    """A ``llama_index.core.llms.CustomLLM`` that generates with ``generator``."""
    return _llamaindex_class()(generator)


def langchain_llm(generator: LocalGenerator) -> Any:
    """A ``langchain_core`` ``LLM`` that generates with ``generator``."""
    return _langchain_class()(generator=generator)
