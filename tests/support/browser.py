"""What the Playwright tests share: Debian's chromium (never a downloaded browser), its flags,
and where screenshots go.

A test module calls :func:`require_browser` at import time: it skips the whole module, with
the reason, when chromium or playwright is missing, and returns ``playwright.sync_api``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from support import ROOT

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DOCS = ROOT / "docs" / "screenshots"
TIMEOUT_MS = 15_000


def require_browser() -> ModuleType:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"Debian's chromium is not installed at {CHROMIUM} (apt-get install -y chromium)",
            allow_module_level=True,
        )
    return pytest.importorskip("playwright.sync_api", reason="the playwright package is absent")


@contextmanager
def chromium_page(sync_api: ModuleType) -> Iterator[Any]:
    """A fresh page in a headless chromium, closed with its browser at the end."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1180, "height": 760})
            page.set_default_timeout(TIMEOUT_MS)
            yield page
        finally:
            browser.close()
