"""The contact sheet of a real run, opened from disk in headless Chromium with JavaScript off.

Debian's ``chromium`` package provides the browser; Playwright never
downloads one. Without either, the test skips and says how to get it. The
page must show every image (each ``<img>`` loaded, a non-ASCII file name
included) and ask for nothing but files. The screenshot is kept in
``test-artifacts/contact-sheet.png`` at the top of the checkout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .browser import ARTIFACTS, headless_chromium
from .test_contact_sheet import nanobanana, top_level_images

pytestmark = pytest.mark.anyio

PROMPTS = [
    "a red fox in the snow",
    "a lighthouse at dusk",
    "日本の桜",
    "a refused picture [fail]",
    'a <b>bold</b> "quoted" teapot',
]
LOADED = "[...document.images].filter(i => i.complete && i.naturalWidth > 0).length"


async def test_the_contact_sheet_opened_from_disk_shows_every_image_without_javascript(
    tmp_path: Path,
) -> None:
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n", encoding="utf-8")
    result = nanobanana(
        tmp_path, "run", "prompts.txt", "--out", "out", "--simulate", "--simulate-latency", "fast"
    )
    assert result.returncode == 1, result.stdout + result.stderr  # the [fail] prompt
    out = tmp_path / "out"
    images = top_level_images(out)
    assert len(images) == 4

    requested: list[str] = []
    async with headless_chromium() as browser:
        context = await browser.new_context(
            java_script_enabled=False, viewport={"width": 1280, "height": 1000}
        )
        page = await context.new_page()
        page.on("request", lambda request: requested.append(request.url))
        await page.goto((out / "index.html").as_uri(), wait_until="load")
        await page.wait_for_function(f"{LOADED} === {len(images)}", timeout=15_000)
        loaded = await page.evaluate(LOADED)
        shown = await page.eval_on_selector_all(
            "img", "nodes => nodes.map(node => decodeURIComponent(node.src.split('/').pop()))"
        )
        prompts = await page.eval_on_selector_all(
            ".prompt", "nodes => nodes.map(node => node.textContent)"
        )
        reasons = await page.eval_on_selector_all(
            ".reason", "nodes => nodes.map(node => node.textContent)"
        )
        await page.screenshot(path=str(ARTIFACTS / "contact-sheet.png"), full_page=True)
    assert loaded == len(images)
    assert set(shown) == images
    assert sorted(prompts) == sorted(PROMPTS)
    assert any("Content policy violation" in reason for reason in reasons), reasons
    assert requested, "the page asked for nothing"
    assert all(url.startswith("file://") for url in requested), requested
