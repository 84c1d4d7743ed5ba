"""``python -m llmrerank.serve``: the same as ``llmrerank serve``."""

from .cli import main

raise SystemExit(main())
