"""The example web app in a real browser: headless Chromium, driven by Playwright.

Debian's ``chromium`` package provides the browser (``.ci/run`` installs it
when missing); Playwright never downloads one. Without either, the test
skips and says how to get it. The screenshot it takes is kept in
``test-artifacts/webapp-batch.png`` at the top of the checkout.
"""

from __future__ import annotations

import pytest

from nanobanana_async.testing import LatencyProfile, Simulator

from .browser import ARTIFACTS, headless_chromium
from .test_webapp import serve

pytestmark = pytest.mark.anyio

PROMPTS = [
    "a red fox in the snow",
    "a lighthouse at dusk",
    "a blue whale under ice",
    "a teapot on a hill",
    "a bicycle made of bread",
    "a quiet library at night",
]


async def test_a_browser_starts_a_batch_of_six_prompts_and_sees_six_images(
    sim: Simulator,
) -> None:
    sim.latency = LatencyProfile(default_seconds=(0.2, 0.8))
    async with headless_chromium() as browser, serve(sim) as server:
        page = await browser.new_page()
        await page.goto(str(server.make_url("/")))
        await page.fill("#prompts", "\n".join(PROMPTS))
        await page.click("button[type=submit]")
        await page.wait_for_selector("#status >> text=done: 6 images, 0 failed", timeout=30_000)
        loaded = await page.evaluate(
            "[...document.querySelectorAll('#grid img')]"
            ".filter(image => image.complete && image.naturalWidth > 0).length"
        )
        captions = await page.eval_on_selector_all(
            "#grid figcaption", "nodes => nodes.map(node => node.textContent)"
        )
        await page.screenshot(path=str(ARTIFACTS / "webapp-batch.png"), full_page=True)
    assert loaded == 6
    assert sorted(captions) == sorted(PROMPTS)
    assert sim.counters.create_requests == 6
    assert sim.counters.downloads_completed == 6
