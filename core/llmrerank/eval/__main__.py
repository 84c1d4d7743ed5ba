"""``python -m llmrerank.eval --dataset DIR``: the benchmark (same as ``llmrerank bench``)."""

from .cli import main

raise SystemExit(main())
