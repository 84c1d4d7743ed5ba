#!/usr/bin/env python
"""Execute the cookbook notebooks top to bottom and write executed copies.

    python scripts/run_notebooks.py                      # all of cookbook/*.ipynb
    python scripts/run_notebooks.py cookbook/03_*.ipynb  # some of them
    make notebooks                                       # the same, in the project's venv

Executed copies (with outputs) go to ``cookbook/_executed/`` (gitignored; ``--out DIR`` to
change); the notebooks in ``cookbook/`` stay stripped of outputs. Each notebook runs in a fresh
kernel with ``cookbook/`` as its working directory and must finish within ``--timeout`` seconds
(default 600, or ``$LLMRERANK_NOTEBOOK_TIMEOUT``). Exits non-zero if any cell fails. The test
suite (``tests/cookbook/``) runs every notebook through :func:`execute_notebook` too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COOKBOOK = REPO / "cookbook"
DEFAULT_OUT = COOKBOOK / "_executed"
DEFAULT_TIMEOUT = float(os.environ.get("LLMRERANK_NOTEBOOK_TIMEOUT", "600"))


def execute_notebook(
    path: Path, *, timeout: float = DEFAULT_TIMEOUT, out_dir: Path | None = None
) -> tuple[object, float]:
    """Run ``path`` in a fresh ``python3`` kernel (working directory: the notebook's folder).

    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell and
    ``TimeoutError`` when the whole notebook takes longer than ``timeout`` seconds. The executed
    notebook is written to ``out_dir`` (also when it failed). Returns (notebook, seconds).
    """
    import nbformat
    from nbclient import NotebookClient

    # the embedded models come from installed packages; never reach for a model hub
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    nb = nbformat.read(path, as_version=4)
    start = time.monotonic()

    def cell_timeout(cell: object) -> int:
        left = timeout - (time.monotonic() - start)
        if left <= 0:
            raise TimeoutError(f"{path.name} ran past its {timeout:.0f} s budget")
        return max(1, int(left))

    client = NotebookClient(
        nb,
        timeout=int(timeout),
        timeout_func=cell_timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    try:
        client.execute()
    finally:
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, out_dir / path.name)
    return nb, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: cookbook/*.ipynb")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="executed copies go here")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="s per notebook")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted(COOKBOOK.glob("*.ipynb"))
    failed = 0
    for path in notebooks:
        t0 = time.monotonic()
        try:
            _, seconds = execute_notebook(path.resolve(), timeout=args.timeout, out_dir=args.out)
            print(f"ok      {path.name}  {seconds:6.1f} s", flush=True)
        except Exception as exc:
            failed += 1
            print(f"FAILED  {path.name}  {time.monotonic() - t0:6.1f} s", flush=True)
            print(str(exc)[-3000:], file=sys.stderr, flush=True)
    print(f"executed copies in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
