"""``llmrerank serve``: an HTTP rerank service with streamed results and a demo page.

- :func:`create_app` builds the ASGI app (needs ``llmrerank[serve]``);
- :class:`ServeSettings` / :func:`load_settings` configure it (flags, ``LLMRERANK_*``, TOML);
- :mod:`llmrerank.serve.client` calls a running server (needs only ``httpx``).

Names are imported lazily so that the client works without the server's dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import create_app
    from .settings import ServeSettings, load_settings

__all__ = ["ServeSettings", "create_app", "load_settings"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("ServeSettings", "load_settings"):
        from . import settings

        return getattr(settings, name)
    raise AttributeError(f"module 'llmrerank.serve' has no attribute {name!r}")
