"""Headless Chromium for the browser tests: Debian's package, driven by Playwright.

Playwright never downloads a browser here; without Playwright or Debian's
``chromium`` the calling test skips and says how to get them. Screenshots go
to ``test-artifacts/`` at the top of the checkout (ignored by git).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

__all__ = ["ARTIFACTS", "headless_chromium"]

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
#: Headless, as root, on a machine whose only network is loopback.
_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@asynccontextmanager
async def headless_chromium() -> AsyncIterator[Any]:
    """A launched browser (a Playwright ``Browser``), closed when the block ends."""
    playwright_api = pytest.importorskip(
        "playwright.async_api", reason="Playwright is not installed: pip install -e '.[test]'"
    )
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no Chromium: install Debian's package with 'apt-get install chromium'")
    ARTIFACTS.mkdir(exist_ok=True)
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=_FLAGS
        )
        try:
            yield browser
        finally:
            await browser.close()
