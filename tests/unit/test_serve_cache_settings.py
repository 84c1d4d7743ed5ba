"""The score cache and worker settings of ``llmrerank serve``: flag, environment and config file
(the sample deployment file included), and secrets that never show."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pydantic_settings", reason="the serve settings need llmrerank[serve]")

from llmrerank.cache import MemoryScoreCache, SQLiteScoreCache
from llmrerank.errors import ConfigError
from llmrerank.serve.cli import _SETTINGS, add_serve_arguments
from llmrerank.serve.settings import ServeSettings, load_settings

SAMPLE = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "llmrerank.toml"


def test_the_sample_deployment_config_loads() -> None:
    s = load_settings(SAMPLE)
    assert s.score_cache == "redis://10.0.2.10:6379/0"
    assert s.cache_prefix == "llmrerank:prod:" and s.cache_ttl == 604800
    assert s.workers == 2 and s.llm == "openai" and len(s.llm_endpoints) == 2
    assert s.host == "0.0.0.0" and s.demo is False


def test_flag_beats_environment_beats_file(monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse

    monkeypatch.setenv("LLMRERANK_SCORE_CACHE", "redis://env-host:6379/1")
    monkeypatch.setenv("LLMRERANK_WORKERS", "3")
    monkeypatch.setenv("LLMRERANK_CACHE", "/tmp/model-cache")  # the model cache dir: unrelated
    assert load_settings(SAMPLE).score_cache == "redis://env-host:6379/1"
    assert load_settings(SAMPLE).workers == 3
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(["--cache", "rediss://flag-host:6380/0", "--workers", "4"])
    s = load_settings(SAMPLE, **{k: getattr(args, k, None) for k in _SETTINGS})
    assert s.score_cache == "rediss://flag-host:6380/0" and s.workers == 4


def test_a_password_in_the_url_becomes_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings(score_cache="redis://:hunter2-pw@cache.internal:6379/0")
    assert s.score_cache == "redis://cache.internal:6379/0"
    assert s.cache_password is not None and s.cache_password.get_secret_value() == "hunter2-pw"
    assert "hunter2-pw" not in repr(s) and "hunter2-pw" not in str(s.model_dump())
    monkeypatch.setenv("LLMRERANK_CACHE_PASSWORD", "from-env")
    s = load_settings(score_cache="redis://cache.internal:6379/0")
    assert s.cache_password is not None and s.cache_password.get_secret_value() == "from-env"
    assert '"cache_password": "from-env"' in s.revealed_json()  # what the workers receive


def test_bad_cache_values_are_config_errors_that_do_not_echo_them() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(score_cache="http://user:topsecret@host/")
    assert "score_cache" in str(info.value) and "topsecret" not in str(info.value)
    with pytest.raises(ConfigError, match="workers"):
        load_settings(workers=0)


def test_build_cache_for_each_kind(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="needs llmrerank[serve]")
    from llmrerank.serve.app import build_cache, cache_status

    assert build_cache(ServeSettings(score_cache="none")) is None
    assert build_cache(ServeSettings(cache_size=0)) is None
    memory = build_cache(ServeSettings(cache_size=10))
    assert isinstance(memory, MemoryScoreCache) and memory.max_entries == 10
    sqlite = build_cache(ServeSettings(score_cache=f"sqlite://{tmp_path}/s.db"))
    assert isinstance(sqlite, SQLiteScoreCache) and sqlite.path == tmp_path / "s.db"
    pytest.importorskip("redis", reason="needs llmrerank[redis]")
    redis = build_cache(
        ServeSettings(score_cache="redis://:pw-123@10.0.0.1:6379/0", cache_prefix="x:", cache_ttl=0)
    )
    status = cache_status(redis)
    assert status is not None and status["backend"] == "redis"
    assert status["url"] == "redis://10.0.0.1:6379/0" and "pw-123" not in str(status)
    assert status["prefix"] == "x:" and status["ttl_s"] is None
