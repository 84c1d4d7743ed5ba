"""A real browser on the demo page: headless Chromium (Debian's package) driven by Playwright.

Screenshots go to test-artifacts/serve/ (gitignored): after the fast ranking and after the final.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from llmrerank import Funnel
from llmrerank.testing import ScriptedScorer

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("LLMRERANK_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "serve"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

async_api = pytest.importorskip(
    "playwright.async_api", reason="the browser test needs the playwright package (test extra)"
)
if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"no Chromium at {CHROMIUM}: run scripts/setup.sh (apt-get install chromium)",
        allow_module_level=True,
    )

ServeFactory = Callable[..., Any]
QUERY = "read a compressed gzip file"


def _prefers_short(query: str, text: str) -> float:
    """A scripted LLM that disagrees with BM25, so the page has something to re-order."""
    return -float(len(text))


async def test_page_shows_fast_results_first_then_the_final_api_order(
    serve: ServeFactory, demo_corpus: Any
) -> None:
    # One LLM call at a time, 0.3 s each, 6 candidates: the final ranking lands ~2 s after fast.
    llm = ScriptedScorer(_prefers_short, latency=0.3, max_concurrency=1)
    funnel = Funnel(llm=llm, k=6, deadline=30.0, name="enterprise")
    server = serve(funnel, corpus=demo_corpus)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    async with async_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1000, "height": 1100})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(server.url + "/")
            await page.wait_for_function("document.querySelectorAll('#preset option').length > 0")
            await page.fill("#q", QUERY)
            await page.click("button[type=submit]")

            await page.wait_for_selector("#results[data-phase=fast] li", timeout=10_000)
            # the list and its phase read together, before the screenshot: the first partial
            # update may land 0.3 s later
            fast_phase, fast_ids = await page.evaluate(
                "() => [document.querySelector('#results').dataset.phase,"
                " [...document.querySelectorAll('#results li')].map(e => e.dataset.id)]"
            )
            await page.screenshot(path=str(ARTIFACTS / "1-fast.png"), full_page=True)
            assert len(fast_ids) == 10
            assert fast_phase == "fast"

            await page.wait_for_selector("#results[data-phase=final]", timeout=20_000)
            await page.wait_for_timeout(600)  # let the re-ordering animation finish
            await page.screenshot(path=str(ARTIFACTS / "2-final.png"), full_page=True)
            final_ids = await page.eval_on_selector_all(
                "#results li", "els => els.map(e => e.dataset.id)"
            )
            events = await page.evaluate("window.llmrerankDemo.events")
            moves = await page.eval_on_selector_all(
                "#results .move", "els => els.map(e => e.textContent)"
            )
            status = await page.inner_text("#status")
            summary = await page.eval_on_selector_all(
                "#summary li", "els => els.map(e => e.textContent)"
            )
            llm_badges = await page.eval_on_selector_all(
                "#results li[data-stage=llm]", "els => els.length"
            )
        finally:
            await browser.close()

    assert errors == []
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "fast" and kinds[-1] == "final"
    assert events[0]["t"] < events[-1]["t"] - 1000  # the fast list was on screen >1 s earlier
    assert events[0]["ids"] == fast_ids

    async with httpx.AsyncClient(timeout=30) as client:
        api = await client.post(f"{server.url}/v1/demo/search", json={"query": QUERY, "top_n": 10})
    assert api.status_code == 200
    assert final_ids == [r["id"] for r in api.json()["results"]]
    assert final_ids != fast_ids  # the LLM moved something, and the page shows it
    assert moves and all(m[0] in "▲▼" for m in moves)
    assert llm_badges == 6
    assert "LLM" in status and "6 of 6 scored" in status
    assert summary
