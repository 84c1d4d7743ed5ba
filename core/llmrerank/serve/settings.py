"""Settings of ``llmrerank serve``: flags > environment (``LLMRERANK_*``) > config file > defaults.

The config file is TOML with the same keys as the flags (underscores), for example::

    preset = "realtime"
    port = 8080
    max_concurrent = 8
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ..errors import ConfigError
from ..presets import PRESETS

__all__ = ["CACHE_SCHEMES", "LLM_CHOICES", "ServeSettings", "load_settings"]

LLM_CHOICES = ("default", "none", "openai", "scripted")
CACHE_SCHEMES = ("redis", "rediss", "unix", "sqlite")


class ServeSettings(BaseSettings):
    """Everything the server can be told. Each field is also ``LLMRERANK_<NAME>`` in the
    environment and ``--<name>`` on the command line."""

    model_config = SettingsConfigDict(
        env_prefix="LLMRERANK_", extra="forbid", validate_default=True
    )

    host: str = "127.0.0.1"
    """Address to bind. The default serves this machine only; use 0.0.0.0 deliberately."""
    port: int = Field(default=8000, ge=0, le=65535)

    preset: str = "enterprise"
    """The default preset (``realtime``, ``enterprise``, ``research``); requests may pick another."""
    deadline: float | None = Field(default=None, gt=0)
    """Seconds per request, overriding the preset's deadline."""
    k: int | None = Field(default=None, ge=0)
    """How many candidates the LLM scores, overriding the preset's k."""
    llm: str = "default"
    """``default`` (the embedded CPU model), ``none`` (fast stage only), ``openai`` (an
    OpenAI-compatible server at ``llm_endpoints``) or ``scripted`` (a test double for load tests
    and benchmarks: :class:`~llmrerank.testing.ScriptedScorer`, word-overlap scores after
    ``scripted_latency`` seconds per call; not a model)."""
    scripted_latency: float = Field(default=0.0, ge=0, le=60)
    """For ``llm = "scripted"``: seconds per LLM call of the test double."""
    llm_endpoints: list[str] = Field(default_factory=list)
    """Base URLs of OpenAI-compatible servers, for ``llm = "openai"``."""
    llm_model: str | None = None
    llm_api_key: SecretStr | None = None
    score_cache: str = "memory"
    """Where LLM scores are cached (the flag ``--cache``; ``LLMRERANK_SCORE_CACHE``, since
    ``LLMRERANK_CACHE`` is the directory of the model and corpus caches): ``memory`` (this process, ``cache_size`` scores), ``none``,
    ``redis://host:port/db``, ``rediss://...`` (TLS) or ``unix:///path.sock`` (a Redis shared
    by every worker and replica), or ``sqlite:///path/file.db`` (a file on this machine). A
    password in the URL is moved to ``cache_password``; better give it there (environment or
    config file), where ``ps`` does not show it."""
    cache_size: int = Field(default=100_000, ge=0)
    """LLM scores kept in memory for ``cache = "memory"`` (0 disables the score cache)."""
    cache_password: SecretStr | None = None
    """The Redis password (``AUTH``); from ``LLMRERANK_CACHE_PASSWORD`` or the config file."""
    cache_prefix: str = Field(default="llmrerank:", min_length=1)
    """Prefix of every Redis key: one per deployment sharing a Redis."""
    cache_ttl: float = Field(default=7 * 24 * 3600, ge=0)
    """Seconds a score stays in Redis (0: until Redis' maxmemory policy evicts it)."""
    cache_timeout: float = Field(default=0.05, gt=0, le=5)
    """The longest a Redis lookup may take (seconds); it also takes at most a tenth of the
    request's time left. Slower, and the request ranks without the cache."""

    max_documents: int = Field(default=1000, ge=1)
    """The most documents one request may carry (413 beyond)."""
    max_chars_per_doc: int = Field(default=20_000, ge=1)
    """The longest document text accepted, in characters (413 beyond)."""
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    """The largest request body accepted (413 beyond)."""
    max_deadline: float = Field(default=60.0, gt=0)
    """The longest per-request deadline a client may ask for (422 beyond)."""
    max_concurrent: int = Field(default=4, ge=1)
    """Rerank requests worked on at once."""
    max_queued: int = Field(default=16, ge=0)
    """Requests waiting for a slot; past running + queued the server answers 503."""
    retry_after: int = Field(default=1, ge=1)
    """Seconds in the Retry-After header of a 503."""

    demo: bool = True
    """Serve the demo page at ``/`` (builds the demo corpus at start-up)."""
    demo_corpus_size: int = Field(default=3000, ge=10, le=50_000)
    """Paragraphs of stdlib docstrings in the demo corpus."""
    demo_top_n: int = Field(default=50, ge=1, le=500)
    """How many paragraphs BM25 retrieves from the demo corpus for the funnel to rerank."""

    workers: int = Field(default=1, ge=1, le=64)
    """Server processes sharing the port, each with its own funnel and model, loaded before it
    accepts connections; ``/metrics`` then sums over the workers."""

    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; choose one of {', '.join(PRESETS)}")
        return value

    @field_validator("llm")
    @classmethod
    def _known_llm(cls, value: str) -> str:
        if value not in LLM_CHOICES:
            raise ValueError(f"llm must be one of {', '.join(LLM_CHOICES)}, got {value!r}")
        return value

    @field_validator("score_cache")
    @classmethod
    def _known_cache(cls, value: str) -> str:
        value = value.strip()
        if value in ("memory", "none") or value.split("://", 1)[0] in CACHE_SCHEMES:
            return value
        # the value is not echoed: it may hold a password
        raise ValueError(
            "score_cache (--cache) must be 'memory', 'none', a Redis URL (redis://, rediss://, unix://) or "
            "sqlite:///path"
        )

    @model_validator(mode="after")
    def _password_out_of_url(self) -> ServeSettings:
        if self.score_cache.split("://", 1)[0] in ("redis", "rediss", "unix"):
            from ..cache_redis import split_password

            url, password = split_password(self.score_cache)
            self.score_cache = url
            if password is not None and self.cache_password is None:
                self.cache_password = password
        return self

    def revealed_json(self) -> str:
        """These settings as JSON with the secrets in clear: for the worker processes of
        ``--workers N`` (passed through their environment, never logged)."""
        import json

        data = self.model_dump(mode="python")
        for name, value in list(data.items()):
            if isinstance(value, SecretStr):
                data[name] = value.get_secret_value()
        return json.dumps(data)


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> ServeSettings:
    """Settings from ``overrides`` (the flags; ``None`` values are ignored), the environment,
    then ``config_file`` (TOML). Raises :class:`ConfigError` naming every bad setting."""
    from pydantic import ValidationError

    given = {k: v for k, v in overrides.items() if v is not None}
    if config_file is not None and not Path(config_file).is_file():
        raise ConfigError(f"config file {str(config_file)!r} does not exist")
    toml_file = Path(config_file) if config_file is not None else None

    class _Settings(ServeSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: tuple[PydanticBaseSettingsSource, ...] = (init_settings, env_settings)
            if toml_file is not None:
                sources += (TomlConfigSettingsSource(settings_cls, toml_file=toml_file),)
            return sources

    try:
        merged = _Settings(**given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid server settings: {problems}") from None
    return ServeSettings.model_construct(**merged.model_dump())
